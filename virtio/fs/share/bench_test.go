package share

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// BenchmarkSmallFile is one file of make bench's small-file workload as
// the guest's FUSE driver sends it to the server: CREATE, WRITE of 1 KiB,
// RELEASE (create), LOOKUP and GETATTR (stat), OPEN, READ, RELEASE (read
// back; no FLUSH, as the server's FOPEN_NOFLUSH tells the guest), and
// FORGET once the guest drops the inode, plus an UNLINK so that the
// directory does not grow. It measures the server
// alone (no queue, no guest memory), with the request encoding of the
// test's own driver in each operation. Its system calls per file (strace
// -c over two -test.benchtime counts) are the figure that carries over
// to a nested guest, where wall time does not.
func BenchmarkSmallFile(b *testing.B) {
	c := newClient(b, false)
	data := make([]byte, 1024)
	out := make([]byte, 64<<10)
	var unique uint64
	call := func(opcode uint32, node uint64, in any, payloads ...[]byte) []byte {
		unique++
		n := c.s.Handle(virtio.Buffers{fusetest.Encode(opcode, unique, node, in, payloads...)}, virtio.Buffers{out})
		h, body, err := fusetest.Parse(out[:n])
		if err != nil || h.Status != 0 {
			b.Fatalf("opcode %d: %v %v", opcode, err, syscall.Errno(-h.Status))
		}
		return body
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fusetest.Name(fmt.Sprintf("f%06d", i%1000))
		var co fuse.CreateOut
		if err := fusetest.Decode(call(fusetest.OpCreate, root, fuse.CreateIn{Flags: syscall.O_WRONLY | syscall.O_CREAT | syscall.O_EXCL, Mode: 0o644}, name), &co); err != nil {
			b.Fatal(err)
		}
		node := co.NodeId
		call(fusetest.OpWrite, node, fuse.WriteIn{Fh: co.Fh, Size: uint32(len(data))}, data)
		call(fusetest.OpRelease, node, fuse.ReleaseIn{Fh: co.Fh})
		call(fusetest.OpLookup, root, nil, name)
		call(fusetest.OpGetattr, node, fuse.GetAttrIn{})
		var oo fuse.OpenOut
		if err := fusetest.Decode(call(fusetest.OpOpen, node, fuse.OpenIn{Flags: syscall.O_RDONLY}), &oo); err != nil {
			b.Fatal(err)
		}
		call(fusetest.OpRead, node, fuse.ReadIn{Fh: oo.Fh, Size: 4096})
		call(fusetest.OpRelease, node, fuse.ReleaseIn{Fh: oo.Fh})
		call(fusetest.OpUnlink, root, nil, name)
		unique++
		c.s.Handle(virtio.Buffers{fusetest.Encode(fusetest.OpForget, unique, node, fuse.ForgetIn{Nlookup: 2})}, nil)
	}
}
