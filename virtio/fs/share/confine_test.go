package share

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// TestNames checks that a name is one entry of its directory: nothing
// that walks elsewhere is accepted, whatever the request.
func TestNames(t *testing.T) {
	c := newClient(t, false)
	before := snapshot(t, c.parent)
	for _, name := range []string{"", ".", "..", "../secret", "d/g", "/etc", "d/", "/", strings.Repeat("a", 256)} {
		for _, tc := range []struct {
			op      uint32
			in      any
			payload [][]byte
		}{
			{fusetest.OpLookup, nil, [][]byte{fusetest.Name(name)}},
			{fusetest.OpCreate, fuse.CreateIn{Flags: unix.O_WRONLY, Mode: 0o644}, [][]byte{fusetest.Name(name)}},
			{fusetest.OpMkdir, fuse.MkdirIn{Mode: 0o755}, [][]byte{fusetest.Name(name)}},
			{fusetest.OpMknod, fuse.MknodIn{Mode: unix.S_IFREG | 0o644}, [][]byte{fusetest.Name(name)}},
			{fusetest.OpSymlink, nil, [][]byte{fusetest.Name(name), fusetest.Name("f")}},
			{fusetest.OpUnlink, nil, [][]byte{fusetest.Name(name)}},
			{fusetest.OpRmdir, nil, [][]byte{fusetest.Name(name)}},
			{fusetest.OpLink, fuse.LinkIn{Oldnodeid: root}, [][]byte{fusetest.Name(name)}},
			{fusetest.OpRename, fusetest.RenameIn{Newdir: root}, [][]byte{fusetest.Name("f"), fusetest.Name(name)}},
			{fusetest.OpRename, fusetest.RenameIn{Newdir: root}, [][]byte{fusetest.Name(name), fusetest.Name("moved")}},
		} {
			errno, _ := c.call(tc.op, root, tc.in, tc.payload...)
			if errno != syscall.EINVAL && errno != syscall.ENAMETOOLONG {
				t.Errorf("opcode %d with name %q: %v, want EINVAL or ENAMETOOLONG", tc.op, name, errno)
			}
		}
	}
	if after := snapshot(t, c.parent); after != before {
		t.Errorf("the tree changed:\n%s\nwas\n%s", after, before)
	}
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestSymlinks checks that links inside the share are never followed on
// the host, wherever they point.
func TestSymlinks(t *testing.T) {
	c := newClient(t, false)
	for _, tc := range []struct{ link, target string }{{"abs", "/"}, {"up", ".."}, {"leak", "../secret"}} {
		l := c.mustLookup(root, tc.link)
		if l.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Fatalf("%s: mode %o, want a symlink", tc.link, l.Mode)
		}
		if errno, body := c.call(fusetest.OpReadlink, l.NodeId, nil); errno != 0 || string(body) != tc.target {
			t.Errorf("READLINK %s: %q, %v", tc.link, body, errno)
		}
		// Through the link as a directory: none of it reaches the
		// target.
		for _, name := range []string{"etc", "secret", "share", "proc"} {
			if _, errno := c.lookup(l.NodeId, name); errno != syscall.ENOTDIR {
				t.Errorf("LOOKUP %s/%s: %v, want ENOTDIR", tc.link, name, errno)
			}
			if _, errno := c.create(l.NodeId, name, unix.O_WRONLY, 0o644); errno != syscall.ENOTDIR {
				t.Errorf("CREATE %s/%s: %v, want ENOTDIR", tc.link, name, errno)
			}
		}
		if errno, _ := c.call(fusetest.OpOpendir, l.NodeId, fuse.OpenIn{}); errno != syscall.ENOTDIR {
			t.Errorf("OPENDIR %s: %v, want ENOTDIR", tc.link, errno)
		}
		for _, flags := range []uint32{unix.O_RDONLY, unix.O_WRONLY | unix.O_TRUNC} {
			if _, errno := c.open(l.NodeId, flags); errno != syscall.EACCES {
				t.Errorf("OPEN %s: %v, want EACCES", tc.link, errno)
			}
		}
		// Attributes are the link's own, and changing them changes the
		// link, not the target.
		var sa fuse.SetAttrIn
		sa.Valid = fuse.FATTR_SIZE
		if errno, _ := c.call(fusetest.OpSetattr, l.NodeId, sa); errno != syscall.EINVAL {
			t.Errorf("SETATTR size of %s: %v, want EINVAL", tc.link, errno)
		}
		sa.Valid = fuse.FATTR_MODE
		sa.Mode = 0o777
		if errno, _ := c.call(fusetest.OpSetattr, l.NodeId, sa); errno != syscall.EOPNOTSUPP {
			t.Errorf("SETATTR mode of %s: %v, want EOPNOTSUPP", tc.link, errno)
		}
		sa.Valid = fuse.FATTR_MTIME
		sa.Mtime = 12345
		if errno, _ := c.call(fusetest.OpSetattr, l.NodeId, sa); errno != 0 {
			t.Errorf("SETATTR mtime of %s: %v", tc.link, errno)
		}
		// A CREATE of the link's name does not write through it.
		if _, errno := c.create(root, tc.link, unix.O_WRONLY|unix.O_TRUNC, 0o644); errno != syscall.EEXIST {
			t.Errorf("CREATE over %s: %v, want EEXIST", tc.link, errno)
		}
		// A hard link of the link is a link to the link.
		errno, body := c.call(fusetest.OpLink, root, fuse.LinkIn{Oldnodeid: l.NodeId}, fusetest.Name(tc.link+"2"))
		if e := c.entry("LINK", errno, body); e.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("LINK of %s: mode %o, want a symlink", tc.link, e.Mode)
		}
	}
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestSwap replaces, on the host, a directory and a file the guest has
// looked up with symlinks pointing outside: the guest's nodes stay the
// inodes it looked up, and a new lookup finds the symlink, never its
// target.
func TestSwap(t *testing.T) {
	c := newClient(t, false)
	d := c.mustLookup(root, "d")
	f := c.mustLookup(root, "f")
	for _, p := range [][2]string{{"d", "d.old"}, {"f", "f.old"}} {
		if err := os.Rename(filepath.Join(c.dir, p[0]), filepath.Join(c.dir, p[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(c.parent, filepath.Join(c.dir, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(c.parent, "secret"), filepath.Join(c.dir, "f")); err != nil {
		t.Fatal(err)
	}
	// The old nodes are still the old inodes.
	if g, errno := c.lookup(d.NodeId, "g"); errno != 0 || g.Size != uint64(len("inner\n")) {
		t.Errorf("LOOKUP g in the moved directory: %v", errno)
	}
	if _, errno := c.lookup(d.NodeId, "secret"); errno != syscall.ENOENT {
		t.Errorf("LOOKUP secret through the old directory node: %v, want ENOENT", errno)
	}
	fh, errno := c.open(f.NodeId, unix.O_RDWR)
	c.mustOK("OPEN of the moved file", errno)
	if b, _ := c.read(f.NodeId, fh, 0, 100); string(b) != "hello, world\n" {
		t.Errorf("READ of the moved file: %q", b)
	}
	if _, errno := c.write(f.NodeId, fh, 0, []byte("HELLO")); errno != 0 {
		t.Errorf("WRITE of the moved file: %v", errno)
	}
	var sa fuse.SetAttrIn
	sa.Valid = fuse.FATTR_SIZE | fuse.FATTR_MODE
	sa.Size, sa.Mode = 1, 0o666
	if errno, _ := c.call(fusetest.OpSetattr, f.NodeId, sa); errno != 0 {
		t.Errorf("SETATTR of the moved file: %v", errno)
	}
	// New lookups find the symlinks.
	for _, name := range []string{"d", "f"} {
		e := c.mustLookup(root, name)
		if e.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("LOOKUP %s after the swap: mode %o, want a symlink", name, e.Mode)
		}
		if _, errno := c.lookup(e.NodeId, "secret"); errno != syscall.ENOTDIR {
			t.Errorf("LOOKUP %s/secret: %v, want ENOTDIR", name, errno)
		}
		if _, errno := c.open(e.NodeId, unix.O_RDWR); errno != syscall.EACCES {
			t.Errorf("OPEN %s: %v, want EACCES", name, errno)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "f.old")); string(b) != "H" {
		t.Errorf("f.old = %q, want H", b)
	}
	if fi, _ := os.Stat(filepath.Join(c.parent, "secret")); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret mode %v", fi.Mode())
	}
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestSwapRace swaps a directory for a symlink to the share's parent
// over and over while the guest creates and looks up files in it; no
// file may appear next to the share.
func TestSwapRace(t *testing.T) {
	c := newClient(t, false)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d, tmp := filepath.Join(c.dir, "d"), filepath.Join(c.dir, "tmp")
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Symlink(c.parent, tmp)
			os.Rename(d, filepath.Join(c.dir, "d.real"))
			os.Rename(tmp, d)
			os.Remove(d)
			os.Rename(filepath.Join(c.dir, "d.real"), d)
		}
	}()
	for i := range 300 {
		e, errno := c.lookup(root, "d")
		if errno != 0 {
			continue
		}
		if co, errno := c.create(e.NodeId, "secret", unix.O_WRONLY|unix.O_TRUNC, 0o644); errno == 0 {
			c.write(co.NodeId, co.Fh, 0, []byte("overwritten"))
			c.release(co.NodeId, co.Fh)
		}
		c.call(fusetest.OpMkdir, e.NodeId, fuse.MkdirIn{Mode: 0o755}, fusetest.Name("made"+string(rune('a'+i%26))))
		c.call(fusetest.OpUnlink, e.NodeId, nil, fusetest.Name("secret"))
	}
	close(stop)
	wg.Wait()
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestNoSpecialFiles checks that the guest cannot create devices, FIFOs
// or sockets, nor set-user-ID or set-group-ID files.
func TestNoSpecialFiles(t *testing.T) {
	c := newClient(t, false)
	for _, mode := range []uint32{unix.S_IFCHR | 0o666, unix.S_IFBLK | 0o666, unix.S_IFIFO | 0o666, unix.S_IFSOCK | 0o666, unix.S_IFDIR | 0o755, unix.S_IFLNK | 0o777} {
		errno, _ := c.call(fusetest.OpMknod, root, fuse.MknodIn{Mode: mode, Rdev: uint32(unix.Mkdev(1, 3))}, fusetest.Name("dev"))
		if errno != syscall.EPERM {
			t.Errorf("MKNOD mode %o: %v, want EPERM", mode, errno)
		}
	}
	if _, err := os.Lstat(filepath.Join(c.dir, "dev")); !os.IsNotExist(err) {
		t.Errorf("MKNOD made something: %v", err)
	}
	if errno, _ := c.call(fusetest.OpRename2, root, fuse.RenameIn{Newdir: root, Flags: unix.RENAME_WHITEOUT}, fusetest.Name("f"), fusetest.Name("g")); errno != syscall.EINVAL {
		t.Errorf("RENAME2 WHITEOUT: %v, want EINVAL", errno)
	}

	perm := func(name string) uint32 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(c.dir, name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 0o7777
	}
	co, errno := c.create(root, "suid", unix.O_WRONLY, 0o6755)
	c.mustOK("CREATE", errno)
	if p := perm("suid"); p != 0o755 || co.Mode&0o7777 != 0o755 {
		t.Errorf("CREATE 6755: host %o, guest %o, want 755", p, co.Mode&0o7777)
	}
	errno, _ = c.call(fusetest.OpMkdir, root, fuse.MkdirIn{Mode: 0o2775}, fusetest.Name("sgid"))
	c.mustOK("MKDIR", errno)
	if p := perm("sgid"); p != 0o2775 {
		t.Errorf("MKDIR 2775: host %o, want 2775 (set-group-ID gives a directory no privilege)", p)
	}
	errno, _ = c.call(fusetest.OpMknod, root, fuse.MknodIn{Mode: unix.S_IFREG | 0o4711}, fusetest.Name("suid2"))
	c.mustOK("MKNOD", errno)
	if p := perm("suid2"); p != 0o711 {
		t.Errorf("MKNOD 4711: host %o, want 711", p)
	}
	var sa fuse.SetAttrIn
	sa.Valid = fuse.FATTR_MODE
	sa.Mode = 0o7777
	errno, _ = c.call(fusetest.OpSetattr, co.NodeId, sa)
	c.mustOK("SETATTR", errno)
	if p := perm("suid"); p != 0o1777 {
		t.Errorf("SETATTR 7777: host %o, want 1777", p)
	}
	// A file that exists already is opened as OPEN would: a FIFO put in
	// the share on the host is never opened (it would block).
	if err := unix.Mkfifo(filepath.Join(c.dir, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, errno := c.create(root, "fifo", unix.O_WRONLY, 0o644); errno != syscall.EEXIST {
		t.Errorf("CREATE over a FIFO: %v, want EEXIST", errno)
	}
	fifo := c.mustLookup(root, "fifo")
	if _, errno := c.open(fifo.NodeId, unix.O_RDONLY); errno != syscall.EACCES {
		t.Errorf("OPEN of a FIFO: %v, want EACCES", errno)
	}
	d := c.mustLookup(root, "d")
	if _, errno := c.create(root, "d", unix.O_RDONLY, 0o644); errno != syscall.EISDIR {
		t.Errorf("CREATE over a directory: %v, want EISDIR", errno)
	}
	if _, errno := c.open(d.NodeId, unix.O_RDONLY); errno != syscall.EISDIR {
		t.Errorf("OPEN of a directory: %v, want EISDIR", errno)
	}
	if _, errno := c.create(root, "f", unix.O_RDONLY|unix.O_EXCL, 0o644); errno != syscall.EEXIST {
		t.Errorf("CREATE O_EXCL of an existing file: %v, want EEXIST", errno)
	}
	co, errno = c.create(root, "f", unix.O_RDWR|unix.O_TRUNC, 0o644)
	c.mustOK("CREATE of an existing file", errno)
	if co.NodeId != c.mustLookup(root, "f").NodeId || co.Size != 0 {
		t.Errorf("CREATE of an existing file: node %d size %d", co.NodeId, co.Size)
	}
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestReadOnly checks that a read-only share refuses every change with
// EROFS, still serves reads, and is byte for byte what it was.
func TestReadOnly(t *testing.T) {
	c := newClient(t, true)
	before := snapshot(t, c.parent)
	f := c.mustLookup(root, "f")
	d := c.mustLookup(root, "d")
	fh, errno := c.open(f.NodeId, unix.O_RDONLY)
	c.mustOK("OPEN read-only", errno)
	if b, _ := c.read(f.NodeId, fh, 0, 100); string(b) != "hello, world\n" {
		t.Errorf("READ: %q", b)
	}
	if got := names(c.readdir(root, true)); len(got) != 7 {
		t.Errorf("READDIRPLUS: %q", got)
	}
	var sa fuse.SetAttrIn
	sa.Valid = fuse.FATTR_MODE | fuse.FATTR_SIZE
	for _, tc := range []struct {
		name    string
		op      uint32
		node    uint64
		in      any
		payload [][]byte
	}{
		{"SETATTR", fusetest.OpSetattr, f.NodeId, sa, nil},
		{"SYMLINK", fusetest.OpSymlink, root, nil, [][]byte{fusetest.Name("l"), fusetest.Name("f")}},
		{"MKNOD", fusetest.OpMknod, root, fuse.MknodIn{Mode: unix.S_IFREG | 0o644}, [][]byte{fusetest.Name("n")}},
		{"MKDIR", fusetest.OpMkdir, root, fuse.MkdirIn{Mode: 0o755}, [][]byte{fusetest.Name("n")}},
		{"UNLINK", fusetest.OpUnlink, root, nil, [][]byte{fusetest.Name("f")}},
		{"RMDIR", fusetest.OpRmdir, d.NodeId, nil, [][]byte{fusetest.Name("d")}},
		{"RENAME", fusetest.OpRename, root, fusetest.RenameIn{Newdir: root}, [][]byte{fusetest.Name("f"), fusetest.Name("g")}},
		{"RENAME2", fusetest.OpRename2, root, fuse.RenameIn{Newdir: root}, [][]byte{fusetest.Name("f"), fusetest.Name("g")}},
		{"LINK", fusetest.OpLink, root, fuse.LinkIn{Oldnodeid: f.NodeId}, [][]byte{fusetest.Name("h")}},
		{"CREATE", fusetest.OpCreate, root, fuse.CreateIn{Flags: unix.O_RDONLY, Mode: 0o644}, [][]byte{fusetest.Name("n")}},
		{"CREATE existing", fusetest.OpCreate, root, fuse.CreateIn{Flags: unix.O_RDONLY, Mode: 0o644}, [][]byte{fusetest.Name("f")}},
		{"OPEN write", fusetest.OpOpen, f.NodeId, fuse.OpenIn{Flags: unix.O_WRONLY}, nil},
		{"OPEN read-write", fusetest.OpOpen, f.NodeId, fuse.OpenIn{Flags: unix.O_RDWR}, nil},
		{"OPEN truncate", fusetest.OpOpen, f.NodeId, fuse.OpenIn{Flags: unix.O_RDONLY | unix.O_TRUNC}, nil},
		{"WRITE", fusetest.OpWrite, f.NodeId, fuse.WriteIn{Fh: fh, Size: 3}, [][]byte{[]byte("abc")}},
		{"FALLOCATE", fusetest.OpFallocate, f.NodeId, fuse.FallocateIn{Fh: fh, Length: 4096}, nil},
		{"ACCESS W_OK", fusetest.OpAccess, f.NodeId, fuse.AccessIn{Mask: unix.W_OK}, nil},
	} {
		if errno, _ := c.call(tc.op, tc.node, tc.in, tc.payload...); errno != syscall.EROFS {
			t.Errorf("%s: %v, want EROFS", tc.name, errno)
		}
	}
	c.release(f.NodeId, fh)
	if errno, _ := c.call(fusetest.OpAccess, f.NodeId, fuse.AccessIn{Mask: unix.R_OK}); errno != 0 {
		t.Errorf("ACCESS R_OK: %v", errno)
	}
	if after := snapshot(t, c.parent); after != before {
		t.Errorf("read-only share changed:\n%s\nwas\n%s", after, before)
	}
}

// TestConcurrent runs lookups, creates, writes, renames and forgets from
// many goroutines at once, as a guest with parallel directory operations
// does; run it under the race detector.
func TestConcurrent(t *testing.T) {
	c := newClient(t, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := &client{t: t, s: c.s, log: c.log, unique: uint64(g) << 32}
			name := "file" + string(rune('a'+g))
			for i := range 50 {
				co, errno := cc.create(root, name, unix.O_RDWR, 0o644)
				if errno != 0 {
					t.Errorf("CREATE: %v", errno)
					return
				}
				cc.write(co.NodeId, co.Fh, uint64(i), []byte{byte(i)})
				cc.release(co.NodeId, co.Fh)
				cc.lookup(root, "f")
				cc.lookup(root, "d")
				cc.call(fusetest.OpRename, root, fusetest.RenameIn{Newdir: root}, fusetest.Name(name), fusetest.Name(name+"x"))
				cc.s.Handle(virtio.Buffers{fusetest.Encode(fusetest.OpForget, cc.next(), co.NodeId, fuse.ForgetIn{Nlookup: 1})}, nil)
				cc.call(fusetest.OpUnlink, root, nil, fusetest.Name(name+"x"))
			}
		}()
	}
	wg.Wait()
	checkConfined(t, c.s, c.parent, c.dir)
}

// A root vmm has CAP_FSETID, so the host kernel keeps a set-user-ID bit
// through vmm's writes: the server clears what the kernel would clear
// for anyone else (set-user-ID, set-group-ID with group execute) when
// the guest opens such a file for writing or truncates it. A directory
// keeps set-group-ID, inherited or asked for.
func TestSetIDClearedOnWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as an ordinary user the host kernel clears the bits itself")
	}
	c := newClient(t, false)
	perm := func(name string) uint32 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(c.dir, name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 0o7777
	}
	for _, tc := range []struct {
		name       string
		mode, want uint32
		do         func(node uint64) syscall.Errno
	}{
		{"open for writing", 0o4755, 0o755, func(node uint64) syscall.Errno { _, e := c.open(node, unix.O_WRONLY); return e }},
		{"open for reading", 0o4755, 0o4755, func(node uint64) syscall.Errno { _, e := c.open(node, unix.O_RDONLY); return e }},
		{"O_TRUNC", 0o6755, 0o755, func(node uint64) syscall.Errno { _, e := c.open(node, unix.O_RDONLY|unix.O_TRUNC); return e }},
		{"set-group-ID without group execute", 0o2744, 0o2744, func(node uint64) syscall.Errno { _, e := c.open(node, unix.O_RDWR); return e }},
		{"truncate", 0o4711, 0o711, func(node uint64) syscall.Errno {
			var sa fuse.SetAttrIn
			sa.Valid, sa.Size = fuse.FATTR_SIZE, 1
			e, _ := c.call(fusetest.OpSetattr, node, sa)
			return e
		}},
		{"CREATE of an existing file", 0o4755, 0o755, func(node uint64) syscall.Errno {
			_, e := c.create(root, "setid", unix.O_WRONLY, 0o644)
			return e
		}},
	} {
		path := filepath.Join(c.dir, "setid")
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, os.FileMode(tc.mode&0o777)|modeBits(tc.mode)); err != nil {
			t.Fatal(err)
		}
		if got := perm("setid"); got != tc.mode {
			t.Fatalf("%s: made mode %o, want %o", tc.name, got, tc.mode)
		}
		n := c.mustLookup(root, "setid")
		c.mustOK(tc.name, tc.do(n.NodeId))
		if got := perm("setid"); got != tc.want {
			t.Errorf("%s of a %o file: host mode %o, want %o", tc.name, tc.mode, got, tc.want)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}

	// A directory made in a set-group-ID one inherits the bit, and a
	// chmod that keeps it keeps it.
	if err := os.Chmod(filepath.Join(c.dir, "d"), 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	d := c.mustLookup(root, "d")
	errno, body := c.call(fusetest.OpMkdir, d.NodeId, fuse.MkdirIn{Mode: 0o755}, fusetest.Name("sub"))
	sub := c.entry("MKDIR", errno, body)
	if p := perm("d/sub"); p != 0o2755 {
		t.Errorf("MKDIR in a set-group-ID directory: host %o, want 2755", p)
	}
	var sa fuse.SetAttrIn
	sa.Valid, sa.Mode = fuse.FATTR_MODE, 0o2775
	errno, _ = c.call(fusetest.OpSetattr, sub.NodeId, sa)
	c.mustOK("SETATTR 2775 of a directory", errno)
	if p := perm("d/sub"); p != 0o2775 {
		t.Errorf("SETATTR 2775 of a directory: host %o, want 2775", p)
	}
}

// modeBits turns the set-ID bits of a numeric mode into os.FileMode's.
func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	return fm
}
