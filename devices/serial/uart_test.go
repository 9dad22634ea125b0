package serial

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeIRQ records what the UART does to its line. rising receives a token
// on every low->high transition, as an edge-triggered IOAPIC pin latches.
type fakeIRQ struct {
	mu     sync.Mutex
	level  bool
	edges  int
	calls  int
	dups   int // calls that did not change the level, which New promises not to make
	rising chan struct{}
}

func newFakeIRQ() *fakeIRQ { return &fakeIRQ{rising: make(chan struct{}, 1)} }

func (f *fakeIRQ) SetLevel(high bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if high == f.level {
		f.dups++
	}
	if high && !f.level {
		f.edges++
		select {
		case f.rising <- struct{}{}:
		default:
		}
	}
	f.level = high
}

func (f *fakeIRQ) state() (level bool, edges, dups int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.level, f.edges, f.dups
}

func in(u *UART, reg uint64) byte {
	var b [1]byte
	u.Read(reg, b[:])
	return b[0]
}

func out(u *UART, reg uint64, v byte) { u.Write(reg, []byte{v}) }

// linuxAutoconfig follows the register accesses of Linux's 8250 autoconfig()
// and autoconfig_16550a() (drivers/tty/serial/8250/8250_port.c) with the
// 16550A variant probing enabled, and returns the port type it settles on.
func linuxAutoconfig(u *UART) string {
	// IER existence test.
	scratch := in(u, regIER)
	out(u, regIER, 0)
	scratch2 := in(u, regIER) & 0x0f
	out(u, regIER, 0x0f)
	scratch3 := in(u, regIER) & 0x0f
	out(u, regIER, scratch)
	if scratch2 != 0 || scratch3 != 0x0f {
		return "none (IER test)"
	}
	saveMCR := in(u, regMCR)
	saveLCR := in(u, regLCR)
	// Loopback test: RTS and OUT2 must come back as CTS and DCD.
	out(u, regMCR, mcrLoop|mcrOUT2|mcrRTS)
	status1 := in(u, regMSR) & 0xf0
	out(u, regMCR, saveMCR)
	if status1 != msrDCD|msrCTS {
		return "none (LOOP test)"
	}
	out(u, regLCR, 0xbf)
	out(u, regIIR, 0) // EFR on chips that have one; FCR here
	out(u, regLCR, 0)
	out(u, regIIR, fcrEnable)
	typ := ""
	switch in(u, regIIR) & 0xc0 {
	case 0x00:
		typ = "16450"
	case 0x80:
		typ = "16550"
	case 0xc0:
		typ = linux16550aVariants(u)
	default:
		typ = "unknown"
	}
	out(u, regLCR, saveLCR)
	out(u, regMCR, saveMCR)
	out(u, regIIR, fcrEnable|fcrClearRX|fcrClearTX) // serial8250_clear_fifos
	out(u, regIIR, 0)
	in(u, regData)
	out(u, regIER, 0)
	return typ
}

func linux16550aVariants(u *UART) string {
	out(u, regLCR, 0x80) // UART_LCR_CONF_MODE_A
	if in(u, regIIR) == 0 {
		return "16650 family (EFR at DLAB)"
	}
	out(u, regLCR, 0xbf) // UART_LCR_CONF_MODE_B
	if in(u, regIIR) == 0 {
		return "16650V2 family (EFR)"
	}
	// National Semiconductor SuperIO bank test.
	out(u, regLCR, 0)
	status1 := in(u, regMCR)
	out(u, regLCR, 0xe0)
	status2 := in(u, 2)
	if (status2^status1)&mcrLoop == 0 {
		out(u, regLCR, 0)
		out(u, regMCR, status1^mcrLoop)
		out(u, regLCR, 0xe0)
		status2 = in(u, 2)
		out(u, regLCR, 0)
		out(u, regMCR, status1)
		if (status2^status1)&mcrLoop != 0 {
			return "NS16550A"
		}
	}
	// TI16750: IIR bit 5 with 64-byte FIFO mode.
	out(u, regLCR, 0)
	out(u, regIIR, fcrEnable|0x20)
	s1 := in(u, regIIR) & 0xe0
	out(u, regIIR, fcrEnable)
	out(u, regLCR, 0x80)
	out(u, regIIR, fcrEnable|0x20)
	s2 := in(u, regIIR) & 0xe0
	out(u, regIIR, fcrEnable)
	out(u, regLCR, 0)
	if s1 == 0xc0 && s2 == 0xe0 {
		return "16750"
	}
	// XScale: IER bit 6 (UUE) writable.
	iersave := in(u, regIER)
	out(u, regIER, iersave&^0x40)
	if in(u, regIER)&0x40 == 0 {
		out(u, regIER, iersave|0x40)
		if in(u, regIER)&0x40 != 0 {
			return "XScale"
		}
	}
	out(u, regIER, iersave)
	if linuxSizeFIFO(u) == 64 {
		return "U6_16550A"
	}
	return "16550A"
}

