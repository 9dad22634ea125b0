package serial

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// fakePaced is a host side with room for a set number of bytes, which
// the test frees as a reader would. Like hostout.Paced it takes what
// fits, counts the rest as dropped, and calls the device back when
// room it refused comes back.
type fakePaced struct {
	mu      sync.Mutex
	room    int
	want    int // the room last refused, 0 if none
	got     bytes.Buffer
	dropped int
	notify  func()
	// most is what the UART said it writes on one yes (NotifyReady);
	// sinceYes counts the bytes written since Ready last said yes, and
	// maxSinceYes the most of them, which must stay within most for a
	// queue shared with another device to keep its promises.
	most, sinceYes, maxSinceYes int
}

func (f *fakePaced) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sinceYes += len(p)
	f.maxSinceYes = max(f.maxSinceYes, f.sinceYes)
	n := min(len(p), f.room)
	f.got.Write(p[:n])
	f.room -= n
	f.dropped += len(p) - n
	return len(p), nil
}

func (f *fakePaced) Ready(n int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.room >= n {
		f.sinceYes = 0
		return true
	}
	f.want = n
	return false
}

func (f *fakePaced) NotifyReady(fn func(), most int) { f.notify, f.most = fn, most }

// free gives the device n more bytes of room, calling it back, without
// the fake's lock, if that answers a refusal.
func (f *fakePaced) free(n int) {
	f.mu.Lock()
	f.room += n
	call := f.want > 0 && f.room >= f.want
	if call {
		f.want = 0
	}
	f.mu.Unlock()
	if call {
		f.notify()
	}
}

func (f *fakePaced) state() (room int, got []byte, dropped int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.room, bytes.Clone(f.got.Bytes()), f.dropped
}

func TestPacedTHRE(t *testing.T) {
	for _, tc := range []struct {
		name      string
		room      int // before the guest writes one byte
		wantTHRE  bool
		wantLevel bool // THRI enabled, IIR not yet read
	}{
		{"plenty of room", 100, true, true},
		{"room for a FIFO load after the byte", txLoad + 1, true, true},
		{"one short of a FIFO load", txLoad, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := &fakePaced{room: tc.room}
			u, irq := linuxPort(t, host)
			out(u, regIER, ierRLSI|ierRDI|ierTHRI)
			in(u, regIIR) // the handler takes the enable-time THRE
			out(u, regData, 'x')
			want := byte(0)
			if tc.wantTHRE {
				want = lsrTHRE | lsrTEMT
			}
			if lsr := in(u, regLSR); lsr&(lsrTHRE|lsrTEMT) != want {
				t.Errorf("LSR %#x, want THRE|TEMT %#x", lsr, want)
			}
			if level, _, _ := irq.state(); level != tc.wantLevel {
				t.Errorf("line %v, want %v", level, tc.wantLevel)
			}
			if tc.wantTHRE {
				return
			}
			// Enabling THRI again on a busy transmitter must not
			// interrupt (Linux's console write restores IER).
			out(u, regIER, ierRLSI|ierRDI)
			out(u, regIER, ierRLSI|ierRDI|ierTHRI)
			if iir := in(u, regIIR); iir&0x0f != iirNoInt {
				t.Errorf("IIR %#x with the transmitter busy", iir)
			}
			_, before, _ := irq.state()
			host.free(txLoad)
			level, after, _ := irq.state()
			if !level || after != before+1 {
				t.Errorf("room came back: line %v, %d new edges; want one THRE edge", level, after-before)
			}
			if iir := in(u, regIIR); iir != iirFIFOs|iirTHRI {
				t.Errorf("IIR %#x, want THRE", iir)
			}
			if lsr := in(u, regLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
				t.Errorf("LSR %#x after room came back", lsr)
			}
			if _, _, dropped := host.state(); dropped != 0 {
				t.Errorf("%d bytes dropped", dropped)
			}
		})
	}
}

