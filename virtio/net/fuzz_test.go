package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// FuzzTX: a TX chain cut from data at the lengths in layout (direct or
// indirect, with some writable buffers after) is sent whole, header
// included, when it is at least a header and fits the gather buffer, and
// dropped otherwise; either way it is completed with length 0, nothing
// panics and nothing outside RAM is touched. writable's top bit gives
// the backend WriteVectors (for chains of up to 64 buffers; longer ones
// are gathered).
func FuzzTX(f *testing.F) {
	f.Add(frameOf(60, 1), []byte{12}, false, uint8(0))
	f.Add(frameOf(1514, 2), []byte{5, 1, 9, 200}, true, uint8(2))
	f.Add([]byte("short"), []byte{2}, false, uint8(1))
	f.Add(frameOf(1514, 3), []byte{5, 1, 9, 200}, false, uint8(0x81))
	f.Fuzz(func(t *testing.T, data, layout []byte, indirect bool, writable uint8) {
		if len(data) > bufSize+64 {
			data = data[:bufSize+64]
		}
		var bufs []virtiotest.Buf
		rest := data
		for _, l := range layout {
			if len(bufs) == 100 {
				break
			}
			n := min(int(l), len(rest))
			bufs = append(bufs, r(rest[:n]))
			rest = rest[n:]
		}
		bufs = append(bufs, r(rest))
		for range writable % 4 {
			bufs = append(bufs, w(17))
		}
		s := newSyncDevOn(t, baseFeat, 128<<10, writable&0x80 != 0)
		add := s.tx.Add
		if indirect {
			add = s.tx.AddIndirect
		}
		head, err := add(bufs...)
		if errors.Is(err, virtiotest.ErrNoSpace) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !s.d.drainTX(s.d.txq) || s.fails != 0 {
			t.Fatal("drainTX failed on a well-formed queue")
		}
		ok := len(data) >= HeaderSize && len(data) <= bufSize
		switch {
		case ok && (s.be.writes != 1 || !bytes.Equal(s.be.last, data)):
			t.Fatalf("%d writes, last %d bytes; want the %d bytes gathered", s.be.writes, len(s.be.last), len(data))
		case !ok && s.be.writes != 0:
			t.Fatalf("a %d-byte chain was written", len(data))
		}
		st := s.d.Stats()
		if ok != (st.TxFrames == 1) || ok == (st.TxDropped == 1) {
			t.Fatalf("stats %+v for a %d-byte chain", st, len(data))
		}
		u := drainUsed(s.tx)
		if len(u) != 1 || u[0] != (used{head, 0}) {
			t.Fatalf("used %v, want [{%d 0}]", u, head)
		}
		if err := s.mem.CheckGuards(); err != nil {
			t.Fatal(err)
		}
	})
}

// rxModel is what placeRX should do with a frame of n bytes (header
// included) and chains of the given writable capacities, written
// independently of it.
type rxModel struct {
	skipped  int      // leading chains too small for a header, returned empty
	lens     []uint32 // used lengths of the chains the frame went into
	placed   bool
	dropped  bool
	pending  bool
	consumed int // chains popped and not returned
}

func modelRX(caps []int, n int, merge bool, maxHeld int) rxModel {
	var m rxModel
	remaining := n
	for _, c := range caps {
		if merge && len(m.lens) == maxHeld {
			m.dropped, m.lens = true, nil
			m.consumed = m.skipped
			return m
		}
		if len(m.lens) == 0 && c < HeaderSize {
			m.skipped++
			continue
		}
		if !merge {
			if c < n {
				m.dropped, m.consumed = true, m.skipped
				return m
			}
			m.placed, m.lens, m.consumed = true, []uint32{uint32(n)}, m.skipped+1
			return m
		}
		k := min(c, remaining)
		m.lens = append(m.lens, uint32(k))
		remaining -= k
		if remaining == 0 {
			m.placed, m.consumed = true, m.skipped+len(m.lens)
			return m
		}
	}
	if merge && len(m.lens) == maxHeld {
		m.dropped, m.lens, m.consumed = true, nil, m.skipped
		return m
	}
	m.pending, m.consumed = true, m.skipped+len(m.lens)
	return m
}