// linuxSizeFIFO mirrors size_fifo(): count what 256 looped-back bytes leave
// in the receiver.
func linuxSizeFIFO(u *UART) int {
	oldLCR := in(u, regLCR)
	out(u, regLCR, 0)
	oldFCR := in(u, regIIR)
	oldMCR := in(u, regMCR)
	out(u, regIIR, fcrEnable|fcrClearRX|fcrClearTX)
	out(u, regMCR, mcrLoop)
	out(u, regLCR, 0x80)
	oldDLL, oldDLM := in(u, regData), in(u, regIER)
	out(u, regData, 1)
	out(u, regIER, 0)
	out(u, regLCR, 0x03)
	for i := range 256 {
		out(u, regData, byte(i))
	}
	count := 0
	for ; in(u, regLSR)&lsrDR != 0 && count < 256; count++ {
		in(u, regData)
	}
	out(u, regIIR, oldFCR)
	out(u, regMCR, oldMCR)
	out(u, regLCR, 0x80)
	out(u, regData, oldDLL)
	out(u, regIER, oldDLM)
	out(u, regLCR, oldLCR)
	return count
}

func TestLinuxProbeFinds16550A(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(u *UART)
	}{
		{"reset state", func(*UART) {}},
		{"console already running", func(u *UART) {
			out(u, regLCR, 0x03)
			out(u, regMCR, mcrDTR|mcrRTS|mcrOUT2)
			out(u, regIER, ierRDI|ierRLSI)
			out(u, regIIR, fcrEnable|0xc0)
		}},
		{"input pending", func(u *UART) {
			out(u, regIER, ierRDI)
			out(u, regMCR, mcrOUT2)
			if _, err := u.Receive([]byte("typed ahead")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq := newFakeIRQ()
			var got bytes.Buffer
			u := New(irq, &got)
			tc.setup(u)
			if typ := linuxAutoconfig(u); typ != "16550A" {
				t.Fatalf("Linux autoconfig found %q, want 16550A", typ)
			}
			if got.Len() != 0 {
				t.Errorf("probe leaked %q to the host: loopback bytes must stay inside", got.Bytes())
			}
			if _, _, dups := irq.state(); dups != 0 {
				t.Errorf("%d redundant SetLevel calls", dups)
			}
		})
	}
}

// TestLinuxStartupTests replays serial8250_do_startup's checks for UARTs
// that do not re-assert THRE (UART_BUG_THRE) or never raise it (BUG_TXEN);
// either bug would put the console on a polling timer.
func TestLinuxStartupTests(t *testing.T) {
	u := New(newFakeIRQ(), io.Discard)
	linuxAutoconfig(u)
	out(u, regIIR, fcrEnable|fcrClearRX|fcrClearTX)
	out(u, regIIR, 0)
	in(u, regLSR)
	in(u, regData)
	in(u, regIIR)
	in(u, regMSR)
	if lsr := in(u, regLSR); lsr == 0xff {
		t.Fatal("LSR reads 0xff: Linux would decide there is no UART")
	}

	out(u, regIER, ierTHRI)
	iir1 := in(u, regIIR)
	out(u, regIER, 0)
	out(u, regIER, ierTHRI)
	iir := in(u, regIIR)
	out(u, regIER, 0)
	if iir1&iirNoInt == 0 && iir&iirNoInt != 0 {
		t.Errorf("THRE not re-asserted (iir1 %#x, iir %#x): Linux sets UART_BUG_THRE", iir1, iir)
	}

	out(u, regLCR, 0x03)
	out(u, regMCR, mcrOUT2)
	out(u, regIER, ierTHRI)
	lsr := in(u, regLSR)
	iir = in(u, regIIR)
	out(u, regIER, 0)
	if lsr&lsrTEMT != 0 && iir&iirNoInt != 0 {
		t.Errorf("no THRE interrupt on enabling THRI (lsr %#x, iir %#x): Linux sets UART_BUG_TXEN", lsr, iir)
	}
}

