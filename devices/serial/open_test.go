package serial

import (
	"bytes"
	"io"
	"testing"
)

// The helpers below replay, register access by register access, what
// Linux 6.1's 8250 driver (drivers/tty/serial/8250/8250_port.c) and the
// serial core (serial_core.c) do to a 16550A with an IRQ when a tty on
// it is opened and closed. Several of these steps read RBR only to clear
// it; none of them wants a character.

// linuxClearFIFOs is serial8250_clear_fifos.
func linuxClearFIFOs(u *UART) {
	out(u, regIIR, fcrEnable)
	out(u, regIIR, fcrEnable|fcrClearRX|fcrClearTX)
	out(u, regIIR, 0)
}

// linuxClearInterrupts is the "clear the interrupt registers" block that
// serial8250_do_startup runs twice.
func linuxClearInterrupts(u *UART) {
	in(u, regLSR)
	in(u, regData)
	in(u, regIIR)
	in(u, regMSR)
}

// linuxStartup is serial8250_do_startup: FIFOs cleared and disabled,
// interrupt registers cleared, the THRE re-assert and TXEN tests, OUT2
// raised, interrupt registers cleared again. mcr is the port's mctrl.
func linuxStartup(t *testing.T, u *UART, mcr byte) {
	t.Helper()
	linuxClearFIFOs(u)
	linuxClearInterrupts(u)
	if in(u, regLSR) == 0xff {
		t.Fatal("LSR safety check: 0xff")
	}
	linuxWaitTHRE(t, u)
	out(u, regIER, ierTHRI)
	in(u, regIIR)
	out(u, regIER, 0)
	out(u, regIER, ierTHRI)
	in(u, regIIR)
	out(u, regIER, 0)
	out(u, regLCR, 0x03) // UART_LCR_WLEN8
	out(u, regMCR, mcr|mcrOUT2)
	out(u, regIER, ierTHRI)
	in(u, regLSR)
	in(u, regIIR)
	out(u, regIER, 0)
	linuxClearInterrupts(u)
}

// linuxWaitTHRE is wait_for_xmitr(up, UART_LSR_THRE) without its 10 ms
// give-up: the UARTs under test never hold THRE low for long.
func linuxWaitTHRE(t *testing.T, u *UART) {
	t.Helper()
	for i := 0; in(u, regLSR)&lsrTHRE == 0; i++ {
		if i > 1e6 {
			t.Fatal("THRE never set")
		}
	}
}

// linuxSetTermios is serial8250_do_set_termios for 115200 8N1 with
// CLOCAL (no modem-status interrupt): IER from the shadow, divisor,
// LCR, FCR in two steps, MCR.
func linuxSetTermios(u *UART, ier, mcr byte) {
	out(u, regIER, ier)
	out(u, regLCR, 0x03|lcrDLAB)
	out(u, regData, 1)
	out(u, regIER, 0)
	out(u, regLCR, 0x03)
	out(u, regIIR, fcrEnable)
	out(u, regIIR, fcrEnable|0x80) // UART_FCR_R_TRIG_10
	out(u, regMCR, mcr)
}

// linuxOpen is the first open of a tty on the port (uart_port_startup):
// startup, set_termios with the IER shadow startup left (RLSI|RDI), then
// DTR and RTS raised.
func linuxOpen(t *testing.T, u *UART) {
	t.Helper()
	linuxStartup(t, u, 0)
	linuxSetTermios(u, ierRLSI|ierRDI, mcrOUT2)
	out(u, regMCR, mcrOUT2|mcrDTR|mcrRTS)
}

// linuxClose is the last close (uart_shutdown with HUPCL, then
// serial8250_do_shutdown): stop_rx, DTR and RTS dropped, IER cleared,
// OUT2 dropped, break off, FIFOs cleared, and RBR read "to reset things".
func linuxClose(u *UART) {
	out(u, regIER, in(u, regIER)&^(ierRLSI|ierRDI)) // serial8250_stop_rx
	out(u, regMCR, mcrOUT2)
	out(u, regIER, 0)
	out(u, regMCR, 0)
	out(u, regLCR, in(u, regLCR)&^0x40)
	linuxClearFIFOs(u)
	in(u, regData)
}

