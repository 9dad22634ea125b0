package net

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// A long stream of full-size frames, as a backend without offloads
// sends them (Options.NoOffload, 1514-byte Ethernet frames), reaches a
// guest that posts receive buffers a few at a time and only after the
// last ones were used: every frame arrives once, whole and in order,
// none is dropped, and the backend is not read while no buffer is free.
func TestRXStreamSlowGuest(t *testing.T) {
	const (
		frames   = 2000
		frameLen = HeaderSize + 1514
		// rxBuf is Linux's buffer size for a 1500-byte MTU without
		// mergeable buffers (a header, Ethernet and VLAN headers and
		// 1500 bytes, rounded up).
		rxBuf = 1536
	)
	for _, c := range []struct {
		name  string
		feat  uint64
		batch int
	}{
		{"mergeable", mergeable | eventIdx, 7},
		{"mergeable-one-at-a-time", mergeable, 1},
		{"small-buffers", eventIdx, 13},
		{"small-buffers-no-event-idx", 0, 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, baseFeat|c.feat, Options{NoOffload: true})
			h.activate()
			want := make([][]byte, frames)
			for i := range want {
				f := frameOf(frameLen, byte(i))
				binary.BigEndian.PutUint32(f[HeaderSize+20:], uint32(i))
				want[i] = f
			}
			sent := make(chan error, 1)
			go func() {
				for _, f := range want {
					if _, err := h.peer.Write(f); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			// The first frame is read and waits: the guest has posted
			// nothing yet.
			h.rxIdle()
			got := 0
			for got < frames {
				k := min(c.batch, frames-got)
				for range k {
					if _, err := h.rx.Add(w(rxBuf)); err != nil {
						t.Fatal(err)
					}
				}
				h.rxn.Notify()
				if got+k < frames {
					// Placed k frames, read the next and found no
					// buffer for it.
					h.rxIdle()
					if r, want := h.be.readCalls(), got+k+1; r != want {
						t.Fatalf("after %d buffers: %d Reads, want %d (a frame for each buffer, and the one waiting for the next)", got+k, r, want)
					}
				} else {
					h.be.waitReads(t, frames+1)
				}
				u := drainUsed(h.rx)
				if len(u) != k {
					t.Fatalf("after frame %d: %d buffers used, want %d", got, len(u), k)
				}
				for _, e := range u {
					b := h.rx.WrittenBytes(e.head, e.n)
					if !bytes.Equal(b, withNumBuffers(want[got], 1)) {
						t.Fatalf("frame %d: got %d bytes (sequence %s), want %d bytes of frame %d", got, len(b), seq(b), frameLen, got)
					}
					got++
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if s := h.dev.Stats(); s.RxFrames != frames || s.RxDropped != 0 {
				t.Errorf("stats %+v, want %d frames and none dropped", s, frames)
			}
		})
	}
}

// seq is the sequence number TestRXStreamSlowGuest put in a frame, or
// why there is none.
func seq(b []byte) string {
	if len(b) < HeaderSize+24 {
		return "none: too short"
	}
	return fmt.Sprint(binary.BigEndian.Uint32(b[HeaderSize+20:]))
}