// linuxPort brings a UART to the state Linux leaves an open ttyS0 in.
func linuxPort(t *testing.T, w io.Writer) (*UART, *fakeIRQ) {
	t.Helper()
	irq := newFakeIRQ()
	u := New(irq, w)
	if typ := linuxAutoconfig(u); typ != "16550A" {
		t.Fatalf("probe found %q", typ)
	}
	out(u, regLCR, 0x83)
	out(u, regData, 1) // 115200 baud
	out(u, regIER, 0)
	out(u, regLCR, 0x03)
	out(u, regIIR, fcrEnable|0x80)
	out(u, regMCR, mcrDTR|mcrRTS|mcrOUT2)
	out(u, regIER, ierRLSI|ierRDI)
	return u, irq
}

// consoleWrite is serial8250_console_write: save IER, mask it, poll the
// bytes out, wait for the transmitter to drain, restore IER.
func consoleWrite(u *UART, s string) {
	ier := in(u, regIER)
	out(u, regIER, 0)
	for i := 0; i < len(s); i++ {
		for in(u, regLSR)&lsrTHRE == 0 {
		}
		out(u, regData, s[i])
	}
	for in(u, regLSR)&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
	}
	out(u, regIER, ier)
}

func TestConsoleWriteReraisesTHRE(t *testing.T) {
	for _, tc := range []struct {
		name string
		ack  bool // the tty's interrupt handler read IIR before the console write
	}{
		{"THRE acknowledged by the handler", true},
		{"THRE still pending", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			u, irq := linuxPort(t, &got)
			// The tty layer starts interrupt-driven output.
			out(u, regIER, ierRLSI|ierRDI|ierTHRI)
			for i := range 50 {
				_, before, _ := irq.state()
				if tc.ack {
					if iir := in(u, regIIR); iir != iirFIFOs|iirTHRI {
						t.Fatalf("round %d: IIR %#x, want THRE", i, iir)
					}
					if level, _, _ := irq.state(); level {
						t.Fatalf("round %d: line still high after IIR acknowledged THRE", i)
					}
				}
				consoleWrite(u, "kernel message\n")
				level, after, _ := irq.state()
				if !level || after != before+1 {
					t.Fatalf("round %d: restoring IER gave level %v and %d new edges, want one THRE edge", i, level, after-before)
				}
			}
			if _, _, dups := irq.state(); dups != 0 {
				t.Errorf("%d redundant SetLevel calls", dups)
			}
			if want := bytes.Repeat([]byte("kernel message\n"), 50); !bytes.Equal(got.Bytes(), want) {
				t.Errorf("host got %d bytes, want %d", got.Len(), len(want))
			}
		})
	}
}

