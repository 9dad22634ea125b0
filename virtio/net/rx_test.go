package net

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// rxFrame is what the driver should find for one delivered frame.
type rxFrame struct {
	frame []byte   // as sent by the backend
	lens  []uint32 // used length of each chain it spans
}

func TestRX(t *testing.T) {
	f1012 := frameOf(1012, 1)
	f2512 := frameOf(2512, 2)
	f112 := frameOf(112, 3)
	for _, tc := range []struct {
		name   string
		feat   uint64
		chains [][]virtiotest.Buf
		frames [][]byte
		// skipped chains come back with length 0 before the frames;
		// want lists the frames the driver receives, in order.
		skipped int
		want    []rxFrame
		dropped uint64
	}{
		{
			name:   "one big buffer",
			chains: [][]virtiotest.Buf{{w(65562)}},
			frames: [][]byte{f1012},
			want:   []rxFrame{{f1012, []uint32{1012}}},
		},
		{
			name:   "header and data descriptors",
			chains: [][]virtiotest.Buf{{w(HeaderSize), w(2000)}},
			frames: [][]byte{f1012},
			want:   []rxFrame{{f1012, []uint32{1012}}},
		},
		{
			name:   "exact fit",
			chains: [][]virtiotest.Buf{{w(1012)}},
			frames: [][]byte{f1012},
			want:   []rxFrame{{f1012, []uint32{1012}}},
		},
		{
			name:    "too small without mergeable: dropped, chain kept for the next frame",
			chains:  [][]virtiotest.Buf{{w(1000)}},
			frames:  [][]byte{f1012, f112},
			want:    []rxFrame{{f112, []uint32{112}}},
			dropped: 1,
		},
		{
			name:    "chain smaller than the header returned empty",
			chains:  [][]virtiotest.Buf{{w(HeaderSize - 1)}, {w(2048)}},
			frames:  [][]byte{f1012},
			skipped: 1,
			want:    []rxFrame{{f1012, []uint32{1012}}},
		},
		{
			name:   "mergeable across 3 chains",
			feat:   mergeable,
			chains: [][]virtiotest.Buf{{w(1000)}, {w(1000)}, {w(1000)}},
			frames: [][]byte{f2512},
			want:   []rxFrame{{f2512, []uint32{1000, 1000, 512}}},
		},
		{
			name:   "mergeable, one chain enough",
			feat:   mergeable,
			chains: [][]virtiotest.Buf{{w(4096)}, {w(4096)}},
			frames: [][]byte{f1012, f2512},
			want:   []rxFrame{{f1012, []uint32{1012}}, {f2512, []uint32{2512}}},
		},
		{
			name: "mergeable, num_buffers split across descriptors",
			feat: mergeable,
			// Byte 10 of the header is in the first descriptor, byte 11 in
			// the second.
			chains: [][]virtiotest.Buf{{w(11), w(500)}, {w(600)}},
			frames: [][]byte{f1012},
			want:   []rxFrame{{f1012, []uint32{511, 501}}},
		},
		{
			name:    "mergeable, tiny first chain skipped",
			feat:    mergeable,
			chains:  [][]virtiotest.Buf{{w(4)}, {w(100)}, {w(100)}},
			frames:  [][]byte{f112},
			skipped: 1,
			want:    []rxFrame{{f112, []uint32{100, 12}}},
		},
		{
			name:   "mergeable, many frames over many chains",
			feat:   mergeable | eventIdx,
			chains: repeatChains(20, w(1536)),
			frames: [][]byte{f2512, f112, f2512, f1012, frameOf(9000, 4)},
			want: []rxFrame{
				{f2512, []uint32{1536, 976}}, {f112, []uint32{112}}, {f2512, []uint32{1536, 976}},
				{f1012, []uint32{1012}}, {frameOf(9000, 4), []uint32{1536, 1536, 1536, 1536, 1536, 1320}},
			},
		},
		{
			name:   "largest frame",
			feat:   mergeable,
			chains: repeatChains(17, w(4096)),
			frames: [][]byte{frameOf(bufSize, 5)},
			want:   []rxFrame{{frameOf(bufSize, 5), append(repeatLen(16, 4096), bufSize-16*4096)}},
		},
		{
			name:    "backend frame shorter than a header",
			chains:  [][]virtiotest.Buf{{w(2048)}},
			frames:  [][]byte{frameOf(HeaderSize-1, 6), f112},
			want:    []rxFrame{{f112, []uint32{112}}},
			dropped: 1,
		},
		{
			name:    "backend frame too long",
			feat:    mergeable,
			chains:  repeatChains(20, w(4096)),
			frames:  [][]byte{frameOf(bufSize+1, 7), f112},
			want:    []rxFrame{{f112, []uint32{112}}},
			dropped: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, baseFeat|tc.feat, Options{})
			var heads []uint16
			for _, c := range tc.chains {
				head, err := h.rx.Add(c...)
				if err != nil {
					t.Fatal(err)
				}
				heads = append(heads, head)
			}
			h.activate()
			h.deliver(tc.frames...)
			u := drainUsed(h.rx)
			next := 0
			take := func() (used, bool) {
				if next >= len(u) {
					return used{}, false
				}
				next++
				return u[next-1], true
			}
			for i := range tc.skipped {
				e, ok := take()
				if !ok || e.n != 0 || e.head != heads[i] {
					t.Fatalf("used[%d] = %v, want chain %d returned empty", i, e, heads[i])
				}
			}
			for i, want := range tc.want {
				var got []byte
				for j, wl := range want.lens {
					e, ok := take()
					if !ok {
						t.Fatalf("frame %d: missing used element %d (%d used)", i, j, len(u))
					}
					if e.n != wl {
						t.Errorf("frame %d chain %d: used length %d, want %d", i, j, e.n, wl)
					}
					got = append(got, h.rx.WrittenBytes(e.head, e.n)...)
				}
				nb := uint16(len(want.lens))
				if !bytes.Equal(got, withNumBuffers(want.frame, nb)) {
					t.Errorf("frame %d: %d bytes differ from the %d sent (num_buffers %d, want %d)",
						i, len(got), len(want.frame), binary.LittleEndian.Uint16(got[hdrNumBuffers:]), nb)
				}
			}
			if next != len(u) {
				t.Errorf("%d extra used elements: %v", len(u)-next, u[next:])
			}
			s := h.dev.Stats()
			if s.RxFrames != uint64(len(tc.want)) || s.RxDropped != tc.dropped {
				t.Errorf("stats %+v, want %d frames and %d dropped", s, len(tc.want), tc.dropped)
			}
			if len(tc.want) > 0 && h.irq.Count() == 0 {
				t.Error("no interrupt")
			}
		})
	}
}

