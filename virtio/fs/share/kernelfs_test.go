package share

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// shareDir shares dir as it is (newClient shares a populated copy).
func shareDir(t *testing.T, dir string, readOnly bool) *client {
	t.Helper()
	c := &client{t: t, parent: filepath.Dir(dir), dir: dir, log: &logSink{}}
	var err error
	if c.s, err = New(Options{Dir: dir, ReadOnly: readOnly, Logf: c.log.logf}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.s.Close() })
	c.init()
	return c
}

// The host kernel's files are never opened, truncated or re-permissioned
// through a share, read-only or not: here /proc shared whole, as a share
// of / run as root would reach it below. /proc/version is a regular file
// that a read would serve at once; /proc/kmsg, as root, would wait for
// the next kernel message with a server thread, and take it from the
// host's log.
func TestKernelFilesNotOpened(t *testing.T) {
	for _, readOnly := range []bool{true, false} {
		c := shareDir(t, "/proc", readOnly)
		v := c.mustLookup(root, "version")
		if v.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Fatalf("/proc/version: mode %o, want a regular file", v.Mode)
		}
		if _, errno := c.open(v.NodeId, unix.O_RDONLY); errno != syscall.EACCES {
			t.Errorf("read-only %v: OPEN /proc/version: %v, want EACCES", readOnly, errno)
		}
		if readOnly {
			continue
		}
		if _, errno := c.create(root, "version", unix.O_RDONLY, 0o644); errno != syscall.EACCES {
			t.Errorf("CREATE over /proc/version: %v, want EACCES", errno)
		}
		var sa fuse.SetAttrIn
		sa.Valid = fuse.FATTR_SIZE
		if errno, _ := c.call(fusetest.OpSetattr, v.NodeId, sa); errno != syscall.EACCES {
			t.Errorf("SETATTR size of /proc/version: %v, want EACCES", errno)
		}
		// The mode it has: should the check go, the test still leaves
		// the host's /proc as it was.
		sa.Valid, sa.Mode = fuse.FATTR_MODE, v.Mode&0o7777
		if errno, _ := c.call(fusetest.OpSetattr, v.NodeId, sa); errno != syscall.EPERM {
			t.Errorf("SETATTR mode of /proc/version: %v, want EPERM", errno)
		}
		// Still a file system to look around in.
		if errno, _ := c.call(fusetest.OpGetattr, v.NodeId, fuse.GetAttrIn{}); errno != 0 {
			t.Errorf("GETATTR /proc/version: %v", errno)
		}
	}
}

// A share's ordinary files still open (the cache says so per file
// system), and an existing device node in a read-write share keeps the
// host's permissions and owner.
func TestDeviceNodeKeepsHostPermissions(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node here: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := shareDir(t, dir, false)
	f := c.mustLookup(root, "f")
	fh, errno := c.open(f.NodeId, unix.O_RDONLY)
	c.mustOK("OPEN of a regular file", errno)
	c.release(f.NodeId, fh)
	dev := c.mustLookup(root, "null")
	for _, sa := range []fuse.SetAttrIn{
		{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: 0o666}},
		{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_UID | fuse.FATTR_GID, Owner: fuse.Owner{Uid: 1000, Gid: 1000}}},
	} {
		if errno, _ := c.call(fusetest.OpSetattr, dev.NodeId, sa); errno != syscall.EPERM {
			t.Errorf("SETATTR valid %#x of a device node: %v, want EPERM", sa.Valid, errno)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "null"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 || st.Uid != uint32(os.Geteuid()) {
		t.Errorf("device node now mode %o uid %d, want 600 and %d", st.Mode&0o7777, st.Uid, os.Geteuid())
	}
}

// kernelFSes asks each file system once, and a file system it cannot
// ask counts as the kernel's.
func TestKernelFSesCache(t *testing.T) {
	var calls int
	types := map[int]int64{10: unix.PROC_SUPER_MAGIC, 11: 0xef53 /* ext4 */}
	k := kernelFSes{statfs: func(fd int, st *unix.Statfs_t) error {
		calls++
		if typ, ok := types[fd]; ok {
			st.Type = typ
			return nil
		}
		return errors.New("no such file system")
	}}
	at := func(fd int, dev uint64) *node {
		return &node{fdFile: newFDFile(fd, rawsys.Calls{}), key: devIno{dev: dev}}
	}
	for _, tc := range []struct {
		n         *node
		want      bool
		wantCalls int
	}{
		{at(10, 1), true, 1},
		{at(10, 1), true, 1}, // cached
		{at(11, 2), false, 2},
		{at(11, 2), false, 2},
		{at(12, 3), true, 3}, // statfs failed: refused
	} {
		if got := k.is(tc.n); got != tc.want || calls != tc.wantCalls {
			t.Errorf("dev %d: is %v after %d statfs calls, want %v after %d", tc.n.key.dev, got, calls, tc.want, tc.wantCalls)
		}
	}
}