// linuxIRQ is serial8250_default_handle_irq on one interrupt: IIR, then
// LSR, then up to 256 characters while LSR says DR, MSR, and the
// transmit side when THRE is up and THRI enabled.
func linuxIRQ(u *UART, got []byte) []byte {
	if in(u, regIIR)&iirNoInt != 0 {
		return got
	}
	lsr := in(u, regLSR)
	for n := 0; lsr&lsrDR != 0 && n < 256; n++ {
		got = append(got, in(u, regData))
		lsr = in(u, regLSR)
	}
	in(u, regMSR)
	return got
}

// linuxRead runs the interrupt handler on every rising edge until want
// bytes came in or the line stays quiet.
func linuxRead(u *UART, irq *fakeIRQ, want int) []byte {
	var got []byte
	for len(got) < want {
		select {
		case <-irq.rising:
			got = linuxIRQ(u, got)
		default:
			return got
		}
	}
	return got
}

// TestInputWaitsForTheGuestToOpenThePort is the job port (ttyS1 in `vmm
// run`) and the console under piped input: whatever the host queued
// before or between opens reaches the reader whole, and nothing is taken
// from the queue while no tty has the port open.
func TestInputWaitsForTheGuestToOpenThePort(t *testing.T) {
	type step struct {
		input  string // queued by the host first
		action string // what the guest does then
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  []string // what each "read" step returns
	}{
		{"input before the probe", []step{
			{"stdin-line\n", "probe"},
			{"", "open"},
			{"", "read"},
		}, []string{"stdin-line\n"}},
		{"input after the probe, before the open", []step{
			{"", "probe"},
			{"ping-plain\n", "console"},
			{"", "open"},
			{"", "read"},
		}, []string{"ping-plain\n"}},
		{"input while open", []step{
			{"", "probe"},
			{"", "open"},
			{"abc", "read"},
		}, []string{"abc"}},
		{"close and reopen with input in between", []step{
			{"", "probe"},
			{"first\n", "open"},
			{"", "read"},
			{"", "close"},
			{"second\n", "console"},
			{"", "open"},
			{"", "read"},
		}, []string{"first\n", "second\n"}},
		{"input left unread at close waits for the next open", []step{
			{"", "probe"},
			{"", "open"},
			{"", "close"},
			{"late\n", "open"},
			{"", "close"},
			{"", "open"},
			{"", "read"},
		}, []string{"late\n"}},
		{"console writes around an open console", []step{
			{"", "probe"},
			{"", "open"},
			{"typed", "console"},
			{"", "read"},
		}, []string{"typed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq := newFakeIRQ()
			u := New(irq, io.Discard)
			var reads []string
			queued := 0
			for _, s := range tc.steps {
				if s.input != "" {
					if _, err := u.Receive([]byte(s.input)); err != nil {
						t.Fatal(err)
					}
					queued += len(s.input)
				}
				switch s.action {
				case "probe":
					if typ := linuxAutoconfig(u); typ != "16550A" {
						t.Fatalf("probe found %q", typ)
					}
				case "open":
					linuxOpen(t, u)
				case "close":
					linuxClose(u)
				case "console":
					consoleWrite(u, "kernel message\n")
				case "read":
					got := linuxRead(u, irq, queued)
					queued -= len(got)
					reads = append(reads, string(got))
				}
				// Only the interrupt handler may take input: probing,
				// opening, closing and console writes read RBR to clear
				// it, or not at all, and must leave every byte waiting.
				u.mu.Lock()
				held := u.rx.n
				u.mu.Unlock()
				if held != queued {
					t.Fatalf("after %s: %d bytes held, want %d", s.action, held, queued)
				}
			}
			if len(reads) != len(tc.want) {
				t.Fatalf("reads %q, want %q", reads, tc.want)
			}
			for i := range reads {
				if reads[i] != tc.want[i] {
					t.Errorf("read %d: %q, want %q", i, reads[i], tc.want[i])
				}
			}
		})
	}
}