func repeatChains(n int, b virtiotest.Buf) [][]virtiotest.Buf {
	var out [][]virtiotest.Buf
	for range n {
		out = append(out, []virtiotest.Buf{b})
	}
	return out
}

func repeatLen(n int, l uint32) []uint32 {
	var out []uint32
	for range n {
		out = append(out, l)
	}
	return out
}

// With no (or too few) buffers posted the frame waits, the backend is not
// read again, and once the driver posts buffers and notifies, the waiting
// frame and the next arrive in order.
func TestRXWaitsForBuffers(t *testing.T) {
	for _, feat := range []uint64{0, eventIdx, mergeable, mergeable | eventIdx} {
		t.Run(fmt.Sprintf("features=%#x", feat), func(t *testing.T) {
			h := newHarness(t, baseFeat|feat, Options{})
			a, b := frameOf(1200, 1), frameOf(800, 2)
			merge := feat&mergeable != 0
			var heads []uint16
			if merge {
				// A chain too small for a: held while waiting.
				head, _ := h.rx.Add(w(1000))
				heads = append(heads, head)
			}
			h.activate()
			reads := h.be.readCalls()
			h.send(a)
			h.send(b)
			h.rxIdle()
			if got := h.be.readCalls(); got != reads {
				t.Fatalf("%d more Reads while the frame waits, want none: b was consumed", got-reads)
			}
			if feat&eventIdx != 0 {
				// avail_event must point past the held chains, or the
				// driver's next buffer would not notify.
				if ev := h.rx.AvailEvent(); ev != uint16(len(heads)) {
					t.Errorf("avail_event = %d while waiting, want %d", ev, len(heads))
				}
			} else if f := h.rx.UsedFlags(); f&virtio.UsedFlagNoNotify != 0 {
				t.Errorf("used flags %#x while waiting: notifications off", f)
			}
			if u := drainUsed(h.rx); len(u) != 0 {
				t.Fatalf("used %v before buffers were posted", u)
			}

			// Mergeable: a takes the held chain and 200 bytes of the next,
			// b a chain of its own. Otherwise each takes one big chain.
			size := 2048
			if merge {
				size = 1000
			}
			for range 2 {
				head, _ := h.rx.Add(w(size))
				heads = append(heads, head)
			}
			n := h.be.readCalls()
			h.rxn.Notify()
			h.be.waitReads(t, n+2)

			want := []used{{heads[0], 1200}, {heads[1], 800}}
			if merge {
				want = []used{{heads[0], 1000}, {heads[1], 200}, {heads[2], 800}}
			}
			u := drainUsed(h.rx)
			if fmt.Sprint(u) != fmt.Sprint(want) {
				t.Fatalf("used %v, want %v", u, want)
			}
			var gotA []byte
			for _, e := range u[:len(u)-1] {
				gotA = append(gotA, h.rx.WrittenBytes(e.head, e.n)...)
			}
			if !bytes.Equal(gotA, withNumBuffers(a, uint16(len(u)-1))) {
				t.Error("first frame differs")
			}
			if got := h.rx.WrittenBytes(u[len(u)-1].head, 800); !bytes.Equal(got, withNumBuffers(b, 1)) {
				t.Error("second frame differs")
			}
			if s := h.dev.Stats(); s.RxFrames != 2 || s.RxDropped != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// While frames flow, RX keeps driver notifications off (without
// EVENT_IDX): buffers the driver posts are found by Pop anyway.
func TestRXNotifyOffWhileFlowing(t *testing.T) {
	h := newHarness(t, baseFeat, Options{})
	h.rx.Add(w(2048))
	h.activate()
	if f := h.rx.UsedFlags(); f&virtio.UsedFlagNoNotify == 0 {
		t.Errorf("used flags %#x: notifications on while reading the backend", f)
	}
}

// A malformed RX queue fails the device.
func TestRXMalformed(t *testing.T) {
	h := newHarness(t, baseFeat, Options{})
	head, _ := h.rx.Add(w(2048))
	// Point the buffer below RAM.
	h.rx.SetDesc(head, testBase-4096, 2048, virtio.DescFlagWrite, 0)
	h.activate()
	h.send(frameOf(100, 1))
	select {
	case err := <-h.fails:
		if !errorsIs(err, virtio.ErrMalformed) {
			t.Errorf("Fail(%v), want ErrMalformed", err)
		}
	case <-timeout():
		t.Fatal("no Fail for a malformed queue")
	}
	if u := drainUsed(h.rx); len(u) != 0 {
		t.Errorf("used %v from a failed queue", u)
	}
}

// With a TryReader backend, frames already queued when the worker looks
// are placed in one burst and signalled with one interrupt, at most
// maxRXBurst frames to an interrupt; a lone frame is signalled at once.
func TestRXBurstOneInterrupt(t *testing.T) {
	tests := []struct {
		name      string
		queued    int    // frames on the backend before the device starts
		wantIRQs  uint64 // interrupts once they are all placed
		reads     int    // blocking Reads by then: one after each signal
		eventIdx  bool
		usedEvent uint16
	}{
		{"one burst", 5, 1, 1, false, 0},
		// 16 tried, signal; 1 read and 15 tried, signal; 1 read and
		// 7 tried, signal, the Read that waits.
		{"bounded bursts", 2*maxRXBurst + 8, 3, 3, false, 0},
		{"event idx crossed", 5, 1, 1, true, 3},
		{"event idx not crossed", 5, 0, 1, true, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			feat := uint64(baseFeat | mergeable)
			if tc.eventIdx {
				feat |= eventIdx
			}
			h := newHarness(t, feat, Options{})
			h.dev = New(tryBackend{h.be}, Options{Logf: t.Logf})
			if tc.eventIdx {
				h.rx.SetUsedEvent(tc.usedEvent)
			}
			for range tc.queued {
				h.rx.Add(w(2048))
			}
			for i := range tc.queued {
				h.send(frameOf(100+i, byte(i)))
			}
			base := h.be.readCalls()
			h.activate()
			// The last Read is the one that waits: all placed by then,
			// and the backend's mutex orders it before what follows.
			h.be.waitReads(t, base+tc.reads)
			if u := drainUsed(h.rx); len(u) != tc.queued {
				t.Fatalf("%d frames placed, want %d", len(u), tc.queued)
			}
			if got := h.irq.Count(); got != tc.wantIRQs {
				t.Errorf("%d interrupts for %d queued frames, want %d", got, tc.queued, tc.wantIRQs)
			}
			if tc.eventIdx {
				return
			}
			// A lone frame: signalled as soon as it is placed.
			h.rx.Add(w(2048))
			reads := h.be.readCalls()
			h.send(frameOf(60, 0x77))
			h.be.waitReads(t, reads+1)
			if got := h.irq.Count(); got != tc.wantIRQs+1 {
				t.Errorf("%d interrupts after a lone frame, want %d", got, tc.wantIRQs+1)
			}
		})
	}
}

// Out of buffers in the middle of a burst, the worker tells the driver
// about the frames it placed before it waits for more buffers: the driver
// posts buffers only once it has seen those, so a missing interrupt
// there would stall receiving for good.
func TestRXBurstSignalsBeforeWaitingForBuffers(t *testing.T) {
	h := newHarness(t, baseFeat|mergeable, Options{})
	h.dev = New(tryBackend{h.be}, Options{Logf: t.Logf})
	for range 2 {
		h.rx.Add(w(2048))
	}
	for i := range 5 {
		h.send(frameOf(100+i, byte(i)))
	}
	if err := h.dev.Activate(h.env()); err != nil {
		t.Fatal(err)
	}
	h.txIdle()
	h.rxIdle() // waiting on its notifier for buffers
	if u := drainUsed(h.rx); len(u) != 2 {
		t.Fatalf("%d frames placed in 2 buffers, want 2", len(u))
	}
	if got := h.irq.Count(); got != 1 {
		t.Fatalf("%d interrupts before waiting for buffers, want 1", got)
	}
	// The rest follow once the driver posts buffers.
	for range 3 {
		h.rx.Add(w(2048))
	}
	reads := h.be.readCalls()
	h.rxn.Notify()
	h.be.waitReads(t, reads+1)
	if u := drainUsed(h.rx); len(u) != 3 {
		t.Fatalf("%d more frames placed, want 3", len(u))
	}
	if got := h.irq.Count(); got != 2 {
		t.Errorf("%d interrupts in all, want 2", got)
	}
}

// A driver ring smaller than the device's maximum (Linux shrinks its
// rings under memory pressure) whose every chain together is too small
// for a frame: the frame is dropped and the chains kept for the next
// one, where waiting for more buffers would wait for ever (the driver
// has none left to post).
func TestRXFrameLargerThanDriverRing(t *testing.T) {
	h := newHarness(t, baseFeat|mergeable, Options{QueueSize: 2 * testQSize})
	for range testQSize {
		if _, err := h.rx.Add(w(100)); err != nil {
			t.Fatal(err)
		}
	}
	h.activate()
	f112 := frameOf(112, 3)
	h.deliver(frameOf(bufSize, 1), f112)
	u := drainUsed(h.rx)
	var got []byte
	for _, e := range u {
		got = append(got, h.rx.WrittenBytes(e.head, e.n)...)
	}
	if len(u) != 2 || !bytes.Equal(got, withNumBuffers(f112, 2)) {
		t.Fatalf("used %v: want the 112-byte frame in two chains", u)
	}
	if s := h.dev.Stats(); s.RxFrames != 1 || s.RxDropped != 1 {
		t.Errorf("stats %+v, want 1 frame and 1 dropped", s)
	}
}

// The header's flags reach the driver only with GUEST_CSUM (virtio v1.2
// §5.1.6.4.1: otherwise the device sets them to 0); Linux's TAP marks
// frames DATA_VALID whatever the offloads.
func TestRXFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		feat uint64
		want byte
	}{
		{"without GUEST_CSUM", 0, 0},
		{"with GUEST_CSUM", 1 << FeatureGuestCsum, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, baseFeat|tc.feat, Options{})
			if _, err := h.rx.Add(w(4096)); err != nil {
				t.Fatal(err)
			}
			h.activate()
			f := frameOf(300, 1)
			f[hdrFlags] = 2 // VIRTIO_NET_HDR_F_DATA_VALID
			h.deliver(f)
			u := drainUsed(h.rx)
			if len(u) != 1 {
				t.Fatalf("used %v", u)
			}
			got := h.rx.WrittenBytes(u[0].head, u[0].n)
			want := withNumBuffers(f, 1)
			want[hdrFlags] = tc.want
			if !bytes.Equal(got, want) {
				t.Errorf("header % x, want % x", got[:HeaderSize], want[:HeaderSize])
			}
		})
	}
}
