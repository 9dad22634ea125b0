package share

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

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
		// No entry made or removed in one of its directories: procfs
		// itself would say EPERM to this MKDIR, the check EACCES.
		if errno, _ := c.call(fusetest.OpMkdir, root, fuse.MkdirIn{Mode: 0o755}, fusetest.Name("vmm-test")); errno != syscall.EACCES {
			t.Errorf("MKDIR in /proc: %v, want EACCES", errno)
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

// The kernel's own file systems are told from those that store data.
func TestIsKernelFS(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int64
		want bool
	}{
		{"procfs", unix.PROC_SUPER_MAGIC, true},
		{"sysfs", unix.SYSFS_MAGIC, true},
		{"cgroup2", unix.CGROUP2_SUPER_MAGIC, true},
		{"configfs", configfsMagic, true},
		{"tracefs", unix.TRACEFS_MAGIC, true},
		{"ext4", unix.EXT4_SUPER_MAGIC, false},
		{"tmpfs", unix.TMPFS_MAGIC, false},
		{"xfs", unix.XFS_SUPER_MAGIC, false},
		{"overlay", unix.OVERLAYFS_SUPER_MAGIC, false},
	} {
		if got := isKernelFS(tc.typ); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
