package share

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

const root = fuse.FUSE_ROOT_ID

// TestArgSizes checks the table of fixed argument sizes against go-fuse's
// types: each must be the size linux/fuse.h gives (so the fusetest
// encoding is the kernel's), and no smaller than what go-fuse decodes.
func TestArgSizes(t *testing.T) {
	for _, tc := range []struct {
		op   uint32
		in   any
		want int // fuse_in_header + the struct of linux/fuse.h
	}{
		{fusetest.OpLookup, fuse.InHeader{}, 40},
		{fusetest.OpForget, fuse.ForgetIn{}, 48},
		{fusetest.OpGetattr, fuse.GetAttrIn{}, 56},
		{fusetest.OpSetattr, fuse.SetAttrIn{}, 128},
		{fusetest.OpMknod, fuse.MknodIn{}, 56},
		{fusetest.OpMkdir, fuse.MkdirIn{}, 48},
		{fusetest.OpLink, fuse.LinkIn{}, 48},
		{fusetest.OpOpen, fuse.OpenIn{}, 48},
		{fusetest.OpRead, fuse.ReadIn{}, 80},
		{fusetest.OpWrite, fuse.WriteIn{}, 80},
		{fusetest.OpRelease, fuse.ReleaseIn{}, 64},
		{fusetest.OpFsync, fuse.FsyncIn{}, 56},
		{fusetest.OpFlush, fuse.FlushIn{}, 64},
		{fusetest.OpOpendir, fuse.OpenIn{}, 48},
		{fusetest.OpReaddir, fuse.ReadIn{}, 80},
		{fusetest.OpReleasedir, fuse.ReleaseIn{}, 64},
		{fusetest.OpFsyncdir, fuse.FsyncIn{}, 56},
		{fusetest.OpAccess, fuse.AccessIn{}, 48},
		{fusetest.OpCreate, fuse.CreateIn{}, 56},
		{fusetest.OpFallocate, fuse.FallocateIn{}, 72},
		{fusetest.OpReaddirplus, fuse.ReadIn{}, 80},
		{fusetest.OpRename2, fuse.RenameIn{}, 56},
		{fusetest.OpLseek, fuse.LseekIn{}, 64},
	} {
		op, ok := lookupOp(tc.op)
		if !ok {
			t.Errorf("opcode %d: not implemented", tc.op)
			continue
		}
		if got := binary.Size(tc.in); got != tc.want {
			t.Errorf("%s: go-fuse's %T is %d bytes, linux/fuse.h says %d", op.name, tc.in, got, tc.want)
		}
		if op.minLen != tc.want {
			t.Errorf("%s: minimum length %d, want %d", op.name, op.minLen, tc.want)
		}
	}
	// RENAME's fuse_rename_in is the first 8 bytes of fuse_rename2_in.
	if op, _ := lookupOp(fusetest.OpRename); op.minLen != 48 {
		t.Errorf("RENAME: minimum length %d, want 48", op.minLen)
	}
	for _, tc := range []struct {
		out  any
		want int
	}{
		{fuse.OutHeader{}, 16}, {fuse.EntryOut{}, 128}, {fuse.AttrOut{}, 104}, {fuse.OpenOut{}, 16},
		{fuse.WriteOut{}, 8}, {fuse.StatfsOut{}, 80}, {fuse.LseekOut{}, 8}, {fuse.InitOut{}, 64},
	} {
		if got := binary.Size(tc.out); got != tc.want {
			t.Errorf("go-fuse's %T is %d bytes, linux/fuse.h says %d", tc.out, got, tc.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		dir, want string
	}{
		{"", "no directory given"},
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{file, "not a directory"},
	} {
		_, err := New(Options{Dir: tc.dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("New(%q) = %v, want one line with %q", tc.dir, err, tc.want)
		}
	}
}

func TestInit(t *testing.T) {
	c := newClient(t, false)
	h, body := c.raw(fusetest.Init(99), MaxReply)
	if h.Status != 0 || h.Unique != 99 {
		t.Fatalf("INIT: status %d unique %d", h.Status, h.Unique)
	}
	out, err := fusetest.DecodeInit(body)
	if err != nil {
		t.Fatal(err)
	}
	if out.Major != 7 || out.Minor < 28 || out.MaxWrite == 0 || out.MaxWrite > MaxWrite ||
		int(out.MaxPages)*4096 < int(out.MaxWrite) || out.MaxBackground != maxBackground {
		t.Errorf("INIT reply %+v", out)
	}
	for _, cap := range []uint64{fuse.CAP_PASSTHROUGH, fuse.CAP_WRITEBACK_CACHE, fuse.CAP_POSIX_LOCKS, fuse.CAP_FLOCK_LOCKS,
		fuse.CAP_NO_OPEN_SUPPORT, fuse.CAP_SECURITY_CTX, fuse.CAP_CREATE_SUPP_GROUP, fuse.CAP_DONT_MASK, fuse.CAP_POSIX_ACL} {
		if out.Flags64()&cap != 0 {
			t.Errorf("INIT reply flags %#x have %#x", out.Flags64(), cap)
		}
	}
	for _, cap := range []uint64{fuse.CAP_READDIRPLUS, fuse.CAP_PARALLEL_DIROPS, fuse.CAP_MAX_PAGES, fuse.CAP_BIG_WRITES} {
		if out.Flags64()&cap == 0 {
			t.Errorf("INIT reply flags %#x lack %#x", out.Flags64(), cap)
		}
	}
}

func TestInitRequired(t *testing.T) {
	dir := populate(t, t.TempDir())
	s, err := New(Options{Dir: dir, Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &client{t: t, s: s, log: &logSink{}}
	if _, errno := c.lookup(root, "f"); errno != syscall.EIO {
		t.Fatalf("LOOKUP before INIT: %v, want EIO", errno)
	}
	for _, v := range [][2]uint32{{8, 38}, {6, 38}, {7, 11}} {
		req := fusetest.Encode(fusetest.OpInit, 5, 0, fuse.InitIn{Major: v[0], Minor: v[1]})
		if h, _ := c.raw(req, 100); h.Status != -int32(syscall.EPROTO) {
			t.Errorf("INIT %d.%d: status %d, want EPROTO", v[0], v[1], h.Status)
		}
	}
	// A 7.12 client's fuse_init_in is 16 bytes.
	c.raw(fusetest.Encode(fusetest.OpInit, 5, 0, fuse.InHeader{}, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(make([]byte, 0, 16), 7), 12), make([]byte, 8)), 100)
	if _, errno := c.lookup(root, "f"); errno != 0 {
		t.Fatalf("LOOKUP after INIT 7.12: %v", errno)
	}
	// DESTROY ends the session, Reset too.
	if errno, _ := c.call(fusetest.OpDestroy, 0, nil); errno != 0 {
		t.Fatalf("DESTROY: %v", errno)
	}
	if _, errno := c.lookup(root, "f"); errno != syscall.EIO {
		t.Fatalf("LOOKUP after DESTROY: %v, want EIO", errno)
	}
	c.init()
	f := c.mustLookup(root, "f")
	s.Reset()
	c.init()
	if _, errno := c.getattr(f.NodeId); errno != syscall.ESTALE {
		t.Fatalf("GETATTR of a node from before Reset: %v, want ESTALE", errno)
	}
}

func TestFileLifecycle(t *testing.T) {
	c := newClient(t, false)

	// CREATE, WRITE, READ back, GETATTR.
	co, errno := c.create(root, "new", unix.O_RDWR|unix.O_CREAT, 0o640)
	c.mustOK("CREATE", errno)
	if co.Attr.Mode != unix.S_IFREG|0o640 || co.Attr.Size != 0 {
		t.Fatalf("CREATE attr %+v", co.Attr)
	}
	data := []byte("some data for the share\n")
	n, errno := c.write(co.NodeId, co.Fh, 0, data)
	if errno != 0 || n != uint32(len(data)) {
		t.Fatalf("WRITE: %d, %v", n, errno)
	}
	got, errno := c.read(co.NodeId, co.Fh, 0, 4096)
	if errno != 0 || !bytes.Equal(got, data) {
		t.Fatalf("READ: %q, %v", got, errno)
	}
	got, _ = c.read(co.NodeId, co.Fh, 5, 4)
	if string(got) != "data" {
		t.Fatalf("READ at 5: %q", got)
	}
	if got, _ = c.read(co.NodeId, co.Fh, 1000, 10); len(got) != 0 {
		t.Fatalf("READ past the end: %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "new")); !bytes.Equal(b, data) {
		t.Fatalf("host file %q", b)
	}
	attr, errno := c.getattr(co.NodeId)
	if errno != 0 || attr.Size != uint64(len(data)) || attr.Ino != co.Attr.Ino {
		t.Fatalf("GETATTR %+v, %v", attr, errno)
	}
	for _, tc := range []struct {
		op uint32
		in any
	}{
		{fusetest.OpFlush, fuse.FlushIn{Fh: co.Fh}},
		{fusetest.OpFsync, fuse.FsyncIn{Fh: co.Fh}},
		{fusetest.OpFsync, fuse.FsyncIn{Fh: co.Fh, FsyncFlags: 1}},
		{fusetest.OpFallocate, fuse.FallocateIn{Fh: co.Fh, Offset: 0, Length: 8192}},
		{fusetest.OpStatfs, nil},
		{fusetest.OpAccess, fuse.AccessIn{Mask: unix.R_OK | unix.W_OK}},
	} {
		if errno, _ := c.call(tc.op, co.NodeId, tc.in); errno != 0 {
			t.Errorf("opcode %d: %v", tc.op, errno)
		}
	}
	errno, body := c.call(fusetest.OpLseek, co.NodeId, fuse.LseekIn{Fh: co.Fh, Whence: unix.SEEK_DATA})
	var lo fuse.LseekOut
	fusetest.Decode(body, &lo)
	if errno != 0 || lo.Offset != 0 {
		t.Errorf("LSEEK SEEK_DATA: %d, %v", lo.Offset, errno)
	}
	c.release(co.NodeId, co.Fh)
	if _, errno := c.read(co.NodeId, co.Fh, 0, 10); errno != syscall.EBADF {
		t.Errorf("READ after RELEASE: %v, want EBADF", errno)
	}

	// OPEN an existing file, SETATTR size, mode and times.
	f := c.mustLookup(root, "f")
	fh, errno := c.open(f.NodeId, unix.O_RDONLY)
	c.mustOK("OPEN", errno)
	if got, _ := c.read(f.NodeId, fh, 0, 100); string(got) != "hello, world\n" {
		t.Fatalf("READ f: %q", got)
	}
	c.release(f.NodeId, fh)
	var sa fuse.SetAttrIn
	sa.Valid = fuse.FATTR_SIZE | fuse.FATTR_MODE | fuse.FATTR_MTIME | fuse.FATTR_ATIME
	sa.Size, sa.Mode, sa.Mtime, sa.Atime = 5, 0o600, 1_000_000, 2_000_000
	errno, body = c.call(fusetest.OpSetattr, f.NodeId, sa)
	var ao fuse.AttrOut
	fusetest.Decode(body, &ao)
	if errno != 0 || ao.Size != 5 || ao.Mode != unix.S_IFREG|0o600 || ao.Mtime != 1_000_000 || ao.Atime != 2_000_000 {
		t.Fatalf("SETATTR: %+v, %v", ao.Attr, errno)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(c.dir, "f"), &st)
	if st.Size != 5 || st.Mode&0o7777 != 0o600 || st.Mtim.Sec != 1_000_000 {
		t.Fatalf("host f after SETATTR: %+v", st)
	}
	sa = fuse.SetAttrIn{}
	sa.Valid = fuse.FATTR_UID | fuse.FATTR_GID
	sa.Uid, sa.Gid = uint32(os.Getuid()), 4242
	if errno, _ := c.call(fusetest.OpSetattr, f.NodeId, sa); errno != 0 {
		t.Fatalf("SETATTR chown: %v", errno)
	}

	// MKDIR, SYMLINK, READLINK, LINK, RENAME, READDIR, UNLINK, RMDIR.
	errno, body = c.call(fusetest.OpMkdir, root, fuse.MkdirIn{Mode: 0o750}, fusetest.Name("sub"))
	sub := c.entry("MKDIR", errno, body)
	if sub.Mode != unix.S_IFDIR|0o750 {
		t.Fatalf("MKDIR mode %o", sub.Mode)
	}
	errno, body = c.call(fusetest.OpSymlink, sub.NodeId, nil, fusetest.Name("ln"), fusetest.Name("../f"))
	ln := c.entry("SYMLINK", errno, body)
	if errno, body := c.call(fusetest.OpReadlink, ln.NodeId, nil); errno != 0 || string(body) != "../f" {
		t.Fatalf("READLINK: %q, %v", body, errno)
	}
	if target, _ := os.Readlink(filepath.Join(c.dir, "sub", "ln")); target != "../f" {
		t.Fatalf("host symlink -> %q", target)
	}
	errno, body = c.call(fusetest.OpLink, sub.NodeId, fuse.LinkIn{Oldnodeid: f.NodeId}, fusetest.Name("hard"))
	hard := c.entry("LINK", errno, body)
	if hard.NodeId != f.NodeId || hard.Nlink != 2 {
		t.Fatalf("LINK: node %d nlink %d, want node %d nlink 2", hard.NodeId, hard.Nlink, f.NodeId)
	}
	if errno, _ := c.call(fusetest.OpRename, root, fusetest.RenameIn{Newdir: sub.NodeId}, fusetest.Name("new"), fusetest.Name("moved")); errno != 0 {
		t.Fatalf("RENAME: %v", errno)
	}
	if errno, _ := c.call(fusetest.OpRename2, sub.NodeId, fuse.RenameIn{Newdir: sub.NodeId, Flags: unix.RENAME_NOREPLACE},
		fusetest.Name("moved"), fusetest.Name("hard")); errno != syscall.EEXIST {
		t.Fatalf("RENAME2 NOREPLACE onto a file: %v, want EEXIST", errno)
	}
	if errno, _ := c.call(fusetest.OpRename2, sub.NodeId, fuse.RenameIn{Newdir: sub.NodeId, Flags: unix.RENAME_EXCHANGE},
		fusetest.Name("moved"), fusetest.Name("ln")); errno != 0 {
		t.Fatalf("RENAME2 EXCHANGE: %v", errno)
	}
	want := []string{".", "..", "hard", "ln", "moved"}
	for _, plus := range []bool{false, true} {
		ents := c.readdir(sub.NodeId, plus)
		if got := names(ents); !slices.Equal(got, want) {
			t.Fatalf("READDIR(plus %v) = %q, want %q", plus, got, want)
		}
		for _, e := range ents {
			if plus && e.Name != "." && e.Name != ".." && e.Entry.NodeId == 0 {
				t.Errorf("READDIRPLUS %s: no node", e.Name)
			}
			if e.Name == "hard" && (plus && e.Entry.NodeId != f.NodeId || e.Mode != unix.S_IFREG) {
				t.Errorf("READDIR hard: %+v", e)
			}
		}
	}
	for _, name := range []string{"hard", "ln", "moved"} {
		if errno, _ := c.call(fusetest.OpUnlink, sub.NodeId, nil, fusetest.Name(name)); errno != 0 {
			t.Fatalf("UNLINK %s: %v", name, errno)
		}
	}
	if errno, _ := c.call(fusetest.OpRmdir, root, nil, fusetest.Name("sub")); errno != 0 {
		t.Fatalf("RMDIR: %v", errno)
	}
	if _, err := os.Lstat(filepath.Join(c.dir, "sub")); !os.IsNotExist(err) {
		t.Fatalf("sub still there: %v", err)
	}
	// MKNOD of a regular file.
	errno, body = c.call(fusetest.OpMknod, root, fuse.MknodIn{Mode: unix.S_IFREG | 0o604}, fusetest.Name("node"))
	if e := c.entry("MKNOD", errno, body); e.Mode != unix.S_IFREG|0o604 {
		t.Fatalf("MKNOD mode %o", e.Mode)
	}
	checkConfined(t, c.s, c.parent, c.dir)
}

// TestReaddirLarge lists a directory that needs many READDIR requests and
// checks every name comes back once.
func TestReaddirLarge(t *testing.T) {
	c := newClient(t, false)
	d := c.mustLookup(root, "d")
	want := []string{".", "..", "g"}
	for i := range 500 {
		name := strings.Repeat("x", i%60) + "-" + strconv.Itoa(i)
		if err := os.WriteFile(filepath.Join(c.dir, "d", name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	slices.Sort(want)
	for _, plus := range []bool{false, true} {
		if got := names(c.readdir(d.NodeId, plus)); !slices.Equal(got, want) {
			t.Fatalf("READDIR(plus %v): %d names, want %d", plus, len(got), len(want))
		}
	}
}

// TestNodes checks lookup counting: a node lives until the guest forgot
// every lookup of it, and the same inode is the same node.
func TestNodes(t *testing.T) {
	c := newClient(t, false)
	a := c.mustLookup(root, "f")
	b := c.mustLookup(root, "f")
	if a.NodeId != b.NodeId {
		t.Fatalf("two lookups of f: nodes %d and %d", a.NodeId, b.NodeId)
	}
	forget := func(node, n uint64) {
		req := fusetest.Encode(fusetest.OpForget, c.next(), node, fuse.ForgetIn{Nlookup: n})
		if n := c.s.Handle(virtio.Buffers{req}, nil); n != 0 {
			t.Fatalf("FORGET replied %d bytes", n)
		}
	}
	forget(a.NodeId, 1)
	if _, errno := c.getattr(a.NodeId); errno != 0 {
		t.Fatalf("GETATTR after forgetting one of two lookups: %v", errno)
	}
	forget(a.NodeId, 1)
	if _, errno := c.getattr(a.NodeId); errno != syscall.ESTALE {
		t.Fatalf("GETATTR after forgetting both lookups: %v, want ESTALE", errno)
	}
	forget(root, 100) // ignored
	forget(12345, 1)  // ignored
	if _, errno := c.getattr(root); errno != 0 {
		t.Fatalf("GETATTR root after FORGET root: %v", errno)
	}
	// BATCH_FORGET, with a count larger than its entries.
	d := c.mustLookup(root, "d")
	g := c.mustLookup(d.NodeId, "g")
	batch := binary.LittleEndian.AppendUint32(nil, 5) // count
	batch = binary.LittleEndian.AppendUint32(batch, 0)
	for _, id := range []uint64{d.NodeId, g.NodeId} {
		batch = binary.LittleEndian.AppendUint64(batch, id)
		batch = binary.LittleEndian.AppendUint64(batch, 1)
	}
	if n := c.s.Handle(virtio.Buffers{fusetest.Encode(fusetest.OpBatchForget, c.next(), 0, nil, batch)}, nil); n != 0 {
		t.Fatalf("BATCH_FORGET replied %d bytes", n)
	}
	for _, id := range []uint64{d.NodeId, g.NodeId} {
		if _, errno := c.getattr(id); errno != syscall.ESTALE {
			t.Fatalf("GETATTR %d after BATCH_FORGET: %v, want ESTALE", id, errno)
		}
	}
}

func TestFDBudget(t *testing.T) {
	c := newClient(t, false)
	c.s.fs.t.budget.max = 3 // the root and two more
	c.mustLookup(root, "f")
	d := c.mustLookup(root, "d")
	if _, errno := c.lookup(root, "up"); errno != syscall.ENFILE {
		t.Fatalf("LOOKUP over the budget: %v, want ENFILE", errno)
	}
	if errno, _ := c.call(fusetest.OpOpendir, d.NodeId, fuse.OpenIn{}); errno != syscall.ENFILE {
		t.Fatalf("OPENDIR over the budget: %v, want ENFILE", errno)
	}
	c.mustLookup(root, "f") // known nodes cost nothing
}

// Two shares of one vmm draw on one budget: what one holds, the other
// cannot take, until it is forgotten, released or the share closed.
func TestFDBudgetShared(t *testing.T) {
	b := newBudget(5)
	one := newClientBudget(t, false, b)
	two := newClientBudget(t, false, b) // the two roots: 2 of 5
	f := one.mustLookup(root, "f")
	f2 := two.mustLookup(root, "f")
	fh, errno := two.open(f2.NodeId, unix.O_RDONLY)
	two.mustOK("OPEN", errno)
	if _, errno := two.lookup(root, "d"); errno != syscall.ENFILE {
		t.Fatalf("LOOKUP with the budget spent by both shares: %v, want ENFILE", errno)
	}
	// FORGET gives one back.
	if n := one.s.Handle(virtio.Buffers{fusetest.Encode(fusetest.OpForget, one.next(), f.NodeId, fuse.ForgetIn{Nlookup: 1}, nil)}, nil); n != 0 {
		t.Fatalf("FORGET replied %d bytes", n)
	}
	two.mustLookup(root, "d")
	// RELEASE too.
	two.release(f2.NodeId, fh)
	one.mustLookup(root, "f")
	if _, errno := two.lookup(root, "up"); errno != syscall.ENFILE {
		t.Fatalf("LOOKUP over the budget again: %v, want ENFILE", errno)
	}
	// A closed share gives back all it held, its root included.
	one.s.Close()
	if got := b.used.Load(); got != 3 {
		t.Fatalf("%d descriptors counted after one share closed, want two's 3 (root, f, d)", got)
	}
	two.s.Close()
	if got := b.used.Load(); got != 0 {
		t.Fatalf("%d descriptors counted with both shares closed", got)
	}
}

// TestSplitBuffers sends a LOOKUP and a WRITE with the request and the
// reply cut at every byte, as a driver may lay them out.
func TestSplitBuffers(t *testing.T) {
	c := newClient(t, false)
	co, errno := c.create(root, "w", unix.O_RDWR, 0o644)
	c.mustOK("CREATE", errno)
	lookup := fusetest.Encode(fusetest.OpLookup, 7, root, nil, fusetest.Name("f"))
	want := c.mustLookup(root, "f")
	for cut := 0; cut <= len(lookup); cut++ {
		for rcut := 0; rcut <= 16+128; rcut += 7 {
			out := bytes.Repeat([]byte{0xee}, 16+128)
			n := c.s.Handle(virtio.Buffers{lookup[:cut], nil, lookup[cut:]}, virtio.Buffers{out[:rcut], out[rcut:]})
			h, body := c.check(out, n)
			var e fuse.EntryOut
			fusetest.Decode(body, &e)
			if h.Status != 0 || h.Unique != 7 || e.NodeId != want.NodeId {
				t.Fatalf("LOOKUP cut at %d, reply at %d: status %d node %d", cut, rcut, h.Status, e.NodeId)
			}
		}
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 8)
	write := fusetest.Encode(fusetest.OpWrite, 9, co.NodeId, fuse.WriteIn{Fh: co.Fh, Size: uint32(len(data))}, data)
	for cut := 0; cut <= len(write); cut += 3 {
		out := bytes.Repeat([]byte{0xee}, 24)
		n := c.s.Handle(virtio.Buffers{write[:cut], write[cut:]}, virtio.Buffers{out})
		h, body := c.check(out, n)
		var wo fuse.WriteOut
		fusetest.Decode(body, &wo)
		if h.Status != 0 || wo.Size != uint32(len(data)) {
			t.Fatalf("WRITE cut at %d: status %d size %d", cut, h.Status, wo.Size)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "w")); !bytes.Equal(b, data) {
		t.Fatalf("host file %q", b)
	}
}

// TestBigIO writes and reads MaxWrite bytes spread over many small
// buffers, as a guest's pages are.
func TestBigIO(t *testing.T) {
	c := newClient(t, false)
	co, errno := c.create(root, "big", unix.O_RDWR, 0o644)
	c.mustOK("CREATE", errno)
	data := make([]byte, MaxWrite)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	req := fusetest.Encode(fusetest.OpWrite, 3, co.NodeId, fuse.WriteIn{Fh: co.Fh, Offset: 4096, Size: MaxWrite}, data)
	var in virtio.Buffers
	for b := req; len(b) > 0; {
		n := min(len(b), 4096-len(in)%3*100) // uneven pieces
		in = append(in, b[:n])
		b = b[n:]
	}
	out := make([]byte, 24)
	h, body := c.check(out, c.s.Handle(in, virtio.Buffers{out}))
	var wo fuse.WriteOut
	fusetest.Decode(body, &wo)
	if h.Status != 0 || wo.Size != MaxWrite {
		t.Fatalf("big WRITE: status %d size %d", h.Status, wo.Size)
	}
	rd := fusetest.Encode(fusetest.OpRead, 5, co.NodeId, fuse.ReadIn{Fh: co.Fh, Offset: 4096, Size: MaxWrite})
	var outs virtio.Buffers
	whole := bytes.Repeat([]byte{0xee}, MaxReply)
	for b := whole; len(b) > 0; {
		n := min(len(b), 4096)
		outs = append(outs, b[:n])
		b = b[n:]
	}
	h, body = c.check(whole, c.s.Handle(virtio.Buffers{rd}, outs))
	if h.Status != 0 || !bytes.Equal(body, data) {
		t.Fatalf("big READ: status %d, %d bytes, equal %v", h.Status, len(body), bytes.Equal(body, data))
	}
}

// TestMalformed sends requests a buggy or hostile driver might: every
// one gets an error reply, or none when there is no room for one.
func TestMalformed(t *testing.T) {
	c := newClient(t, false)
	f := c.mustLookup(root, "f")
	leak := c.mustLookup(root, "leak")
	fh, errno := c.open(f.NodeId, unix.O_RDONLY)
	c.mustOK("OPEN", errno)
	lookup := fusetest.Encode(fusetest.OpLookup, 11, root, nil, fusetest.Name("f"))
	setLen := func(b []byte, n uint32) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b, n)
		return b
	}
	read := func(size uint32) []byte {
		return fusetest.Encode(fusetest.OpRead, 11, f.NodeId, fuse.ReadIn{Fh: fh, Size: size})
	}
	for _, tc := range []struct {
		name   string
		req    []byte
		outLen int
		want   syscall.Errno // 0: no reply at all
		unique uint64
	}{
		{"empty", nil, 100, syscall.EINVAL, 0},
		{"1 byte", []byte{1}, 100, syscall.EINVAL, 0},
		{"39 bytes", lookup[:39], 100, syscall.EINVAL, 0},
		{"length larger", setLen(lookup, uint32(len(lookup)+1)), 200, syscall.EINVAL, 11},
		{"length smaller", setLen(lookup, uint32(len(lookup)-1)), 200, syscall.EINVAL, 11},
		{"length 0", setLen(lookup, 0), 200, syscall.EINVAL, 11},
		{"length huge", setLen(lookup, 0xffffffff), 200, syscall.EINVAL, 11},
		{"READ args short", setLen(read(10)[:60], 60), 200, syscall.EINVAL, 11},
		{"GETATTR bare header", fusetest.Encode(fusetest.OpGetattr, 11, root, nil), 200, syscall.EINVAL, 11},
		{"READ of 4 GiB", read(0xffffffff), MaxReply + 100, syscall.EIO, 11},
		{"READ larger than the reply", read(4096), 1000, syscall.EIO, 11},
		{"LOOKUP reply too small", lookup, 16, syscall.EIO, 11},
		{"LOOKUP reply 15 bytes", lookup, 15, 0, 0},
		{"READLINK reply too small", fusetest.Encode(fusetest.OpReadlink, 11, leak.NodeId, nil), 16 + 4094, syscall.ERANGE, 11},
		{"LOOKUP no reply buffer", lookup, 0, 0, 0},
		{"too long", fusetest.Encode(fusetest.OpLookup, 11, root, nil, make([]byte, maxArgs)), 200, syscall.EINVAL, 11},
		{"WRITE too long", fusetest.Encode(fusetest.OpWrite, 11, f.NodeId, fuse.WriteIn{Fh: fh, Size: MaxWrite + 1}, make([]byte, MaxWrite+1)), 200, syscall.EINVAL, 11},
		{"WRITE size lies", fusetest.Encode(fusetest.OpWrite, 11, f.NodeId, fuse.WriteIn{Fh: fh, Size: 100}, make([]byte, 10)), 200, syscall.EINVAL, 11},
		{"SYMLINK one name", fusetest.Encode(fusetest.OpSymlink, 11, root, nil, []byte("x")), 200, syscall.EIO, 11},
		{"LOOKUP no name", fusetest.Encode(fusetest.OpLookup, 11, root, nil), 200, syscall.EINVAL, 11},
		{"LOOKUP unknown node", fusetest.Encode(fusetest.OpLookup, 11, 999, nil, fusetest.Name("f")), 200, syscall.ESTALE, 11},
		{"READ unknown handle", fusetest.Encode(fusetest.OpRead, 11, f.NodeId, fuse.ReadIn{Fh: 999, Size: 10}), 200, syscall.EBADF, 11},
		{"READ a directory handle", fusetest.Encode(fusetest.OpReaddir, 11, f.NodeId, fuse.ReadIn{Fh: fh, Size: 100}), 200, syscall.EBADF, 11},
		{"READ offset negative", fusetest.Encode(fusetest.OpRead, 11, f.NodeId, fuse.ReadIn{Fh: fh, Offset: 1 << 63, Size: 10}), 200, syscall.EINVAL, 11},
		{"OPEN access mode 3", fusetest.Encode(fusetest.OpOpen, 11, f.NodeId, fuse.OpenIn{Flags: 3}), 200, syscall.EINVAL, 11},
		{"extension past the end", func() []byte {
			b := fusetest.Encode(fusetest.OpLookup, 11, root, nil, fusetest.Name("f"))
			binary.LittleEndian.PutUint16(b[36:], 100)
			return b
		}(), 200, syscall.EIO, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			h, _ := c.raw(tc.req, tc.outLen)
			if tc.want == 0 {
				if h.Status != 1 {
					t.Fatalf("status %d, want no reply", h.Status)
				}
				return
			}
			if h.Status != -int32(tc.want) || h.Unique != tc.unique {
				t.Fatalf("status %d unique %d, want %d (%v) and %d", h.Status, h.Unique, -int32(tc.want), tc.want, tc.unique)
			}
		})
	}
	c.t = t
	checkConfined(t, c.s, c.parent, c.dir)
}

func TestUnimplemented(t *testing.T) {
	c := newClient(t, false)
	for _, op := range []uint32{0, 7, 19, fusetest.OpSetxattr, fusetest.OpGetxattr, fusetest.OpGetlk, fusetest.OpInterrupt,
		fusetest.OpIoctl, fusetest.OpCopyRange, fusetest.OpStatx, 41, 48, 53, 99, 4096, 0xffffffff} {
		if errno, _ := c.call(op, root, nil, make([]byte, 64)); errno != syscall.ENOSYS {
			t.Errorf("opcode %d: %v, want ENOSYS", op, errno)
		}
	}
	if len(c.log.lines) != 0 {
		t.Errorf("unimplemented opcodes logged %q", c.log.lines)
	}
}

// A name that is not there gets a negative entry the guest can cache
// (node ID 0, the entry timeout set) instead of ENOENT, and no node;
// names that are there, and bad names, are answered as before.
func TestNegativeLookup(t *testing.T) {
	c := newClient(t, false)
	before := len(c.s.fs.t.nodes)
	errno, body := c.call(fusetest.OpLookup, root, nil, fusetest.Name("missing"))
	var e fuse.EntryOut
	if errno != 0 || fusetest.Decode(body, &e) != nil {
		t.Fatalf("LOOKUP missing: %v, body %x", errno, body)
	}
	if e.NodeId != 0 || e.EntryValid != uint64(timeout/time.Second) || e.Attr.Ino != 0 {
		t.Errorf("LOOKUP missing: %+v, want node 0 with a %v entry timeout", e, timeout)
	}
	if n := len(c.s.fs.t.nodes); n != before {
		t.Errorf("%d nodes after a negative lookup, had %d", n, before)
	}
	for _, tc := range []struct {
		parent uint64
		name   string
		want   syscall.Errno
	}{
		{root, "..", syscall.EINVAL},
		{root, "a/b", syscall.EINVAL},
		{12345, "f", syscall.ESTALE},
		{c.mustLookup(root, "f").NodeId, "x", syscall.ENOTDIR},
	} {
		if errno, _ := c.call(fusetest.OpLookup, tc.parent, nil, fusetest.Name(tc.name)); errno != tc.want {
			t.Errorf("LOOKUP %q in %d: %v, want %v", tc.name, tc.parent, errno, tc.want)
		}
	}
	// Created afterwards, it is found (the guest's cache is the
	// guest's business).
	if err := os.WriteFile(filepath.Join(c.dir, "missing"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustLookup(root, "missing")
}

// OPEN and CREATE tell the guest not to send FLUSH on close; a FLUSH
// from a kernel that ignores the flag is still answered.
func TestOpenNoFlush(t *testing.T) {
	c := newClient(t, false)
	co, errno := c.create(root, "new", unix.O_WRONLY|unix.O_CREAT, 0o644)
	c.mustOK("CREATE", errno)
	// The same name again, without O_EXCL: the existing-file path.
	co2, errno := c.create(root, "new", unix.O_WRONLY|unix.O_CREAT, 0o644)
	c.mustOK("CREATE existing", errno)
	f := c.mustLookup(root, "f")
	errno, body := c.call(fusetest.OpOpen, f.NodeId, fuse.OpenIn{Flags: unix.O_RDONLY})
	var oo fuse.OpenOut
	if errno != 0 || fusetest.Decode(body, &oo) != nil {
		t.Fatalf("OPEN: %v", errno)
	}
	for what, flags := range map[string]uint32{"CREATE": co.OpenFlags, "CREATE existing": co2.OpenFlags, "OPEN": oo.OpenFlags} {
		if flags != fuse.FOPEN_NOFLUSH {
			t.Errorf("%s: open flags %#x, want FOPEN_NOFLUSH only", what, flags)
		}
	}
	if errno, _ := c.call(fusetest.OpFlush, f.NodeId, fuse.FlushIn{Fh: oo.Fh}); errno != 0 {
		t.Errorf("FLUSH: %v", errno)
	}
}
