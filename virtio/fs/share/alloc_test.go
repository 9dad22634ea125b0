package share

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// A request allocates only what go-fuse's ProtocolServer does: its
// request (requestAlloc) and the request's cancel channel every time, a
// string for each name (LOOKUP), the buffer list it cuts from the
// reply for a READ or from the request for a WRITE whose data is not
// one buffer, and the box its buffer pool puts a payload buffer in when
// the reply's payload would straddle two of the driver's buffers. Handle's own copy of the request, its buffer lists, the
// READ's result and the buffers a short read or write leaves are reused.
// A change to go-fuse that allocates more fails here first: say why in
// the table.
func TestHandleAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops what it is given at random under the race detector")
	}
	c := newClient(t, false)
	out := make([]byte, 64<<10)
	var unique uint64 = 1000
	call := func(opcode uint32, node uint64, in any, payloads ...[]byte) []byte {
		unique += 2
		n := c.s.Handle(virtio.Buffers{fusetest.Encode(opcode, unique, node, in, payloads...)}, virtio.Buffers{out})
		h, body, err := fusetest.Parse(out[:n])
		if err != nil || h.Status != 0 {
			t.Fatalf("opcode %d: %v %v", opcode, err, syscall.Errno(-h.Status))
		}
		return body
	}
	var e fuse.EntryOut
	if err := fusetest.Decode(call(fusetest.OpLookup, root, nil, fusetest.Name("f")), &e); err != nil {
		t.Fatal(err)
	}
	var oo fuse.OpenOut
	if err := fusetest.Decode(call(fusetest.OpOpen, e.NodeId, fuse.OpenIn{Flags: syscall.O_RDWR}), &oo); err != nil {
		t.Fatal(err)
	}
	data := []byte("hello, world\n")
	write := fusetest.Encode(fusetest.OpWrite, 15, e.NodeId, fuse.WriteIn{Fh: oo.Fh, Size: uint32(len(data))}, data)
	split := len(write) - len(data) // the data in a buffer of its own, as a guest's page
	// A reply area larger than MaxReply, in two buffers: Handle cuts it.
	bigOut := virtio.Buffers{make([]byte, 4096), make([]byte, MaxReply)}
	for _, tt := range []struct {
		name string
		in   virtio.Buffers
		out  virtio.Buffers
		want float64
	}{
		{"GETATTR", virtio.Buffers{fusetest.Encode(fusetest.OpGetattr, 7, e.NodeId, fuse.GetAttrIn{})}, virtio.Buffers{out}, 2},
		{"STATFS", virtio.Buffers{fusetest.Encode(fusetest.OpStatfs, 13, root, nil)}, virtio.Buffers{out}, 2},
		{"LOOKUP", virtio.Buffers{fusetest.Encode(fusetest.OpLookup, 11, root, nil, fusetest.Name("f"))}, virtio.Buffers{out}, 3},
		// 4 KiB asked of a 13-byte file: a short read, then the end.
		{"READ to the file's end", virtio.Buffers{fusetest.Encode(fusetest.OpRead, 9, e.NodeId, fuse.ReadIn{Fh: oo.Fh, Size: 4096})}, virtio.Buffers{out}, 3},
		{"READ into a reply area Handle cuts", virtio.Buffers{fusetest.Encode(fusetest.OpRead, 17, e.NodeId, fuse.ReadIn{Fh: oo.Fh, Size: 4096})}, bigOut, 4},
		{"WRITE, data in one buffer with the header", virtio.Buffers{write}, virtio.Buffers{out}, 2},
		{"WRITE, data in a buffer of its own", virtio.Buffers{write[:split], write[split:]}, virtio.Buffers{out}, 3},
	} {
		if n := c.s.Handle(tt.in, tt.out); n == 0 {
			t.Fatalf("%s: no reply", tt.name)
		}
		if got := testing.AllocsPerRun(200, func() { c.s.Handle(tt.in, tt.out) }); got > tt.want {
			t.Errorf("%s: %v allocations per request, want at most go-fuse's %v", tt.name, got, tt.want)
		}
	}
}