// TestClosedPortHidesInput: with no tty open the receiver shows no data,
// and the RBR reads Linux makes to clear the port take nothing.
func TestClosedPortHidesInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		ier  byte
		mcr  byte
		open bool
	}{
		{"reset", 0, 0, false},
		{"RDI without OUT2", ierRDI | ierRLSI, mcrDTR | mcrRTS, false},
		{"OUT2 without RDI", ierTHRI, mcrOUT2 | mcrDTR | mcrRTS, false},
		{"loopback", ierRDI, mcrOUT2 | mcrLoop, false},
		{"open", ierRDI | ierRLSI, mcrOUT2 | mcrDTR | mcrRTS, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq := newFakeIRQ()
			u := New(irq, io.Discard)
			out(u, regMCR, tc.mcr)
			out(u, regIER, tc.ier)
			if _, err := u.Receive([]byte("xyz")); err != nil {
				t.Fatal(err)
			}
			lsr := in(u, regLSR)
			iir := in(u, regIIR)
			rbr := in(u, regData)
			if got := lsr&lsrDR != 0; got != tc.open {
				t.Errorf("LSR %#x: DR %v, want %v", lsr, got, tc.open)
			}
			if got := iir&0x0f == iirRDI; got != tc.open {
				t.Errorf("IIR %#x: RDI %v, want %v", iir, got, tc.open)
			}
			u.mu.Lock()
			held := u.rx.n
			u.mu.Unlock()
			if tc.open && (rbr != 'x' || held != 2) || !tc.open && held != 3 {
				t.Errorf("RBR %q, %d bytes still held", rbr, held)
			}
		})
	}
}

// TestReopenKeepsOrder: input across many opens and closes arrives in
// order with nothing lost or repeated, including what came in after the
// handler last ran and before the close.
func TestReopenKeepsOrder(t *testing.T) {
	irq := newFakeIRQ()
	u := New(irq, io.Discard)
	linuxAutoconfig(u)
	var want, got []byte
	for round := range 20 {
		for _, c := range []byte{'a', 'A'} {
			chunk := bytes.Repeat([]byte{c + byte(round)}, 100+round)
			if _, err := u.Receive(chunk); err != nil {
				t.Fatal(err)
			}
			want = append(want, chunk...)
			if c == 'a' {
				linuxOpen(t, u)
				got = append(got, linuxRead(u, irq, len(want)-len(got))...)
			}
		}
		// The second chunk is still unread.
		linuxClose(u)
	}
	linuxOpen(t, u)
	got = append(got, linuxRead(u, irq, len(want)-len(got))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d in order", len(got), len(want))
	}
}

