package share

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
)

// FuzzHandle feeds a fresh server, after INIT, a sequence of up to 16
// requests of any shape: stream is cut into requests by each one's own
// length field (the rest of the stream when it lies), each request into
// buffers whose sizes are the bytes of cuts, and each reply goes to
// outLen bytes in two buffers. Whatever the input, Handle must not
// panic, must report no more than it was given and write nothing past
// what it reports, must answer with a well-formed reply or none, and
// must never reach outside the shared directory: nothing next to it may
// change and every descriptor it holds must name a file inside it. The
// seeds in testdata/fuzz/FuzzHandle walk through the symlinks that point
// out of the share, create and write files, and send malformed requests.
func FuzzHandle(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream, cuts []byte, outLen uint16) {
		parent := t.TempDir()
		dir := populate(t, parent)
		s, err := New(Options{Dir: dir, Logf: func(string, ...any) {}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := &client{t: t, s: s, log: &logSink{}}
		c.init()
		for i := 0; i < 16 && len(stream) > 0; i++ {
			n := len(stream)
			if len(stream) >= 4 {
				if l := int(binary.LittleEndian.Uint32(stream)); l > 0 && l <= len(stream) {
					n = l
				}
			}
			req := stream[:n]
			stream = stream[n:]
			var in virtio.Buffers
			for _, cut := range cuts {
				k := min(int(cut), len(req))
				in = append(in, req[:k:k])
				req = req[k:]
			}
			in = append(in, req)
			whole := bytes.Repeat([]byte{0xee}, int(outLen))
			third := len(whole) / 3
			got := s.Handle(in, virtio.Buffers{whole[:third], whole[third:]})
			if got < 0 || got > len(whole) {
				t.Fatalf("Handle reported %d bytes of %d", got, len(whole))
			}
			if !bytes.Equal(whole[got:], bytes.Repeat([]byte{0xee}, len(whole)-got)) {
				t.Fatalf("Handle reported %d bytes but wrote past them", got)
			}
			if got > 0 {
				h, _, err := fusetest.Parse(whole[:got])
				if err != nil {
					t.Fatal(err)
				}
				if h.Status < -4095 {
					t.Fatalf("reply status %d is no errno", h.Status)
				}
			}
		}
		checkConfined(t, s, parent, dir)
	})
}