// TestInterruptDrivenTransmit is serial8250_tx_chars under an edge-
// triggered line: each handler pass must leave the line low so the next
// batch's THRE makes a new edge.
func TestInterruptDrivenTransmit(t *testing.T) {
	var got bytes.Buffer
	u, irq := linuxPort(t, &got)
	msg := bytes.Repeat([]byte("0123456789abcdef-"), 20)
	out(u, regIER, ierRLSI|ierRDI|ierTHRI)
	sent := 0
	for pass := 0; sent < len(msg); pass++ {
		select {
		case <-irq.rising:
		default:
			t.Fatalf("pass %d: no interrupt with %d bytes left", pass, len(msg)-sent)
		}
		for {
			iir := in(u, regIIR)
			if iir&iirNoInt != 0 {
				break
			}
			if iir&0x0f != iirTHRI {
				t.Fatalf("IIR %#x, want THRE", iir)
			}
			for i := 0; i < fifoDepth && sent < len(msg); i++ {
				out(u, regData, msg[sent])
				sent++
			}
			if sent == len(msg) {
				out(u, regIER, ierRLSI|ierRDI) // __stop_tx
			}
		}
		if level, _, _ := irq.state(); level {
			t.Fatalf("pass %d: line high after the handler saw IIR no-interrupt", pass)
		}
	}
	if !bytes.Equal(got.Bytes(), msg) {
		t.Errorf("host got %q", got.Bytes())
	}
}

