package share

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// secret is the content of a file next to the shared directory, which no
// request may reach.
const secret = "outside the share\n"

// logSink collects what the server logs.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// client drives a Server the way a guest's kernel would.
type client struct {
	t      testing.TB
	s      *Server
	parent string // holds dir and the secret
	dir    string // the share
	log    *logSink
	unique uint64
}

// populate fills dir: a file, a directory with a file, and symlinks
// pointing up, to the root, and at the secret next to the share.
func populate(t testing.TB, parent string) string {
	t.Helper()
	dir := filepath.Join(parent, "share")
	for _, err := range []error{
		os.WriteFile(filepath.Join(parent, "secret"), []byte(secret), 0o600),
		os.Mkdir(dir, 0o755),
		os.WriteFile(filepath.Join(dir, "f"), []byte("hello, world\n"), 0o644),
		os.Mkdir(filepath.Join(dir, "d"), 0o755),
		os.WriteFile(filepath.Join(dir, "d", "g"), []byte("inner\n"), 0o644),
		os.Symlink("..", filepath.Join(dir, "up")),
		os.Symlink("/", filepath.Join(dir, "abs")),
		os.Symlink("../secret", filepath.Join(dir, "leak")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newClient shares a populated directory and sends INIT.
func newClient(t testing.TB, readOnly bool) *client {
	t.Helper()
	return newClientBudget(t, readOnly, nil)
}

// newClientBudget is newClient with the server counting its descriptors
// in budget (nil: its own).
func newClientBudget(t testing.TB, readOnly bool, budget *Budget) *client {
	t.Helper()
	parent := t.TempDir()
	dir := populate(t, parent)
	c := &client{t: t, parent: parent, dir: dir, log: &logSink{}}
	var err error
	c.s, err = New(Options{Dir: dir, ReadOnly: readOnly, Logf: c.log.logf, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.s.Close() })
	c.init()
	return c
}

func (c *client) init() {
	c.t.Helper()
	h, body := c.raw(fusetest.Init(c.next()), MaxReply)
	if h.Status != 0 {
		c.t.Fatalf("INIT: %v", syscall.Errno(-h.Status))
	}
	if _, err := fusetest.DecodeInit(body); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() uint64 {
	c.unique += 2
	return c.unique
}

// raw sends one request in one buffer with outLen bytes for the reply
// and returns the parsed reply; it checks the reply's framing and that
// Handle wrote nothing past what it reported.
func (c *client) raw(req []byte, outLen int) (fuse.OutHeader, []byte) {
	c.t.Helper()
	out := bytes.Repeat([]byte{0xee}, outLen)
	n := c.s.Handle(virtio.Buffers{req}, virtio.Buffers{out})
	return c.check(out, n)
}

func (c *client) check(out []byte, n int) (fuse.OutHeader, []byte) {
	c.t.Helper()
	if n < 0 || n > len(out) {
		c.t.Fatalf("Handle wrote %d bytes into %d", n, len(out))
	}
	if !bytes.Equal(out[n:], bytes.Repeat([]byte{0xee}, len(out)-n)) {
		c.t.Fatalf("Handle reported %d bytes but wrote past them", n)
	}
	if n == 0 {
		return fuse.OutHeader{Status: 1}, nil // no reply: a status no reply has
	}
	h, body, err := fusetest.Parse(out[:n])
	if err != nil {
		c.t.Fatal(err)
	}
	return h, body
}

// call sends a request and returns the reply's errno and body.
func (c *client) call(opcode uint32, node uint64, in any, payloads ...[]byte) (syscall.Errno, []byte) {
	c.t.Helper()
	unique := c.next()
	h, body := c.raw(fusetest.Encode(opcode, unique, node, in, payloads...), 64<<10)
	if h.Status == 1 {
		c.t.Fatalf("opcode %d: no reply", opcode)
	}
	if h.Unique != unique {
		c.t.Fatalf("opcode %d: reply for %d, want %d", opcode, h.Unique, unique)
	}
	return syscall.Errno(-h.Status), body
}

// mustOK fails unless errno is 0.
func (c *client) mustOK(what string, errno syscall.Errno) {
	c.t.Helper()
	if errno != 0 {
		c.t.Fatalf("%s: %v", what, errno)
	}
}

func (c *client) entry(what string, errno syscall.Errno, body []byte) fuse.EntryOut {
	c.t.Helper()
	c.mustOK(what, errno)
	var e fuse.EntryOut
	if err := fusetest.Decode(body, &e); err != nil {
		c.t.Fatal(err)
	}
	if e.NodeId == 0 {
		c.t.Fatalf("%s: node ID 0", what)
	}
	return e
}

// lookup is LOOKUP as the guest's kernel reads it: a negative entry
// (node ID 0) is ENOENT.
func (c *client) lookup(parent uint64, name string) (fuse.EntryOut, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpLookup, parent, nil, fusetest.Name(name))
	if errno != 0 {
		return fuse.EntryOut{}, errno
	}
	var e fuse.EntryOut
	if err := fusetest.Decode(body, &e); err != nil {
		c.t.Fatal(err)
	}
	if e.NodeId == 0 {
		return fuse.EntryOut{}, syscall.ENOENT
	}
	return c.entry("LOOKUP "+name, errno, body), 0
}

func (c *client) mustLookup(parent uint64, name string) fuse.EntryOut {
	c.t.Helper()
	e, errno := c.lookup(parent, name)
	c.mustOK("LOOKUP "+name, errno)
	return e
}

func (c *client) create(parent uint64, name string, flags, mode uint32) (fuse.CreateOut, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpCreate, parent, fuse.CreateIn{Flags: flags, Mode: mode}, fusetest.Name(name))
	var out fuse.CreateOut
	if errno == 0 {
		if err := fusetest.Decode(body, &out); err != nil {
			c.t.Fatal(err)
		}
	}
	return out, errno
}

func (c *client) open(node uint64, flags uint32) (uint64, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpOpen, node, fuse.OpenIn{Flags: flags})
	var out fuse.OpenOut
	if errno == 0 {
		if err := fusetest.Decode(body, &out); err != nil {
			c.t.Fatal(err)
		}
	}
	return out.Fh, errno
}

func (c *client) write(node, fh, off uint64, data []byte) (uint32, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpWrite, node, fuse.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}, data)
	var out fuse.WriteOut
	if errno == 0 {
		if err := fusetest.Decode(body, &out); err != nil {
			c.t.Fatal(err)
		}
	}
	return out.Size, errno
}