// TestReceiveOnOUT1 is the raw-tty handshake: with ReceiveOnOUT1 the open
// alone shows no input (the tty is still cooked then), and raising OUT1
// (TIOCMBIS TIOCM_OUT1, which serial8250_set_mctrl writes to MCR with
// the port's other lines) releases it; a later set_termios keeps OUT1
// and so the input flowing; dropping OUT1 again (TIOCMBIC) holds input
// again. Without ReceiveOnOUT1 (the console, a guest whose own init never
// heard of OUT1) the open alone is enough and OUT1 changes nothing. A
// snapshot carries the handshake with the registers: a guest saved with
// OUT1 raised reads its input on restore, one saved before raising it
// does not, whatever the restoring UART was told. Opened says when the
// guest could first read input.
func TestReceiveOnOUT1(t *testing.T) {
	const input = "job input\n"
	lines := byte(mcrOUT2 | mcrDTR | mcrRTS)
	for _, tc := range []struct {
		name      string
		handshake bool
		// restore, if set, saves the UART right after the open (and
		// after raiseBeforeSave) and goes on in a new UART restored
		// from that state, told ReceiveOnOUT1 if restoreHandshake.
		restore, raiseBeforeSave, restoreHandshake bool
		// Bytes read after the open alone, after OUT1 is raised and
		// termios set again, and after OUT1 is dropped with more
		// input queued.
		atOpen, atOUT1, afterDrop string
	}{
		{name: "handshake", handshake: true, atOpen: "", atOUT1: input, afterDrop: ""},
		{name: "no handshake", handshake: false, atOpen: input, atOUT1: "", afterDrop: "more"},
		{name: "restored with OUT1 raised", handshake: true, restore: true, raiseBeforeSave: true,
			atOpen: input, atOUT1: "", afterDrop: ""},
		{name: "restored before OUT1", handshake: true, restore: true, restoreHandshake: true,
			atOpen: "", atOUT1: input, afterDrop: ""},
		{name: "restored handshake the new UART was not told of", handshake: true, restore: true,
			atOpen: "", atOUT1: input, afterDrop: ""},
		{name: "restored without handshake into a handshake UART", handshake: false, restore: true, restoreHandshake: true,
			atOpen: input, atOUT1: "", afterDrop: "more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq := newFakeIRQ()
			u := New(irq, io.Discard)
			if tc.handshake {
				u.ReceiveOnOUT1()
			}
			linuxAutoconfig(u)
			linuxOpen(t, u)
			if tc.restore {
				if tc.raiseBeforeSave {
					out(u, regMCR, lines|mcrOUT1)
				}
				s := u.State()
				if s.ReceiveOnOUT1 != tc.handshake {
					t.Fatalf("saved ReceiveOnOUT1 %v, want %v", s.ReceiveOnOUT1, tc.handshake)
				}
				irq = newFakeIRQ()
				u = New(irq, io.Discard)
				if tc.restoreHandshake {
					u.ReceiveOnOUT1()
				}
				if err := u.Restore(s); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := isClosed(u.Opened()), tc.atOpen != ""; got != want {
				t.Fatalf("after the open Opened is closed: %v, want %v", got, want)
			}
			if _, err := u.Receive([]byte(input)); err != nil {
				t.Fatal(err)
			}
			if got := string(linuxRead(u, irq, len(input))); got != tc.atOpen {
				t.Fatalf("after the open the guest read %q, want %q", got, tc.atOpen)
			}
			out(u, regMCR, lines|mcrOUT1) // TIOCMBIS TIOCM_OUT1
			linuxSetTermios(u, ierRLSI|ierRDI, lines|mcrOUT1)
			if got := string(linuxRead(u, irq, len(input))); got != tc.atOUT1 {
				t.Fatalf("after OUT1 the guest read %q, want %q", got, tc.atOUT1)
			}
			if !isClosed(u.Opened()) {
				t.Fatal("Opened not closed with the port open and OUT1 raised")
			}
			out(u, regMCR, lines) // TIOCMBIC TIOCM_OUT1
			if _, err := u.Receive([]byte("more")); err != nil {
				t.Fatal(err)
			}
			if got := string(linuxRead(u, irq, 4)); got != tc.afterDrop {
				t.Fatalf("after OUT1 dropped the guest read %q, want %q", got, tc.afterDrop)
			}
			// Held input is not shown to a guest that polls either.
			if lsr := in(u, regLSR); lsr&lsrDR != 0 {
				t.Errorf("LSR %#x: DR set with nothing the guest may read", lsr)
			}
		})
	}
}

