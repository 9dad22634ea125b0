package net

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// syncDev is a device whose worker steps (drainTX, placeRX) the test
// calls itself, without goroutines: for allocation tests and fuzzing.
type syncDev struct {
	d      *Device
	be     *memBackend
	mem    *virtiotest.Mem
	rx, tx *virtiotest.Driver
	fails  int
}

func newSyncDev(t testing.TB, features uint64, dataLen int) *syncDev {
	t.Helper()
	return newSyncDevOn(t, features, dataLen, false)
}

// newSyncDevOn is newSyncDev whose backend has WriteVectors if vec.
func newSyncDevOn(t testing.TB, features uint64, dataLen int, vec bool) *syncDev {
	t.Helper()
	s := &syncDev{be: &memBackend{}}
	var b Backend = s.be
	if vec {
		vb := &memVecBackend{}
		s.be, b = &vb.memBackend, vb
	}
	s.d = New(b, Options{Logf: func(string, ...any) {}})
	s.mem = virtiotest.NewMem(testBase, 2*dataLen+64<<10)
	var err error
	if s.rx, err = virtiotest.NewDriver(s.mem, testQSize, testBase, dataLen); err != nil {
		t.Fatal(err)
	}
	if s.tx, err = virtiotest.NewDriver(s.mem, testQSize, s.rx.End(), dataLen); err != nil {
		t.Fatal(err)
	}
	var qs []*virtio.Queue
	for i, drv := range []*virtiotest.Driver{s.rx, s.tx} {
		q := virtio.NewQueue(s.d.QueueMax()[i])
		if err := q.Setup(s.mem, drv.Config(), features&eventIdx != 0, true); err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	s.d.env = virtio.Env{
		Features:  features,
		Mem:       s.mem,
		Queues:    qs,
		Notifiers: []virtio.Notifier{virtiotest.NewNotifier(), virtiotest.NewNotifier()},
		Interrupt: func() {},
		Fail:      func(error) { s.fails++ },
	}
	s.d.rxq, s.d.txq = qs[QueueRX], qs[QueueTX]
	s.d.rx.mergeable = features&mergeable != 0
	return s
}

// setPending puts frame in the RX staging buffer as runRX would after a
// Read.
func (s *syncDev) setPending(frame []byte) {
	r := &s.d.rx
	r.frame = r.buf[:copy(r.buf, frame)]
	r.pending, r.off, r.count = true, 0, 0
	if !r.mergeable {
		binary.LittleEndian.PutUint16(r.frame[hdrNumBuffers:], 1)
	}
}

// Sending a frame allocates nothing, copied out or sent from the guest's
// buffers with WriteVectors: the chain is offered again through
// the raw ring setters, which allocate nothing either.
func TestTXNoAllocs(t *testing.T) {
	t.Run("write", func(t *testing.T) { testTXNoAllocs(t, newSyncDev(t, baseFeat, 1<<20)) })
	t.Run("writev", func(t *testing.T) { testTXNoAllocs(t, newSyncDevOn(t, baseFeat, 1<<20, true)) })
}

func testTXNoAllocs(t *testing.T, s *syncDev) {
	f := frameOf(1500, 1)
	head, err := s.tx.Add(split(f, HeaderSize, 100)...)
	if err != nil {
		t.Fatal(err)
	}
	idx := s.tx.AvailIdx()
	allocs := testing.AllocsPerRun(200, func() {
		s.tx.SetAvailRing(idx, head)
		idx++
		s.tx.SetAvailIdx(idx)
		if !s.d.drainTX(s.d.txq) {
			t.Fatal("drainTX stopped")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame, want 0", allocs)
	}
	if !bytes.Equal(s.be.last, f) || s.be.writes < 200 {
		t.Errorf("%d writes, last %d bytes: frames not sent", s.be.writes, len(s.be.last))
	}
}

func TestRXNoAllocs(t *testing.T) {
	for _, tc := range []struct {
		feat   uint64
		chains [][]virtiotest.Buf // offered again for every frame
	}{
		{0, [][]virtiotest.Buf{{w(HeaderSize), w(4000)}}},
		{mergeable, [][]virtiotest.Buf{{w(11), w(1089)}, {w(1100)}, {w(1100)}}},
	} {
		s := newSyncDev(t, baseFeat|tc.feat, 1<<20)
		f := frameOf(3000, 1)
		var heads []uint16
		for _, c := range tc.chains {
			head, err := s.rx.Add(c...)
			if err != nil {
				t.Fatal(err)
			}
			heads = append(heads, head)
		}
		idx := s.rx.AvailIdx()
		first := true
		allocs := testing.AllocsPerRun(200, func() {
			if !first {
				for _, h := range heads {
					s.rx.SetAvailRing(idx, h)
					idx++
				}
				s.rx.SetAvailIdx(idx)
			}
			first = false
			s.setPending(f)
			if placed, err := s.d.placeRX(s.d.rxq); !placed || err != nil {
				t.Fatalf("placeRX = %v, %v", placed, err)
			}
		})
		if allocs != 0 {
			t.Errorf("features %#x: %v allocations per frame, want 0", tc.feat, allocs)
		}
		if st := s.d.Stats(); st.RxFrames != 201 || st.RxDropped != 0 {
			t.Errorf("features %#x: stats %+v, want 201 frames placed", tc.feat, st)
		}
		u := drainUsed(s.rx)
		var got []byte
		for _, e := range u[len(u)-len(heads):] {
			got = append(got, s.rx.WrittenBytes(e.head, e.n)...)
		}
		if !bytes.Equal(got, withNumBuffers(f, uint16(len(heads)))) {
			t.Errorf("features %#x: last frame differs", tc.feat)
		}
	}
}

// A long burst interrupts the driver every txBatch chains, so it can
// reclaim buffers before the burst ends, and once more at its end;
// dropped chains count as sent ones do.
func TestTXBatchInterrupts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"sent", frameOf(100, 1)},
		{"dropped", frameOf(HeaderSize-1, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSyncDev(t, baseFeat, 1<<20)
			irqs := 0
			s.d.env.Interrupt = func() { irqs++ }
			const chains = 2*txBatch + 2
			for range chains {
				if _, err := s.tx.Add(r(tc.frame)); err != nil {
					t.Fatal(err)
				}
			}
			if !s.d.drainTX(s.d.txq) || s.fails != 0 {
				t.Fatal("drainTX failed")
			}
			if u := drainUsed(s.tx); len(u) != chains {
				t.Fatalf("%d chains used, want %d", len(u), chains)
			}
			if want := chains/txBatch + 1; irqs != want {
				t.Errorf("%d interrupts for %d chains, want %d (one per %d and one at the end)", irqs, chains, want, txBatch)
			}
		})
	}
}
