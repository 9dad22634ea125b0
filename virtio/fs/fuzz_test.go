package fs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// FuzzRequest sends one request of any bytes through the device, after
// INIT, laid out in readable buffers of piece bytes (at least 1) and
// replyLen writable bytes, directly or through an indirect table.
// Whatever the input, the device must complete the chain without
// failing, report no more than the writable bytes, write a well-formed
// reply or none, and change nothing outside the shared directory (the
// server's own fuzz target, share.FuzzHandle, checks its descriptors).
// The seeds in testdata/fuzz/FuzzRequest look up ".." and a symlink
// pointing out of the share, create "../secret", and send a truncated
// header and a READ asking for 4 GiB.
func FuzzRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, req []byte, piece uint16, replyLen uint16, indirect bool) {
		if len(req) > 64<<10 {
			req = req[:64<<10]
		}
		parent := t.TempDir()
		dir := filepath.Join(parent, "share")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(parent, "secret"), []byte("secret"), 0o600)
		os.Symlink("..", filepath.Join(dir, "up"))
		d, err := New(Config{Tag: "fuzz", Dir: dir, Logf: func(string, ...any) {}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r := newRigFor(t, d, dir, false)
		r.init(t)
		bufs := split(req, int(replyLen), max(int(piece), 1)%2048+1)
		if len(bufs) == 0 || len(bufs) > requestSize && !indirect || len(bufs) > 1024 {
			return // not a chain the driver can offer
		}
		reply := r.run(t, requestQueue, chain{bufs: bufs, indirect: indirect})[0]
		if len(reply) > 0 {
			if _, _, err := fusetest.Parse(reply); err != nil {
				t.Fatal(err)
			}
		}
		ents, _ := os.ReadDir(parent)
		if b, _ := os.ReadFile(filepath.Join(parent, "secret")); len(ents) != 2 || string(b) != "secret" {
			t.Fatalf("outside the share changed: %d entries, secret %q", len(ents), b)
		}
	})
}