// FuzzRX: a frame of fuzzed length placed into RX chains whose buffer
// sizes come from sizes (two bytes per buffer: 14 bits of size, the top
// bit chaining the next buffer to this one), with and without mergeable
// buffers. The frame lands intact with the right num_buffers, or is
// dropped, or waits (and then lands once a big enough chain is posted),
// exactly as an independent model says; nothing outside RAM is touched.
func FuzzRX(f *testing.F) {
	f.Add(uint32(1000), []byte{0x00, 0x08}, false)
	f.Add(uint32(2500), []byte{0xe8, 0x03, 0xe8, 0x03, 0xe8, 0x03}, true)
	f.Add(uint32(100), []byte{0x04, 0x00, 0x0b, 0x80, 0x00, 0x02}, true)
	f.Add(uint32(65600), []byte{0xff, 0x3f, 0xff, 0x3f}, true)
	f.Add(uint32(500), []byte{0x90, 0x01}, false)
	f.Fuzz(func(t *testing.T, frameLen uint32, sizes []byte, merge bool) {
		n := HeaderSize + int(frameLen%(maxFrame+1))
		feat := uint64(baseFeat)
		if merge {
			feat |= mergeable
		}
		s := newSyncDev(t, feat, 512<<10)

		// Build the chains: at most 255 descriptors, leaving one for the
		// chain posted if the frame waits.
		var chains [][]virtiotest.Buf
		var cur []virtiotest.Buf
		ndesc := 0
		for i := 0; i+1 < len(sizes) && ndesc < 255; i += 2 {
			v := binary.LittleEndian.Uint16(sizes[i:])
			cur = append(cur, w(max(1, int(v&0x3fff))))
			ndesc++
			if v&0x8000 == 0 {
				chains = append(chains, cur)
				cur = nil
			}
		}
		if cur != nil {
			chains = append(chains, cur)
		}
		var heads []uint16
		var caps []int
		for _, c := range chains {
			head, err := s.rx.Add(c...)
			if errors.Is(err, virtiotest.ErrNoSpace) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, b := range c {
				total += b.WriteLen
			}
			heads = append(heads, head)
			caps = append(caps, total)
		}

		frame := frameOf(n, byte(frameLen))
		s.setPending(frame)
		want := modelRX(caps, n, merge, testQSize)
		placed, err := s.d.placeRX(s.d.rxq)
		if err != nil {
			t.Fatalf("placeRX on a well-formed queue: %v", err)
		}
		if placed == want.pending {
			t.Fatalf("placed = %v, model %+v", placed, want)
		}
		if want.pending {
			// Post a chain that surely holds the rest and try again.
			head, err := s.rx.Add(w(n))
			if err != nil {
				t.Skip(err)
			}
			heads = append(heads, head)
			caps = append(caps, n)
			want = modelRX(caps, n, merge, testQSize)
			if placed, err = s.d.placeRX(s.d.rxq); err != nil || !placed {
				t.Fatalf("placeRX after posting a big chain = %v, %v; model %+v", placed, err, want)
			}
		}
		if s.fails != 0 {
			t.Fatal("Fail called")
		}

		u := drainUsed(s.rx)
		wantUsed := want.skipped + len(want.lens)
		if len(u) != wantUsed {
			t.Fatalf("%d used elements %v, model %+v", len(u), u, want)
		}
		for i := range want.skipped {
			if u[i] != (used{heads[i], 0}) {
				t.Fatalf("used[%d] = %v, want chain %d returned empty", i, u[i], heads[i])
			}
		}
		var got []byte
		for j, l := range want.lens {
			e := u[want.skipped+j]
			if e != (used{heads[want.skipped+j], l}) {
				t.Fatalf("used[%d] = %v, want {%d %d}", want.skipped+j, e, heads[want.skipped+j], l)
			}
			got = append(got, s.rx.WrittenBytes(e.head, e.n)...)
		}
		st := s.d.Stats()
		if want.placed {
			if !bytes.Equal(got, withNumBuffers(frame, uint16(len(want.lens)))) {
				t.Fatalf("frame of %d bytes over %d chains differs", n, len(want.lens))
			}
			if st.RxFrames != 1 || st.RxDropped != 0 {
				t.Fatalf("stats %+v, want 1 frame", st)
			}
		}
		if want.dropped && (st.RxFrames != 0 || st.RxDropped != 1) {
			t.Fatalf("stats %+v, want 1 dropped", st)
		}
		// Dropped frames leave their chains to the next frame: the queue
		// hands out exactly the chains not consumed.
		s.setPending(frameOf(HeaderSize, 0))
		left := 0
		for {
			ok, err := s.d.rxq.Pop(&s.d.rx.chain)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			left++
		}
		if left != len(heads)-want.consumed {
			t.Fatalf("%d chains left in the ring, want %d (model %+v)", left, len(heads)-want.consumed, want)
		}
		if err := s.mem.CheckGuards(); err != nil {
			t.Fatal(err)
		}
	})
}
