package share

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// TestCallsFor: a share is served with raw calls exactly when rawsys
// says its directory is on a local file system.
func TestCallsFor(t *testing.T) {
	dir := t.TempDir()
	root, err := openRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	local, err := rawsys.LocalFD(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := callsFor(root).IsRaw(); got != local {
		t.Errorf("callsFor(%s) raw %v, rawsys.Local %v", dir, got, local)
	}
}

// TestBothCalls runs a file's life (CREATE, WRITE, RELEASE, LOOKUP,
// GETATTR, OPEN, READ, RELEASE, UNLINK, FORGET) with raw calls and with
// the scheduler's, and checks both leave the host and the guest's view
// alike.
func TestBothCalls(t *testing.T) {
	for _, sys := range []rawsys.Calls{rawsys.Raw(), {}} {
		t.Run(fmt.Sprintf("raw=%v", sys.IsRaw()), func(t *testing.T) {
			c := newClient(t, false)
			c.s.fs.sys, c.s.fs.t.sys = sys, sys
			data := bytes.Repeat([]byte("0123456789abcdef"), 300) // spans pages
			co, errno := c.create(root, "life", unix.O_WRONLY, 0o640)
			c.mustOK("CREATE", errno)
			if n, errno := c.write(co.NodeId, co.Fh, 0, data); errno != 0 || int(n) != len(data) {
				t.Fatalf("WRITE: %d, %v", n, errno)
			}
			c.release(co.NodeId, co.Fh)
			if got, err := os.ReadFile(filepath.Join(c.dir, "life")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("host file: %v, %d bytes", err, len(got))
			}
			e := c.mustLookup(root, "life")
			if a, errno := c.getattr(e.NodeId); errno != 0 || a.Size != uint64(len(data)) || a.Mode&0o777 != 0o640 {
				t.Fatalf("GETATTR: %+v, %v", a, errno)
			}
			fh, errno := c.open(e.NodeId, unix.O_RDONLY)
			c.mustOK("OPEN", errno)
			if got, errno := c.read(e.NodeId, fh, 100, 5000); errno != 0 || !bytes.Equal(got, data[100:]) {
				t.Fatalf("READ: %d bytes, %v", len(got), errno)
			}
			c.release(e.NodeId, fh)
			errno, _ = c.call(opUnlink, root, nil, []byte("life\x00"))
			c.mustOK("UNLINK", errno)
			if _, err := os.Lstat(filepath.Join(c.dir, "life")); !os.IsNotExist(err) {
				t.Fatalf("after UNLINK: %v", err)
			}
			if _, errno := c.lookup(root, "life"); errno != unix.ENOENT {
				t.Fatalf("LOOKUP after UNLINK: %v", errno)
			}
		})
	}
}
