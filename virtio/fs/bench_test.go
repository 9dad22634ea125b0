package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
	"github.com/vmm-dev/vmm/virtio/fs/share"
)

// benchFileMiB is the size of the file the read benchmarks cycle over:
// small enough to stay in the host's page cache, as the share's file
// does in make bench's sequential read.
const benchFileMiB = 8

// BenchmarkRead is the share's sequential read as the guest's FUSE
// driver sends it (make bench, "shared dir: sequential read"): 1 MiB
// READs, one at a time, each reply into 256 page-sized buffers through
// an indirect table. It includes the test driver's own work (building
// each request and its chain, but not reading the reply back);
// BenchmarkPreadv is the host's copy alone, so the difference bounds
// the device's cost per request.
func BenchmarkRead(b *testing.B) {
	r := newRig(b, true, false)
	r.init(b)
	data := make([]byte, benchFileMiB<<20)
	if err := os.WriteFile(filepath.Join(r.dir, "big"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	e := r.lookup(b, root, "big")
	errno, body := r.call(b, fusetest.Encode(fusetest.OpOpen, r.next(), e.NodeId, fuse.OpenIn{Flags: unix.O_RDONLY}), 4096)
	var oo fuse.OpenOut
	if errno != 0 || fusetest.Decode(body, &oo) != nil {
		b.Fatalf("OPEN: %v", errno)
	}
	drv, n := r.drv[requestQueue], r.n[requestQueue]
	drv.DropWritten = true
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := uint64(i%benchFileMiB) << 20
		req := fusetest.Encode(fusetest.OpRead, r.next(), e.NodeId, fuse.ReadIn{Fh: oo.Fh, Offset: off, Size: 1 << 20})
		if _, err := drv.AddIndirect(split(req, share.MaxReply, 4096)...); err != nil {
			b.Fatal(err)
		}
		start := r.irq.Count()
		n.Notify()
		deadline := time.Now().Add(wait)
		for r.irq.Count() == start {
			if time.Now().After(deadline) {
				b.Fatal("READ not completed")
			}
			r.irq.Wait(time.Millisecond)
		}
		if _, used, ok := drv.Used(); !ok || used != 16+1<<20 {
			b.Fatalf("READ: used %d, ok %v", used, ok)
		}
	}
}

// BenchmarkPreadv is BenchmarkRead's copy without the device: one
// preadv of 1 MiB into 256 page-sized buffers.
func BenchmarkPreadv(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big")
	if err := os.WriteFile(path, make([]byte, benchFileMiB<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	mem := make([]byte, 1<<20)
	iov := make([][]byte, 256)
	for i := range iov {
		iov[i] = mem[i<<12 : (i+1)<<12]
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n, err := unix.Preadv(int(f.Fd()), iov, int64(i%benchFileMiB)<<20); err != nil || n != 1<<20 {
			b.Fatalf("preadv: %d, %v", n, err)
		}
	}
}