func (c *client) read(node, fh, off uint64, size uint32) ([]byte, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpRead, node, fuse.ReadIn{Fh: fh, Offset: off, Size: size})
	return body, errno
}

func (c *client) getattr(node uint64) (fuse.Attr, syscall.Errno) {
	c.t.Helper()
	errno, body := c.call(fusetest.OpGetattr, node, fuse.GetAttrIn{})
	var out fuse.AttrOut
	if errno == 0 {
		if err := fusetest.Decode(body, &out); err != nil {
			c.t.Fatal(err)
		}
	}
	return out.Attr, errno
}

func (c *client) release(node, fh uint64) {
	c.t.Helper()
	errno, _ := c.call(fusetest.OpRelease, node, fuse.ReleaseIn{Fh: fh})
	c.mustOK("RELEASE", errno)
}

// readdir lists directory node with READDIR or READDIRPLUS, a page at a
// time as Linux does.
func (c *client) readdir(node uint64, plus bool) []fusetest.DirEntryPlus {
	c.t.Helper()
	errno, body := c.call(fusetest.OpOpendir, node, fuse.OpenIn{})
	c.mustOK("OPENDIR", errno)
	var oo fuse.OpenOut
	fusetest.Decode(body, &oo)
	defer func() {
		errno, _ := c.call(fusetest.OpReleasedir, node, fuse.ReleaseIn{Fh: oo.Fh})
		c.mustOK("RELEASEDIR", errno)
	}()
	op := uint32(fusetest.OpReaddir)
	if plus {
		op = fusetest.OpReaddirplus
	}
	var all []fusetest.DirEntryPlus
	off := uint64(0)
	for range 1000 {
		errno, body := c.call(op, node, fuse.ReadIn{Fh: oo.Fh, Offset: off, Size: 4096})
		c.mustOK("READDIR", errno)
		if len(body) == 0 {
			return all
		}
		var got []fusetest.DirEntryPlus
		if plus {
			var err error
			if got, err = fusetest.ParseDirPlus(body); err != nil {
				c.t.Fatal(err)
			}
		} else {
			ents, err := fusetest.ParseDir(body)
			if err != nil {
				c.t.Fatal(err)
			}
			for _, e := range ents {
				got = append(got, fusetest.DirEntryPlus{DirEntry: e})
			}
		}
		all = append(all, got...)
		off = got[len(got)-1].Off
	}
	c.t.Fatal("READDIR never ends")
	return nil
}

func names(ents []fusetest.DirEntryPlus) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

// snapshot describes everything under root (the share's parent, so the
// secret too): each path's type, permissions, owner, size, mtime,
// content hash and link target. Access times are left out: reading
// changes them.
func snapshot(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(&b, "%s %o %d:%d %d %d.%d", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		case unix.S_IFLNK:
			target, _ := os.Readlink(path)
			fmt.Fprintf(&b, " -> %s", target)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkConfined fails unless every descriptor the server holds names a
// file inside the share, and the secret next to it is untouched.
func checkConfined(t testing.TB, s *Server, parent, dir string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(parent, "secret")); err != nil || string(b) != secret {
		t.Fatalf("the secret next to the share changed: %q, %v", b, err)
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		t.Fatalf("next to the share: %q, want only share and secret", n)
	}
	var fds []fdFile
	s.fs.t.mu.Lock()
	for _, n := range s.fs.t.nodes {
		fds = append(fds, n.fdFile)
	}
	for _, h := range s.fs.t.handles {
		fds = append(fds, h.fdFile)
	}
	s.fs.t.mu.Unlock()
	for _, f := range fds {
		var path string
		f.do(func(fd int) (err error) {
			path, err = os.Readlink(procPath(fd))
			return err
		})
		path = strings.TrimSuffix(path, " (deleted)")
		if path != "" && path != dir && !strings.HasPrefix(path, dir+"/") {
			t.Fatalf("the server holds %s, outside the share %s", path, dir)
		}
	}
}
