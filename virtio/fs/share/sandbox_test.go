//go:build linux && amd64

package share

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/sandbox"
	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// sandboxChildEnv makes the test binary the sandboxed child of
// TestSandboxed.
const sandboxChildEnv = "VMM_SHARE_SANDBOX_CHILD"

// Every request the server implements, served under vmm's seccomp
// filter with virtio-fs shares allowed (sandbox.Options.Files): a system
// call the server makes that the allow-list lacks ends the child with
// the sandbox's one-line message, which this test shows. It runs the
// session in a child process, as the filter cannot be removed again.
func TestSandboxed(t *testing.T) {
	if os.Getenv(sandboxChildEnv) != "" {
		sandboxedSession(t)
		return
	}
	if raceEnabled {
		t.Skip("the race detector's runtime makes system calls vmm's filter does not allow")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxed$", "-test.v")
	cmd.Env = append(os.Environ(), sandboxChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sandboxed session: ok") {
		t.Fatalf("sandboxed child: %v\n%s", err, out)
	}
}

// sandboxedSession runs in the child: the share is opened and the
// session started, as in vmm, before the filter goes on.
func sandboxedSession(t *testing.T) {
	c := newClient(t, false)
	owner := fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())} // getuid is not allowed afterwards
	if err := sandbox.Install(sandbox.Options{Files: true}); err != nil {
		t.Fatal(err)
	}
	mustOK := func(what string, errno syscall.Errno) {
		t.Helper()
		if errno != 0 {
			t.Fatalf("%s: %v", what, errno)
		}
	}
	call := func(what string, op uint32, node uint64, in any, payloads ...[]byte) []byte {
		t.Helper()
		errno, body := c.call(op, node, in, payloads...)
		mustOK(what, errno)
		return body
	}

	// Names: lookups (found and missing), directories, links.
	f := c.mustLookup(root, "f")
	if _, errno := c.lookup(root, "missing"); errno != syscall.ENOENT {
		t.Fatalf("LOOKUP missing: %v", errno)
	}
	d := c.mustLookup(root, "d")
	c.mustLookup(d.NodeId, "g")
	up := c.mustLookup(root, "up")
	call("READLINK", fusetest.OpReadlink, up.NodeId, nil)
	var e fuse.EntryOut
	fusetest.Decode(call("MKDIR", fusetest.OpMkdir, root, fuse.MkdirIn{Mode: 0o755}, fusetest.Name("newdir")), &e)
	call("MKNOD", fusetest.OpMknod, root, fuse.MknodIn{Mode: unix.S_IFREG | 0o644}, fusetest.Name("node"))
	call("SYMLINK", fusetest.OpSymlink, root, nil, fusetest.Name("sym"), fusetest.Name("f"))
	call("LINK", fusetest.OpLink, root, fuse.LinkIn{Oldnodeid: f.NodeId}, fusetest.Name("hard"))
	call("RENAME", fusetest.OpRename, root, fusetest.RenameIn{Newdir: e.NodeId}, fusetest.Name("node"), fusetest.Name("moved"))
	call("RENAME2 exchange", fusetest.OpRename2, root, fuse.RenameIn{Newdir: root, Flags: unix.RENAME_EXCHANGE}, fusetest.Name("sym"), fusetest.Name("hard"))
	call("UNLINK", fusetest.OpUnlink, e.NodeId, nil, fusetest.Name("moved"))
	call("RMDIR", fusetest.OpRmdir, root, nil, fusetest.Name("newdir"))

	// A file's life: create (new and existing), write, read, attributes,
	// sync, allocate, seek, release.
	co, errno := c.create(root, "new", unix.O_RDWR|unix.O_CREAT, 0o640)
	mustOK("CREATE", errno)
	if _, errno := c.create(root, "new", unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC, 0o640); errno != 0 {
		t.Fatalf("CREATE existing: %v", errno)
	}
	if n, errno := c.write(co.NodeId, co.Fh, 0, []byte("sandboxed\n")); errno != 0 || n != 10 {
		t.Fatalf("WRITE: %d %v", n, errno)
	}
	if b, errno := c.read(co.NodeId, co.Fh, 0, 100); errno != 0 || string(b) != "sandboxed\n" {
		t.Fatalf("READ: %q %v", b, errno)
	}
	c.getattr(co.NodeId)
	call("GETATTR fh", fusetest.OpGetattr, co.NodeId, fuse.GetAttrIn{Flags_: getattrFH, Fh_: co.Fh})
	call("SETATTR mode, owner, size, times", fusetest.OpSetattr, co.NodeId, fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		Valid: fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE | fuse.FATTR_ATIME | fuse.FATTR_MTIME_NOW,
		Mode:  0o600, Owner: owner, Size: 3, Atime: 1}})
	call("SETATTR size through fh", fusetest.OpSetattr, co.NodeId, fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		Valid: fuse.FATTR_SIZE | fuse.FATTR_FH, Fh: co.Fh, Size: 8192}})
	call("SETATTR symlink times", fusetest.OpSetattr, up.NodeId, fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		Valid: fuse.FATTR_MTIME, Mtime: 5}})
	call("FSYNC", fusetest.OpFsync, co.NodeId, fuse.FsyncIn{Fh: co.Fh})
	call("FDATASYNC", fusetest.OpFsync, co.NodeId, fuse.FsyncIn{Fh: co.Fh, FsyncFlags: fsyncData})
	call("FALLOCATE", fusetest.OpFallocate, co.NodeId, fuse.FallocateIn{Fh: co.Fh, Length: 1 << 16})
	call("LSEEK", fusetest.OpLseek, co.NodeId, fuse.LseekIn{Fh: co.Fh, Whence: unix.SEEK_HOLE})
	call("FLUSH", fusetest.OpFlush, co.NodeId, fuse.FlushIn{Fh: co.Fh})
	c.release(co.NodeId, co.Fh)
	fh, errno := c.open(f.NodeId, unix.O_RDONLY)
	mustOK("OPEN", errno)
	c.release(f.NodeId, fh)
	call("ACCESS", fusetest.OpAccess, f.NodeId, fuse.AccessIn{Mask: unix.R_OK})
	call("STATFS", fusetest.OpStatfs, root, nil)

	// Directories: both kinds of READDIR, FSYNCDIR.
	dh := call("OPENDIR", fusetest.OpOpendir, root, fuse.OpenIn{Flags: unix.O_RDONLY})
	var oo fuse.OpenOut
	fusetest.Decode(dh, &oo)
	call("FSYNCDIR", fusetest.OpFsyncdir, root, fuse.FsyncIn{Fh: oo.Fh})
	call("RELEASEDIR", fusetest.OpReleasedir, root, fuse.ReleaseIn{Fh: oo.Fh})
	if n := len(c.readdir(root, false)); n < 5 {
		t.Fatalf("READDIR: %d entries", n)
	}
	if n := len(c.readdir(root, true)); n < 5 {
		t.Fatalf("READDIRPLUS: %d entries", n)
	}

	// Forgetting and ending the session close descriptors.
	c.s.Handle(virtio.Buffers{fusetest.Encode(fusetest.OpForget, c.next(), d.NodeId, fuse.ForgetIn{Nlookup: 1})}, nil)
	call("DESTROY", fusetest.OpDestroy, 0, nil)
	c.init()
	c.mustLookup(root, "f")
	c.s.Reset()
	// Printed last: the parent looks for it. The test's cleanup (the
	// temporary directory's removal) runs under the filter too.
	os.Stdout.WriteString("sandboxed session: ok\n")
}