func TestReceiveInterrupt(t *testing.T) {
	u, irq := linuxPort(t, io.Discard)
	if level, _, _ := irq.state(); level {
		t.Fatal("line high with nothing pending")
	}
	if _, err := u.Receive([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	level, edges, _ := irq.state()
	if !level || edges != 1 {
		t.Fatalf("after input: level %v, %d edges; want high, 1", level, edges)
	}
	if iir := in(u, regIIR); iir != iirFIFOs|iirRDI {
		t.Fatalf("IIR %#x, want RX data available", iir)
	}
	for i, want := range []byte("abc") {
		if lsr := in(u, regLSR); lsr&lsrDR == 0 {
			t.Fatalf("byte %d: LSR %#x without DR", i, lsr)
		}
		if got := in(u, regData); got != want {
			t.Fatalf("byte %d: RBR %q, want %q", i, got, want)
		}
		if level, _, _ := irq.state(); level != (i < 2) {
			t.Fatalf("after byte %d: level %v", i, level)
		}
	}
	if lsr := in(u, regLSR); lsr != lsrTHRE|lsrTEMT {
		t.Fatalf("drained LSR %#x", lsr)
	}
	if iir := in(u, regIIR); iir != iirFIFOs|iirNoInt {
		t.Fatalf("drained IIR %#x", iir)
	}
	// New input after the line dropped must make a new edge.
	if _, err := u.Receive([]byte("d")); err != nil {
		t.Fatal(err)
	}
	if level, edges, _ := irq.state(); !level || edges != 2 {
		t.Fatalf("second input: level %v, %d edges; want high, 2", level, edges)
	}
}

func TestPasteIsDeliveredInOrder(t *testing.T) {
	paste := make([]byte, 10*1024)
	for i := range paste {
		paste[i] = byte('!' + i%90)
	}
	for _, tc := range []struct {
		name  string
		guest func(u *UART, irq *fakeIRQ, n int, deadline time.Time) []byte
	}{
		{"polled", func(u *UART, _ *fakeIRQ, n int, deadline time.Time) []byte {
			var got []byte
			for len(got) < n && time.Now().Before(deadline) {
				if in(u, regLSR)&lsrDR != 0 {
					got = append(got, in(u, regData))
				}
			}
			return got
		}},
		{"interrupt driven", func(u *UART, irq *fakeIRQ, n int, deadline time.Time) []byte {
			// serial8250_interrupt: on each edge, handle until IIR says
			// nothing is pending, up to 256 bytes per pass.
			var got []byte
			for len(got) < n {
				select {
				case <-irq.rising:
				case <-time.After(time.Until(deadline)):
					return got // a lost edge: the caller reports the shortfall
				}
				for in(u, regIIR)&iirNoInt == 0 {
					for i := 0; i < 256 && in(u, regLSR)&lsrDR != 0; i++ {
						got = append(got, in(u, regData))
					}
				}
			}
			return got
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, irq := linuxPort(t, io.Discard)
			deadline := time.Now().Add(10 * time.Second)
			guest := make(chan []byte, 1)
			go func() { guest <- tc.guest(u, irq, len(paste), deadline) }()
			type result struct {
				n   int
				err error
			}
			host := make(chan result, 1)
			go func() {
				n, err := u.Receive(paste)
				host <- result{n, err}
			}()
			got := <-guest
			u.Close() // a Receive still blocked now means input would have stalled
			if r := <-host; r.n != len(paste) || r.err != nil {
				t.Errorf("Receive = %d, %v; want %d, nil", r.n, r.err, len(paste))
			}
			if !bytes.Equal(got, paste) {
				t.Errorf("guest read %d bytes, want %d in order", len(got), len(paste))
			}
		})
	}
}

// TestEachTHRWriteMakesAnEdge covers a guest that keeps THRI enabled and
// writes THR without reading IIR: on the chip each write drops THRE and
// the emptied THR raises it again, so every byte yields its own edge.
func TestEachTHRWriteMakesAnEdge(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rxPending bool // another source holds the line high throughout
		wantEdges int
	}{
		{"THRE alone", false, 1 + 3},
		{"RX data holds the line", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq := newFakeIRQ()
			u := New(irq, nil)
			out(u, regMCR, mcrOUT2|mcrRTS)
			if tc.rxPending {
				_, _ = u.Receive([]byte("r"))
			}
			out(u, regIER, ierRDI|ierTHRI)
			for _, b := range []byte("abc") {
				out(u, regData, b)
			}
			if level, edges, dups := irq.state(); !level || edges != tc.wantEdges || dups != 0 {
				t.Errorf("level %v, %d edges, %d redundant calls; want high, %d, 0", level, edges, dups, tc.wantEdges)
			}
		})
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, errors.New("host console gone")
}

func TestTHREDespiteHostWriteError(t *testing.T) {
	w := &failingWriter{}
	u, irq := linuxPort(t, w)
	out(u, regIER, ierRLSI|ierRDI|ierTHRI)
	in(u, regIIR) // acknowledge the enable-time THRE
	_, before, _ := irq.state()
	out(u, regData, 'x')
	if w.n != 1 {
		t.Fatalf("writer called %d times", w.n)
	}
	if lsr := in(u, regLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Errorf("LSR %#x: transmitter not empty after a failed host write", lsr)
	}
	if level, after, _ := irq.state(); !level || after != before+1 {
		t.Errorf("level %v, %d edges: THRE not raised after a failed host write", level, after-before)
	}
	if iir := in(u, regIIR); iir != iirFIFOs|iirTHRI {
		t.Errorf("IIR %#x, want THRE", iir)
	}
}

func TestIIRPriority(t *testing.T) {
	const all = ierRLSI | ierRDI | ierTHRI | ierMSI
	for _, tc := range []struct {
		name               string
		ier                byte // enabling THRI always makes THRE pending
		overrun, rx, modem bool
		want               byte
	}{
		{"nothing pending", all &^ ierTHRI, false, false, false, iirNoInt},
		{"THRE", all, false, false, false, iirTHRI},
		{"line status first", all, true, true, true, iirRLSI},
		{"RX before THRE", all, false, true, true, iirRDI},
		{"THRE before modem", all, false, false, true, iirTHRI},
		{"modem", ierMSI, false, true, true, iirMSI},
		{"disabled sources hidden", 0, true, true, true, iirNoInt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := New(nil, nil)
			out(u, regIIR, fcrEnable)
			if tc.overrun {
				out(u, regMCR, mcrLoop)
				for range fifoDepth + 1 {
					out(u, regData, 'x')
				}
				out(u, regIIR, fcrEnable|fcrClearRX)
				out(u, regMCR, 0)
				in(u, regMSR)
			}
			if tc.rx {
				if _, err := u.Receive([]byte("r")); err != nil {
					t.Fatal(err)
				}
			}
			if tc.modem {
				out(u, regMCR, mcrLoop|mcrDTR)
			}
			out(u, regMCR, mcrOUT2|mcrRTS) // out of loopback: host input is seen
			out(u, regIER, tc.ier)
			if iir := in(u, regIIR); iir != iirFIFOs|tc.want {
				t.Fatalf("IIR %#x, want %#x", iir, iirFIFOs|tc.want)
			}
		})
	}
}