// EndInput drops DSR only once the guest has read every byte received
// before it, with DDSR and, when the guest enabled it (TIOCMIWAIT does),
// a modem status interrupt; MCR writes after that keep DSR off outside
// loopback, and in loopback the lines are the loop's, as the probe needs.
func TestEndInput(t *testing.T) {
	irq := newFakeIRQ()
	u := New(irq, nil)
	linuxOpen(t, u)
	if _, err := u.Receive([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	u.EndInput()
	if got := in(u, regMSR); got&msrDSR == 0 || got&msrDDSR != 0 {
		t.Fatalf("MSR %#x with input still unread: want DSR on, no DDSR", got)
	}
	out(u, regIER, ierRLSI|ierRDI|ierMSI) // uart_enable_ms
	if b := in(u, regData); b != 'a' {
		t.Fatalf("read %q, want a", b)
	}
	if got := in(u, regMSR); got&msrDSR == 0 {
		t.Fatalf("MSR %#x with one byte unread: want DSR on", got)
	}
	if b := in(u, regData); b != 'b' {
		t.Fatalf("read %q, want b", b)
	}
	if id := in(u, regIIR) & 0x0f; id != iirMSI {
		t.Errorf("IIR %#x after the last byte: want a modem status interrupt", id)
	}
	if level, _, _ := irq.state(); !level {
		t.Error("interrupt line low with a modem status interrupt pending")
	}
	if got := in(u, regMSR); got&msrDSR != 0 || got&msrDDSR == 0 || got&(msrDCD|msrCTS) != msrDCD|msrCTS {
		t.Errorf("MSR %#x after the last byte: want DSR off with DDSR, DCD and CTS on", got)
	}
	if id := in(u, regIIR) & 0x0f; id != iirNoInt {
		t.Errorf("IIR %#x after MSR was read: want none", id)
	}
	out(u, regMCR, mcrOUT2|mcrDTR|mcrRTS|mcrOUT1)
	if got := in(u, regMSR); got != msrDCD|msrCTS {
		t.Errorf("MSR %#x after an MCR write: want DCD and CTS only", got)
	}
	out(u, regMCR, mcrLoop|mcrDTR)
	if got := in(u, regMSR) & 0xf0; got != msrDSR {
		t.Errorf("MSR lines %#x in loopback with DTR: want DSR", got)
	}

	// With nothing unread, DSR drops at once.
	v := New(nil, nil)
	linuxOpen(t, v)
	v.EndInput()
	if got := in(v, regMSR); got&msrDSR != 0 || got&msrDDSR == 0 {
		t.Errorf("MSR %#x after EndInput with no input: want DSR off with DDSR", got)
	}
}

// TestRTSHoldsInput is hardware flow control as Linux drives it on a tty
// with CRTSCTS (vmm-init's job port): when the tty throttles, its
// buffers full behind a slow reader, uart_throttle drops RTS
// (serial8250_set_mctrl writes MCR without it) and the port shows no
// input (no DR, no interrupt) however much the host queues; when it
// unthrottles, RTS comes back and everything arrives, in order. Before
// vmm honoured RTS (2026-12-06) the 8250 driver kept reading and the
// serial core dropped what its buffers could not hold.
func TestRTSHoldsInput(t *testing.T) {
	irq := newFakeIRQ()
	u := New(irq, nil)
	linuxOpen(t, u)
	if _, err := u.Receive([]byte("before ")); err != nil {
		t.Fatal(err)
	}
	got := linuxIRQ(u, nil)
	out(u, regMCR, mcrOUT2|mcrDTR) // uart_throttle: RTS down
	if _, err := u.Receive([]byte("while throttled")); err != nil {
		t.Fatal(err)
	}
	if level, _, _ := irq.state(); level {
		t.Error("interrupt raised with RTS down")
	}
	if lsr := in(u, regLSR); lsr&lsrDR != 0 {
		t.Errorf("LSR %#x shows data with RTS down", lsr)
	}
	if held := linuxIRQ(u, nil); len(held) != 0 {
		t.Errorf("read %q with RTS down", held)
	}
	out(u, regMCR, mcrOUT2|mcrDTR|mcrRTS) // uart_unthrottle: RTS up
	if level, _, _ := irq.state(); !level {
		t.Error("no interrupt once RTS came back")
	}
	got = linuxIRQ(u, got)
	if want := "before while throttled"; string(got) != want {
		t.Errorf("read %q, want %q", got, want)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