// TestPacedInterruptDrivenTransmit is serial8250_tx_chars against a host
// that reads slowly: 16 bytes per THRE interrupt, nothing lost, and the
// tty waits (no interrupt) whenever the host is behind.
func TestPacedInterruptDrivenTransmit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		startRoom int
		perRead   int // what the host reader takes each time it runs
	}{
		{"host faster than the guest", 1 << 20, 0},
		// A host side starts empty, so with room for at least a load.
		{"host reads a byte at a time", txLoad, 1},
		{"host reads in odd chunks", txLoad + 5, 37},
		{"host reads FIFO loads", txLoad, txLoad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := &fakePaced{room: tc.startRoom}
			u, irq := linuxPort(t, host)
			msg := bytes.Repeat([]byte("job output 0123456789\n"), 50)
			sent, idle := 0, 0
			out(u, regIER, ierRLSI|ierRDI|ierTHRI) // start_tx
			for sent < len(msg) {
				select {
				case <-irq.rising:
					idle = 0
				default:
					// No interrupt: the guest waits; the host reads.
					if idle++; idle > 1000 || tc.perRead == 0 {
						t.Fatalf("stuck with %d of %d bytes sent", sent, len(msg))
					}
					host.free(tc.perRead)
					continue
				}
				iir := in(u, regIIR)
				if iir&iirNoInt != 0 {
					continue
				}
				lsr := in(u, regLSR)
				in(u, regMSR)
				if lsr&lsrTHRE == 0 {
					t.Fatalf("THRE interrupt with LSR %#x", lsr)
				}
				for i := 0; i < txLoad && sent < len(msg); i++ {
					out(u, regData, msg[sent])
					sent++
				}
				if sent == len(msg) {
					out(u, regIER, ierRLSI|ierRDI) // __stop_tx
				}
			}
			room, got, dropped := host.state()
			if !bytes.Equal(got, msg) || dropped != 0 {
				t.Fatalf("host got %d of %d bytes, %d dropped (room %d)", len(got), len(msg), dropped, room)
			}
			// Linux writes a whole load after a THRE interrupt:
			// what the UART registered must cover it, or a queue
			// shared with the output port lets the port spend it.
			host.mu.Lock()
			defer host.mu.Unlock()
			if host.most <= 0 || host.maxSinceYes > host.most {
				t.Errorf("UART registered %d bytes per yes and wrote up to %d after one", host.most, host.maxSinceYes)
			}
		})
	}
}

// TestPacedPolledWriter is a guest that polls THRE before each byte
// (serial8250_console_putchar, early printk) while a reader drains the
// host side from another goroutine.
func TestPacedPolledWriter(t *testing.T) {
	host := &fakePaced{room: txLoad}
	u, _ := linuxPort(t, host)
	msg := bytes.Repeat([]byte("polled "), 300)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Microsecond):
				host.free(64)
			}
		}
	}()
	for _, b := range msg {
		for in(u, regLSR)&lsrTHRE == 0 {
		}
		out(u, regData, b)
	}
	_, got, dropped := host.state()
	if !bytes.Equal(got, msg) || dropped != 0 {
		t.Fatalf("host got %d of %d bytes, %d dropped", len(got), len(msg), dropped)
	}
}

// A guest that ignores THRE overruns the host side as it would overrun
// a chip's FIFO; the UART neither blocks nor loses track of THRE.
func TestPacedGuestIgnoringTHRE(t *testing.T) {
	host := &fakePaced{room: 20}
	u, irq := linuxPort(t, host)
	out(u, regIER, ierRLSI|ierRDI|ierTHRI)
	in(u, regIIR)
	for range 30 {
		out(u, regData, 'z')
	}
	if _, _, dropped := host.state(); dropped != 10 {
		t.Errorf("%d dropped, want the 10 that did not fit", dropped)
	}
	host.free(txLoad)
	if level, _, _ := irq.state(); !level {
		t.Error("no THRE interrupt once room came back")
	}
}

func TestPacedTransmitAllocatesNothing(t *testing.T) {
	host := &fakePaced{room: 1 << 30}
	host.got.Grow(1 << 12) // the fake's own buffer must not grow during the count
	u := New(nil, host)
	out(u, regIER, ierTHRI)
	b := []byte{'x'}
	if n := testing.AllocsPerRun(1000, func() {
		u.Write(regData, b)
		u.Read(regIIR, b)
		u.Read(regLSR, b)
	}); n != 0 {
		t.Fatalf("%v allocations per transmitted byte", n)
	}
}