func TestRegisters(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(u *UART) (got, want byte)
	}{
		{"scratch", func(u *UART) (byte, byte) { out(u, regSCR, 0xa5); return in(u, regSCR), 0xa5 }},
		{"DLL under DLAB", func(u *UART) (byte, byte) {
			out(u, regLCR, lcrDLAB)
			out(u, regData, 0x34)
			out(u, regLCR, 0)
			out(u, regLCR, lcrDLAB)
			return in(u, regData), 0x34
		}},
		{"DLM does not touch IER", func(u *UART) (byte, byte) {
			out(u, regLCR, lcrDLAB)
			out(u, regIER, 0x12)
			out(u, regLCR, 0)
			return in(u, regIER), 0
		}},
		{"IER high nibble reads 0", func(u *UART) (byte, byte) { out(u, regIER, 0xff); return in(u, regIER), 0x0f }},
		{"MCR high bits read 0", func(u *UART) (byte, byte) { out(u, regMCR, 0xff); return in(u, regMCR), 0x1f }},
		{"LCR", func(u *UART) (byte, byte) { out(u, regLCR, 0x1b); return in(u, regLCR), 0x1b }},
		{"IIR without FIFOs", func(u *UART) (byte, byte) { return in(u, regIIR), iirNoInt }},
		{"LSR idle", func(u *UART) (byte, byte) { return in(u, regLSR), lsrTHRE | lsrTEMT }},
		{"MSR host lines", func(u *UART) (byte, byte) { return in(u, regMSR), msrDCD | msrDSR | msrCTS }},
		{"MSR loopback deltas", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop|mcrOUT1)
			return in(u, regMSR), msrRI | msrDCTS | msrDDSR | msrDDCD
		}},
		{"MSR trailing edge of RI", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop|mcrOUT1)
			in(u, regMSR)
			out(u, regMCR, mcrLoop)
			return in(u, regMSR), msrTERI
		}},
		{"MSR deltas clear on read", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop|mcrRTS)
			in(u, regMSR)
			return in(u, regMSR), msrCTS
		}},
		{"loopback data", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop)
			out(u, regData, 'L')
			return in(u, regData), 'L'
		}},
		{"loopback overrun without FIFO", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop)
			out(u, regData, 1)
			out(u, regData, 2)
			return in(u, regLSR), lsrDR | lsrOE | lsrTHRE | lsrTEMT
		}},
		{"overrun clears on LSR read", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop)
			out(u, regData, 1)
			out(u, regData, 2)
			in(u, regLSR)
			return in(u, regLSR), lsrDR | lsrTHRE | lsrTEMT
		}},
		{"FCR clears looped-back bytes", func(u *UART) (byte, byte) {
			out(u, regMCR, mcrLoop)
			out(u, regData, 'j')
			out(u, regIIR, fcrEnable|fcrClearRX)
			return in(u, regLSR) & lsrDR, 0
		}},
		{"FCR clear keeps host input", func(u *UART) (byte, byte) {
			_, _ = u.Receive([]byte("typed before the guest opened the port"))
			out(u, regIIR, fcrEnable|fcrClearRX|fcrClearTX) // serial8250_clear_fifos at open
			out(u, regMCR, mcrOUT2|mcrRTS)
			out(u, regIER, ierRDI)
			return in(u, regData), 't'
		}},
		{"FCR keeps RX when rewritten", func(u *UART) (byte, byte) {
			out(u, regIIR, fcrEnable)
			out(u, regMCR, mcrOUT2|mcrRTS)
			out(u, regIER, ierRDI)
			_, _ = u.Receive([]byte("keep"))
			out(u, regIIR, fcrEnable|0x80) // set_termios rewrites FCR on every tcsetattr
			return in(u, regData), 'k'
		}},
		{"RBR read before the port is open takes nothing", func(u *UART) (byte, byte) {
			_, _ = u.Receive([]byte("pq"))
			in(u, regData) // serial8250_do_startup clearing the port
			out(u, regMCR, mcrOUT2|mcrRTS)
			out(u, regIER, ierRDI)
			return in(u, regData), 'p'
		}},
		{"past the last register", func(u *UART) (byte, byte) { out(u, 9, 1); return in(u, 9), 0xff }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var host bytes.Buffer
			u := New(nil, &host)
			if got, want := tc.steps(u); got != want {
				t.Errorf("got %#x, want %#x", got, want)
			}
			if host.Len() != 0 {
				t.Errorf("host received %q", host.Bytes())
			}
		})
	}
}

