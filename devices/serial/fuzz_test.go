package serial

import (
	"errors"
	"io"
	"testing"
	"time"
)

// FuzzUART drives the UART with an arbitrary sequence of guest register
// accesses, host input and host output progress. Each op is three bytes:
// kind, a, b; an input whose length leaves one byte over has a Paced host
// side (a job's stdout) instead of a plain writer (a console), one that
// leaves two over needs OUT1 to receive (ReceiveOnOUT1). After every
// op the line must match the interrupt state and have changed on every
// SetLevel call, host input is visible only while the port is open, and
// a busy transmitter has asked the host to call it back; at the end a
// Receive blocked on a full buffer must come back when the UART is
// closed.
func FuzzUART(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, regMCR, mcrOUT2, 1, regIER, 0x0f, 2, 40, 0, 0, regIIR, 1, 4, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		irq := newFakeIRQ()
		var host *fakePaced
		var w io.Writer = &limitedWriter{}
		if len(ops)%3 == 1 {
			host = &fakePaced{room: 2 * txLoad}
			w = host
		}
		u := New(irq, w)
		if len(ops)%3 == 2 {
			u.ReceiveOnOUT1()
		}
		closed := false
		for len(ops) >= 3 {
			kind, a, b := ops[0], ops[1], ops[2]
			ops = ops[3:]
			reg := uint64(a % (NumPorts + 1)) // one past the end as well
			width := []int{1, 2, 4}[b%3]
			switch kind % 7 {
			case 0:
				d := make([]byte, width)
				u.Read(reg, d)
			case 1:
				u.Write(reg, []byte{b})
			case 2:
				u.mu.Lock()
				free := RXBufferSize - u.rx.n
				u.mu.Unlock()
				n := min(int(a)*int(b%17), free)
				got, err := u.Receive(make([]byte, n))
				if closed && (got != 0 || !errors.Is(err, ErrClosed)) || !closed && (got != n || err != nil) {
					t.Fatalf("Receive(%d) with %d free, closed %v = %d, %v", n, free, closed, got, err)
				}
			case 3:
				d := []byte{a, b, a ^ b, ^a}
				u.Write(reg, d[:width])
			case 4:
				for i := 0; i < RXBufferSize+1 && in(u, regLSR)&lsrDR != 0; i++ {
					in(u, regData)
				}
			case 5:
				u.Close()
				closed = true
				if _, err := u.Receive([]byte{a}); !errors.Is(err, ErrClosed) {
					t.Fatalf("Receive after Close: %v", err)
				}
			case 6:
				if host != nil {
					host.free(int(a) % 64)
				}
			}
			u.mu.Lock()
			want, n := u.wantLevel(), u.rx.n
			dr := u.lsr()&lsrDR != 0
			hidden := u.lb.n == 0 && !u.rxOpen()
			busy := u.txBusy
			if host != nil {
				host.mu.Lock()
				waiting, room := host.want > 0, host.room
				host.mu.Unlock()
				if busy != waiting {
					t.Fatalf("transmitter busy %v, host asked to call back %v", busy, waiting)
				}
				if !busy && room < txLoad {
					t.Fatalf("THRE shown with room for %d bytes", room)
				}
			} else if busy {
				t.Fatal("transmitter busy without a Paced host side")
			}
			u.mu.Unlock()
			if hidden && dr {
				t.Fatal("LSR.DR with the port closed and no loopback byte")
			}
			level, _, dups := irq.state()
			if level != want {
				t.Fatalf("line %v, interrupt state says %v", level, want)
			}
			if dups != 0 {
				t.Fatalf("%d SetLevel calls without a level change", dups)
			}
			if n < 0 || n > RXBufferSize {
				t.Fatalf("RX holds %d bytes", n)
			}
		}

		done := make(chan error, 1)
		go func() {
			_, err := u.Receive(make([]byte, RXBufferSize+1))
			done <- err
		}()
		u.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("Receive on a full buffer after Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Receive deadlocked after Close")
		}
		// The guest side keeps working after Close.
		in(u, regLSR)
		out(u, regData, 'x')
	})
}

// limitedWriter fails now and then, as a host console can.
type limitedWriter struct{ n int }

func (w *limitedWriter) Write(p []byte) (int, error) {
	w.n++
	if w.n%7 == 0 {
		return 0, errors.New("host write failed")
	}
	return len(p), nil
}
