package net

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// split cuts b at the given lengths; what is left is the last piece.
func split(b []byte, lens ...int) []virtiotest.Buf {
	var out []virtiotest.Buf
	for _, n := range lens {
		out = append(out, r(b[:n]))
		b = b[n:]
	}
	return append(out, r(b))
}

func TestTX(t *testing.T) {
	f1500 := frameOf(HeaderSize+1500, 1)
	big := frameOf(bufSize, 2) // the largest frame accepted
	for _, tc := range []struct {
		name     string
		bufs     []virtiotest.Buf
		indirect bool
		want     []byte // nil: dropped
	}{
		{"one descriptor", []virtiotest.Buf{r(f1500)}, false, f1500},
		{"header and frame apart", split(f1500, HeaderSize), false, f1500},
		{"header split, many pieces", split(f1500, 5, 1, 9, 100, 1, 1, 700), false, f1500},
		{"indirect", split(f1500, HeaderSize, 300), true, f1500},
		{"empty readable pieces", []virtiotest.Buf{r(nil), r(f1500[:20]), r(nil), r(f1500[20:])}, false, f1500},
		{"header only", []virtiotest.Buf{r(f1500[:HeaderSize])}, false, f1500[:HeaderSize]},
		{"writable buffers ignored", []virtiotest.Buf{r(f1500), w(64)}, false, f1500},
		{"largest frame", split(big, HeaderSize, 30000), false, big},
		{"shorter than the header", []virtiotest.Buf{r(f1500[:HeaderSize-1])}, false, nil},
		{"short, split", split(f1500[:HeaderSize-1], 3), false, nil},
		{"only writable", []virtiotest.Buf{w(100)}, false, nil},
		{"over-long", split(frameOf(bufSize+1, 3), HeaderSize, 40000), false, nil},
	} {
		// Without WriteVectors every frame is copied out and sent with
		// Write; with it (up to 4 buffers here) a frame in at most 4
		// buffers goes out with WriteVectors and a longer one with Write.
		for _, maxVec := range []int{0, 4} {
			name := tc.name
			if maxVec > 0 {
				name += ", writev"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, baseFeat, Options{})
				if maxVec > 0 {
					h = newVecHarness(t, baseFeat, Options{}, maxVec)
				}
				h.activate()
				add := h.tx.Add
				if tc.indirect {
					add = h.tx.AddIndirect
				}
				head, err := add(tc.bufs...)
				if err != nil {
					t.Fatal(err)
				}
				// A good frame after it shows the worker went on, and that a
				// dropped chain sent nothing.
				marker := frameOf(100, 9)
				mhead, err := h.tx.Add(r(marker))
				if err != nil {
					t.Fatal(err)
				}
				h.txn.Notify()
				if tc.want != nil {
					if got := h.recv(); !bytes.Equal(got, tc.want) {
						t.Fatalf("backend got %d bytes, want %d (% x...)", len(got), len(tc.want), got[:min(len(got), 16)])
					}
				}
				if got := h.recv(); !bytes.Equal(got, marker) {
					t.Fatalf("second frame: got %d bytes, want the %d-byte marker", len(got), len(marker))
				}
				h.txIdle()
				u := drainUsed(h.tx)
				if want := []used{{head, 0}, {mhead, 0}}; len(u) != 2 || u[0] != want[0] || u[1] != want[1] {
					t.Errorf("used %v, want %v", u, want)
				}
				s := h.dev.Stats()
				wantDropped := uint64(0)
				if tc.want == nil {
					wantDropped = 1
				}
				if s.TxDropped != wantDropped || s.TxFrames != 2-wantDropped {
					t.Errorf("stats %+v, want %d dropped", s, wantDropped)
				}
				if h.irq.Count() == 0 {
					t.Error("no interrupt for the used buffers")
				}
				if h.vec != nil {
					readable := 0
					for _, b := range tc.bufs {
						if b.WriteLen == 0 {
							readable++
						}
					}
					want := 1 // the marker
					if tc.want != nil && readable <= maxVec {
						want++
					}
					if got := h.vec.vectorCalls(); got != want {
						t.Errorf("%d frames sent with WriteVectors, want %d", got, want)
					}
				}
				select {
				case err := <-h.fails:
					t.Errorf("device failed: %v", err)
				default:
				}
			})
		}
	}
}