func TestOUT2GatesTheLine(t *testing.T) {
	irq := newFakeIRQ()
	u := New(irq, nil)
	out(u, regIER, ierRDI)
	_, _ = u.Receive([]byte("x"))
	for _, step := range []struct {
		mcr  byte
		want bool
	}{
		{0, false},
		{mcrRTS, false},
		{mcrOUT2 | mcrRTS, true},
		{mcrOUT2 | mcrRTS | mcrLoop, false},
		{mcrOUT2 | mcrRTS | mcrDTR, true},
	} {
		out(u, regMCR, step.mcr)
		if level, _, _ := irq.state(); level != step.want {
			t.Errorf("MCR %#x: level %v, want %v", step.mcr, level, step.want)
		}
	}
}

func TestWideAccessSplitsIntoBytes(t *testing.T) {
	u := New(nil, nil)
	u.Write(regSCR-1, []byte{0x1b, 0x5a}) // MSR (read-only) then SCR
	if got := in(u, regSCR); got != 0x5a {
		t.Errorf("SCR %#x after a 16-bit write", got)
	}
	var d [4]byte
	u.Read(regLCR, d[:])
	if want := [4]byte{0, 0, lsrTHRE | lsrTEMT, hostLines}; d != want {
		t.Errorf("32-bit read at LCR: % x, want % x", d, want)
	}
}

func TestCloseUnblocksReceive(t *testing.T) {
	u := New(nil, nil)
	errc := make(chan error, 1)
	var n int
	go func() {
		var err error
		n, err = u.Receive(make([]byte, RXBufferSize+10))
		errc <- err
	}()
	// Close once Receive has filled the buffer and waits for room.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		u.mu.Lock()
		full := u.rx.n == RXBufferSize
		u.mu.Unlock()
		if full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Receive did not fill the buffer")
		}
	}
	u.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) || n != RXBufferSize {
			t.Errorf("Receive = %d, %v; want %d, ErrClosed", n, err, RXBufferSize)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still blocked after Close")
	}
	if n, err := u.Receive([]byte("x")); n != 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Receive after Close = %d, %v", n, err)
	}
	u.Close()
}

// Every byte the guest prints is one vCPU exit; that path must not
// allocate.
func TestTransmitAllocatesNothing(t *testing.T) {
	u := New(nil, io.Discard)
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

// TestReceiveRefillsByHalves: a Receive larger than the RX buffer is woken
// to refill it once the guest has read half of it, not after every byte
// (a wake-up per byte costs the host a context switch per byte), and its
// bytes still all arrive in order.
func TestReceiveRefillsByHalves(t *testing.T) {
	u := New(nil, nil)
	out(u, regMCR, mcrOUT2|mcrRTS)
	out(u, regIER, ierRDI)
	want := make([]byte, 3*RXBufferSize)
	for i := range want {
		want[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := u.Receive(want)
		errc <- err
	}()
	queued := func() int {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.rx.n
	}
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for queued() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d bytes queued, want %d", queued(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var got []byte
	read := func(n int) {
		for range n {
			got = append(got, in(u, regData))
		}
	}
	waitQueued(RXBufferSize)
	read(RXBufferSize/2 - 1)
	time.Sleep(20 * time.Millisecond) // a woken Receive would refill now
	if n := queued(); n != RXBufferSize/2+1 {
		t.Fatalf("%d bytes queued after the guest read %d of a full buffer: Receive refilled early", n, RXBufferSize/2-1)
	}
	read(1)
	waitQueued(RXBufferSize)
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < len(want) {
		if in(u, regLSR)&lsrDR != 0 {
			read(1)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("no input after %d of %d bytes", len(got), len(want))
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes arrived out of order or changed")
	}
}
