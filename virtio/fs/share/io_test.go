package share

import (
	"bytes"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

func TestAdvance(t *testing.T) {
	data := []byte("abcdefghijkl")
	for _, tt := range []struct {
		n    int
		want []string
	}{
		{0, []string{"abc", "defg", "hijkl"}},
		{2, []string{"c", "defg", "hijkl"}},
		{3, []string{"defg", "hijkl"}},
		{5, []string{"fg", "hijkl"}},
		{7, []string{"hijkl"}},
		{11, []string{"l"}},
		{12, []string{}},
	} {
		iov := [][]byte{data[0:3], data[3:7], data[7:12]}
		got := advance(iov, tt.n)
		var s []string
		for _, b := range got {
			s = append(s, string(b))
		}
		if !slices.Equal(s, tt.want) {
			t.Errorf("advance(%d) = %q, want %q", tt.n, s, tt.want)
		}
		if string(data) != "abcdefghijkl" {
			t.Fatalf("advance(%d) changed the bytes: %q", tt.n, data)
		}
	}
}

// A READ whose reply buffers split the file's data: the read fills the
// first buffer and part of the second, and the next read, from where the
// first stopped, finds the end.
func TestReadAcrossBuffers(t *testing.T) {
	c := newClient(t, false)
	e := c.mustLookup(root, "f")
	fh, errno := c.open(e.NodeId, unix.O_RDONLY)
	c.mustOK("open f", errno)
	for _, first := range []int{outHeaderSize, outHeaderSize + 1, outHeaderSize + 4, outHeaderSize + 13} {
		out := virtio.Buffers{make([]byte, first), make([]byte, 7), make([]byte, 4096)}
		req := fusetest.Encode(fusetest.OpRead, 21, e.NodeId, fuse.ReadIn{Fh: fh, Size: 4096})
		n := c.s.Handle(virtio.Buffers{req}, out)
		flat := make([]byte, out.Len())
		out.ReadAt(flat, 0)
		h, body, err := fusetest.Parse(flat[:n])
		if err != nil || h.Status != 0 {
			t.Fatalf("first buffer %d: %v, status %d", first, err, h.Status)
		}
		if !bytes.Equal(body, []byte("hello, world\n")) {
			t.Errorf("first buffer %d: read %q", first, body)
		}
	}
}