// A failing backend (a TAP that is down says EIO) drops frames and the
// worker goes on.
func TestTXWriteError(t *testing.T) {
	t.Run("write", func(t *testing.T) { testTXWriteError(t, newHarness(t, baseFeat, Options{})) })
	t.Run("writev", func(t *testing.T) { testTXWriteError(t, newVecHarness(t, baseFeat, Options{}, 4)) })
}

func testTXWriteError(t *testing.T, h *harness) {
	h.activate()
	h.be.setWriteErr(unix.EIO)
	h1, _ := h.tx.Add(r(frameOf(200, 1)))
	h2, _ := h.tx.Add(r(frameOf(200, 2)))
	h.txn.Notify()
	h.txIdle()
	if u := drainUsed(h.tx); len(u) != 2 || u[0] != (used{h1, 0}) || u[1] != (used{h2, 0}) {
		t.Errorf("used %v, want both chains completed", u)
	}
	if s := h.dev.Stats(); s.TxDropped != 2 {
		t.Errorf("stats %+v, want 2 dropped", s)
	}
	h.be.setWriteErr(nil)
	h.tx.Add(r(frameOf(200, 3)))
	h.txn.Notify()
	if got := h.recv(); !bytes.Equal(got, frameOf(200, 3)) {
		t.Errorf("after the error cleared: got %d bytes", len(got))
	}
	h.txIdle()
	h.mu.Lock()
	nlogs := len(h.logs)
	h.mu.Unlock()
	if nlogs != 1 {
		t.Errorf("%d log lines for one failing period, want 1", nlogs)
	}
}

// The driver's interrupt suppression is honoured.
func TestTXInterrupts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		setup    func(d *virtiotest.Driver)
		want     bool
	}{
		{"flags clear", baseFeat, func(*virtiotest.Driver) {}, true},
		{"NO_INTERRUPT", baseFeat, func(d *virtiotest.Driver) { d.SetAvailFlags(virtio.AvailFlagNoInterrupt) }, false},
		{"used_event reached", baseFeat | eventIdx, func(d *virtiotest.Driver) { d.SetUsedEvent(0) }, true},
		{"used_event ahead", baseFeat | eventIdx, func(d *virtiotest.Driver) { d.SetUsedEvent(10) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.features, Options{})
			tc.setup(h.tx)
			h.activate()
			h.tx.Add(r(frameOf(100, 1)))
			h.txn.Notify()
			h.recv()
			h.txIdle()
			if got := h.irq.Count() > 0; got != tc.want {
				t.Errorf("interrupted = %v, want %v", got, tc.want)
			}
		})
	}
}

// Without EVENT_IDX the worker turns driver notifications off while it
// drains and back on before sleeping.
func TestTXNotifySuppression(t *testing.T) {
	h := newHarness(t, baseFeat, Options{})
	h.activate()
	if f := h.tx.UsedFlags(); f&virtio.UsedFlagNoNotify != 0 {
		t.Errorf("used flags %#x while idle: notifications off", f)
	}
	h.tx.Add(r(frameOf(100, 1)))
	h.txn.Notify()
	h.recv()
	h.txIdle()
	if f := h.tx.UsedFlags(); f&virtio.UsedFlagNoNotify != 0 {
		t.Errorf("used flags %#x after draining: notifications left off", f)
	}
}

// A malformed TX queue fails the device and stops the worker until reset.
func TestTXMalformed(t *testing.T) {
	h := newHarness(t, baseFeat, Options{})
	h.activate()
	h.tx.SetAvailIdx(testQSize + 1) // more than Size ahead
	h.txn.Notify()
	select {
	case err := <-h.fails:
		if !errorsIs(err, virtio.ErrMalformed) {
			t.Errorf("Fail(%v), want ErrMalformed", err)
		}
	case <-timeout():
		t.Fatal("no Fail for a malformed queue")
	}
	h.resetLikeTransport()
	h.setupQueues()
	h.activate()
	h.tx.Add(r(frameOf(64, 1)))
	h.txn.Notify()
	if got := h.recv(); !bytes.Equal(got, frameOf(64, 1)) {
		t.Error("TX does not work after a reset")
	}
}
