// Package serial emulates a 16550A UART, the PC's COM port.
//
// The guest's console lives here, so the model is shaped by what Linux's
// 8250 driver does to a port rather than by baud-rate timing: bytes are
// sent the instant THR is written, the receive side never overruns (the
// host blocks instead), and everything Linux probes at boot (IER scratch
// test, loopback modem lines, FIFO bits in IIR, the THRE re-assert test)
// answers exactly as a real 16550A does, so the port is detected as a
// "16550A" and the console is interrupt driven.
//
// Host input is held outside the chip until the guest opens the port for
// receiving (see rxOpen), because Linux reads RBR to clear it when it
// probes, opens and closes a port: a character already "in the FIFO"
// then would be lost. Transmitted bytes go to the host writer, which may
// ask the guest to wait (see Paced) instead of blocking the vCPU.
package serial

import (
	"errors"
	"io"
	"sync"
)

// Register offsets from the port base, from the PC16550D datasheet
// (TI SNLS378, Table II) and Linux include/uapi/linux/serial_reg.h.
const (
	regData = 0 // RBR (read), THR (write); DLL when LCR.DLAB
	regIER  = 1 // DLM when LCR.DLAB
	regIIR  = 2 // IIR (read), FCR (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7

	// NumPorts is how many I/O ports the UART decodes (base+0..base+7).
	NumPorts = 8
)

// IER bits (serial_reg.h UART_IER_*).
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status
	ierMask = 0x0f // bits 4-7 read as 0 on a 16550A
)

// IIR values (serial_reg.h UART_IIR_*). The ID occupies bits 0-3; bits
// 6-7 report the FIFOs as enabled, which is how Linux tells a 16550A
// (both set) from a 16550 with its broken FIFO (only bit 7) or a 16450.
const (
	iirNoInt = 0x01
	iirMSI   = 0x00
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirRLSI  = 0x06
	iirFIFOs = 0xc0
)

// FCR bits (serial_reg.h UART_FCR_*).
const (
	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04
	fcrDMA     = 0x08
	fcrTrigger = 0xc0 // RX trigger level, stored but unused
	fcrKept    = fcrEnable | fcrDMA | fcrTrigger
)

// LCR bit 7 (UART_LCR_DLAB) maps the divisor latch over RBR/THR and IER.
const lcrDLAB = 0x80

// MCR bits (serial_reg.h UART_MCR_*). Bits 5-7 read as 0 on a 16550A.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f
)

// LSR bits (serial_reg.h UART_LSR_*).
const (
	lsrDR     = 0x01 // data ready
	lsrOE     = 0x02 // overrun error
	lsrPE     = 0x04
	lsrFE     = 0x08
	lsrBI     = 0x10
	lsrTHRE   = 0x20
	lsrTEMT   = 0x40
	lsrErrors = lsrOE | lsrPE | lsrFE | lsrBI
)

// MSR bits (serial_reg.h UART_MSR_*): line states in the high nibble,
// their change flags in the low nibble.
const (
	msrDCTS  = 0x01
	msrDDSR  = 0x02
	msrTERI  = 0x04 // trailing edge: RI went from on to off
	msrDDCD  = 0x08
	msrCTS   = 0x10
	msrDSR   = 0x20
	msrRI    = 0x40
	msrDCD   = 0x80
	msrDelta = 0x0f
)

// hostLines are the modem inputs the host side presents outside loopback:
// a modem that is present (DSR), has carrier (DCD) and is ready to accept
// data (CTS), so a guest using hardware flow control or waiting for
// carrier (a getty without CLOCAL) talks straight away.
const hostLines = msrDCD | msrDSR | msrCTS

const (
	// RXBufferSize bounds the host input waiting for the guest. It is
	// far deeper than the chip's 16-byte FIFO because the host blocks
	// rather than overruns, and a deep buffer keeps a paste from
	// stalling the host side on every 16 bytes.
	RXBufferSize = 4096

	// fifoDepth is the 16550A's receive FIFO, used only for loopback
	// data, which the chip itself produces and so can overrun.
	fifoDepth = 16

	// txLoad is how many bytes a guest may write after seeing THRE: the
	// 16550A's 16-byte transmit FIFO (PC16550D, FIFO mode), which is
	// Linux's tx_loadsz for the port (uart_config[PORT_16550A] in
	// 8250_port.c); serial8250_tx_chars writes that many per THRE
	// interrupt without looking at LSR in between. A Paced writer must
	// have room for them before THRE is shown.
	txLoad = 16
)

// ErrClosed is returned by Receive once the UART is closed.
var ErrClosed = errors.New("serial: UART closed")

// IRQ is the UART's interrupt line. SetLevel(true) asserts it. The machine
// wires it to an IOAPIC pin, edge-triggered as ISA interrupts are: an
// interrupt fires on a low->high transition.
//
// The UART calls SetLevel only when the level changes, and calls it with
// its own lock held so that transitions reach the interrupt controller in
// the order the register accesses caused them. SetLevel must therefore not
// call back into the UART.
type IRQ interface {
	SetLevel(high bool)
}

// Paced is a host writer that can make the guest wait instead of losing
// bytes. When the writer given to New implements it, the UART shows its
// transmitter busy (LSR.THRE and TEMT clear, no THRE interrupt) while the
// writer says no to another FIFO load (a writer shared with other devices
// also keeps their reserve free), and raises THRE, with its interrupt,
// when NotifyReady's function says room came back: the guest
// waits as it would for a slow line, and the vCPU never does. Without
// it the transmitter is always ready and the writer decides what a full
// host side means (a console drops).
type Paced interface {
	// Ready reports whether n more bytes can be written now without
	// loss. After it reports false, the function given to NotifyReady
	// is called once they can (or once they never need to, because the
	// host side is gone and discards).
	Ready(n int) bool
	// NotifyReady registers that function (a writer shared with other
	// devices calls each of theirs too) and most, the most bytes the UART
	// writes on one yes from Ready (a FIFO load), which a writer shared
	// with other devices keeps free for it. f is called without any lock
	// the writer's Write or Ready take, from a goroutine of the writer's,
	// so it may call back into Ready.
	NotifyReady(f func(), most int)
}

// UART is one 16550A. Its zero value is not usable; call New.
type UART struct {
	irq   IRQ
	out   io.Writer
	paced Paced // out, when it can make the guest wait; else nil

	mu         sync.Mutex
	ier        byte
	lcr        byte
	mcr        byte
	fcr        byte
	scr        byte
	dll, dlm   byte
	lsrErr     byte // sticky LSR error bits, cleared by reading LSR
	msrDelta   byte // MSR change bits, cleared by reading MSR
	lines      byte // current modem input lines (MSR high nibble)
	rbr        byte // last byte handed to the guest
	thrPending bool // the THRE interrupt condition (see readIIR)
	txBusy     bool // paced has no room for a FIFO load: THRE is clear
	rxNeed     byte // MCR bits besides OUT2 that must be set to receive
	// inputEnded is set by EndInput; dsrDown once the guest has taken
	// the last byte after it, and DSR is off from then on.
	inputEnded bool
	dsrDown    bool
	level      bool // last level given to irq
	rx         ring // host input, waiting for the guest
	// lb holds bytes the guest sent to itself in loopback mode (Linux's
	// probe). It is kept apart from rx so that the FIFO clears Linux
	// issues when it probes and opens the port discard the probe's bytes
	// but never input the host has already queued (a pipe read at start).
	lb ring
	tx [1]byte

	// recvMu keeps one Receive call's bytes contiguous when several
	// goroutines feed input, and leaves at most one waiter on space.
	recvMu    sync.Mutex
	space     chan struct{} // a token after the guest frees RX space
	closed    chan struct{}
	closeOnce sync.Once
	// opened is closed, and wasOpen set, the first time the guest
	// opens the receive side (rxOpen): Opened.
	opened  chan struct{}
	wasOpen bool
}

// New returns a UART in its reset state whose transmitted bytes go to out
// and whose interrupt line is irq. Either may be nil: output is then
// discarded, and interrupts go nowhere (a guest can still poll).
//
// out.Write is called on the vCPU thread, with the UART's lock held, for
// every byte the guest sends, so it must return at once: a host file
// belongs behind a queue that a goroutine of its own drains (package
// hostout), or a reader that stalls would stall the guest's vCPU and
// everything waiting for it. If out implements Paced, the guest is made
// to wait for room instead.
func New(irq IRQ, out io.Writer) *UART {
	if irq == nil {
		irq = noIRQ{}
	}
	if out == nil {
		out = io.Discard
	}
	u := &UART{
		irq:    irq,
		out:    out,
		lines:  hostLines,
		dll:    0x0c, // 9600 baud from the PC's 1.8432 MHz clock; Linux reprograms it
		space:  make(chan struct{}, 1),
		closed: make(chan struct{}),
		opened: make(chan struct{}),
	}
	if p, ok := out.(Paced); ok {
		u.paced = p
		p.NotifyReady(u.txReady, txLoad)
	}
	return u
}

type noIRQ struct{}

func (noIRQ) SetLevel(bool) {}

// Read handles a guest IN. A 2- or 4-byte access reads consecutive
// registers, as an 8-bit ISA device answers a wide access.
func (u *UART) Read(offset uint64, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range data {
		data[i] = u.readReg(offset + uint64(i))
	}
	u.update()
}

// Write handles a guest OUT, a byte at a time like Read.
func (u *UART) Write(offset uint64, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, v := range data {
		u.writeReg(offset+uint64(i), v)
	}
	u.update()
}

func (u *UART) readReg(off uint64) byte {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			return u.dll
		}
		if b, ok := u.lb.pop(); ok {
			u.rbr = b
		} else if !u.rxOpen() {
			// A read to clear the port (Linux does several on every
			// open and close): no host byte is consumed, RBR keeps its
			// last value as an empty chip's does.
		} else if b, ok := u.rx.pop(); ok {
			u.rbr = b
			u.dropDSRAtEnd()
			if u.rx.n <= len(u.rx.buf)/2 {
				// A blocked Receive waits for half the buffer, not
				// for each byte: waking the host's input goroutine
				// per byte the guest reads made a context switch per
				// byte on the CPU the vCPU runs on.
				u.wakeReceiver()
			}
		}
		return u.rbr
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			return u.dlm
		}
		return u.ier
	case regIIR:
		return u.readIIR()
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		v := u.lsr()
		u.lsrErr = 0
		return v
	case regMSR:
		v := u.lines | u.msrDelta
		u.msrDelta = 0
		return v
	case regSCR:
		return u.scr
	}
	return 0xff
}

func (u *UART) writeReg(off uint64, v byte) {
	switch off {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			u.dll = v
			return
		}
		u.transmit(v)
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			u.dlm = v
			return
		}
		old := u.ier
		u.ier = v & ierMask
		// The transmitter is always idle here, so enabling THRI finds THR
		// empty and interrupts, as on the chip. Linux depends on it twice:
		// its startup test for UARTs that fail to re-assert THRE, and its
		// console write, which saves IER, clears it, polls the bytes out
		// and restores IER, expecting the restore to restart the tty's
		// interrupt-driven output. Losing this interrupt hangs the tty.
		// A busy transmitter (Paced) interrupts when it empties instead.
		if u.ier&ierTHRI != 0 && old&ierTHRI == 0 && !u.txBusy {
			u.thrPending = true
		}
	case regIIR:
		u.writeFCR(v)
	case regLCR:
		u.lcr = v
	case regMCR:
		u.mcr = v & mcrMask
		u.setLines()
	case regSCR:
		u.scr = v
	}
	// LSR and MSR are read-only; writes to them are dropped as on the chip.
}

// transmit sends one byte. The write to out happens under the lock so
// bytes from several vCPUs keep the order in which THR was written.
func (u *UART) transmit(v byte) {
	// THRE drops while THR holds the byte and rises again once the byte
	// moves on; with an instant transmitter that is a pulse, and it is
	// what gives each THR write its own THRE edge on the interrupt line.
	u.thrPending = false
	u.update()
	if u.mcr&mcrLoop != 0 {
		u.loopback(v)
	} else {
		u.tx[0] = v
		// A UART cannot report a host-side failure: the byte is lost
		// as on a disconnected line, and THRE is raised regardless so
		// the guest's transmit path keeps moving instead of hanging.
		// (A Paced writer takes the byte if it has any room: only a
		// guest that ignores THRE can outrun it.)
		_, _ = u.out.Write(u.tx[:])
		if u.paced != nil && !u.paced.Ready(txLoad) {
			u.txBusy = true
		}
	}
	if !u.txBusy {
		u.thrPending = true
	}
}

// txReady is the Paced writer's call when room came back: the
// transmitter empties, which is a THRE interrupt condition as on the
// chip. It runs on the writer's goroutine.
func (u *UART) txReady() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.txBusy || !u.paced.Ready(txLoad) {
		return
	}
	u.txBusy = false
	u.thrPending = true
	u.update()
}

// loopback feeds a transmitted byte to the receiver, overrunning when the
// FIFO (or, with FIFOs off, the single holding register) is full, which is
// what Linux's FIFO-size probe counts on.
func (u *UART) loopback(v byte) {
	depth := 1
	if u.fcr&fcrEnable != 0 {
		depth = fifoDepth
	}
	if u.lb.n >= depth || !u.lb.push(v) {
		u.lsrErr |= lsrOE
	}
}

func (u *UART) writeFCR(v byte) {
	// Toggling FIFO enable resets both FIFOs (PC16550D, FCR bit 0). Only
	// looped-back bytes are dropped: host input stands for characters
	// still "on the wire", and losing what a user piped in because the
	// guest opened its console late would be data loss.
	if (v^u.fcr)&fcrEnable != 0 || v&fcrClearRX != 0 {
		u.lb.reset()
	}
	if v&fcrEnable == 0 {
		u.fcr = 0 // the other bits are writable only with FIFOs enabled
		return
	}
	u.fcr = v & fcrKept // clear bits self-reset; TX has nothing to clear
}

// readIIR reports the highest-priority pending interrupt. Reading it when
// the answer is THRE clears the THRE condition, as on the chip: the
// interrupt handler's IIR read is what lets the line drop so the next
// condition makes a fresh edge.
func (u *UART) readIIR() byte {
	id := u.pendingID()
	if id == iirTHRI {
		u.thrPending = false
	}
	if u.fcr&fcrEnable != 0 {
		id |= iirFIFOs
	}
	return id
}

// pendingID is the 16550's interrupt priority: line status, received
// data, THR empty, modem status.
func (u *UART) pendingID() byte {
	switch {
	case u.ier&ierRLSI != 0 && u.lsrErr != 0:
		return iirRLSI
	case u.ier&ierRDI != 0 && u.rxReady():
		return iirRDI
	case u.ier&ierTHRI != 0 && u.thrPending:
		return iirTHRI
	case u.ier&ierMSI != 0 && u.msrDelta != 0:
		return iirMSI
	}
	return iirNoInt
}

func (u *UART) lsr() byte {
	v := u.lsrErr
	if !u.txBusy {
		// With an instant transmitter THR and the shift register empty
		// together, so TEMT follows THRE.
		v |= lsrTHRE | lsrTEMT
	}
	if u.rxReady() {
		v |= lsrDR
	}
	return v
}

// rxOpen reports whether the guest has opened the port for receiving:
// the received-data interrupt enabled, the IRQ line enabled by OUT2, and
// the receiver not in loopback (where the chip disconnects the serial
// input). Linux sets exactly this when a tty on the port is opened (IER
// from set_termios, OUT2 from startup) and clears it before every RBR
// read it makes to clear the port: in autoconfig, twice in startup and
// in shutdown (stop_rx clears RDI). The serial core's comment on em485
// says the same: reception is stopped "by disabling the UART_IER_RDI
// interrupt" (its throttling of a full tty does not: see RTS below).
// Until then host input waits in rx, unseen (LSR.DR clear, no RDI
// interrupt) and untouched by RBR reads, so it reaches the tty whole
// instead of losing its first bytes to those reads. A guest that polls
// with IER.RDI off gets no input.
//
// The guest must also hold RTS up: it is the receiver's "ready" in
// hardware flow control, and vmm, the sending end, honours it. Linux
// raises RTS (with DTR) when a tty on the port is opened with a baud
// rate (uart_port_startup); with CRTSCTS set it drops RTS when the tty
// throttles, its buffers full because the program reading the tty does
// not keep up, and raises it again when that program has read
// (uart_throttle, uart_unthrottle). Without flow control it throttles
// nothing: the 8250 driver goes on reading RBR and the serial core drops
// what its buffers cannot hold (640 KiB of flip buffers), which is how a
// job's stdin got cut short behind a job slow to read it. vmm-init sets
// CRTSCTS on the job's port.
func (u *UART) rxOpen() bool {
	want := mcrOUT2 | mcrRTS | u.rxNeed
	return u.ier&ierRDI != 0 && u.mcr&(want|mcrLoop) == want
}

// ReceiveOnOUT1 makes the port hold host input until the guest has also
// raised OUT1 (MCR bit 2), a handshake for a port a guest program reads
// raw. Linux opens a tty with its line discipline cooked (canonical,
// echo, ICRNL, ISIG) and enables receiving during the open, before the
// program can make it raw: input already waiting would be echoed back,
// translated or taken for signals. The program raises OUT1 with
// ioctl(TIOCMBIS, TIOCM_OUT1) once the tty is raw. OUT1 drives nothing
// on a PC, and Linux's 8250 driver leaves it as the program set it
// (it sets it itself only on AST FourPort boards). Call it before the
// guest runs.
func (u *UART) ReceiveOnOUT1() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rxNeed = mcrOUT1
	u.update()
}

// Opened is closed once the guest has first opened the port's receive
// side: its driver enabled the receive interrupt and raised RTS and OUT2
// (and OUT1, with ReceiveOnOUT1). vmm's job input goes to whichever of
// the job's UART and its virtio input port the guest's init opens.
func (u *UART) Opened() <-chan struct{} { return u.opened }

// EndInput tells the guest that the host's input has ended, as DSR
// going off: once the guest has read every byte already received (at
// once if there are none), the port drops DSR and sets DDSR, with a
// modem status interrupt if the guest enabled one. A program that must
// know where its input ends (vmm run's job, whose stdin is vmm's, a pipe
// that closes) watches DSR with TIOCMIWAIT or TIOCMGET, and knows it has
// every byte once it has read what the tty holds after DSR dropped. A
// raw serial line has no in-band end, and none of its bytes can be
// spared for one: the job's input is binary. Call it after the last
// Receive has returned.
func (u *UART) EndInput() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.inputEnded = true
	u.dropDSRAtEnd()
	u.update()
}

// dropDSRAtEnd drops DSR once the input has ended and the guest has
// taken all of it.
func (u *UART) dropDSRAtEnd() {
	if !u.inputEnded || u.dsrDown || u.rx.n > 0 {
		return
	}
	u.dsrDown = true
	u.setLines()
}

// presentLines are the modem inputs the host side presents now: hostLines,
// without DSR once the input has ended.
func (u *UART) presentLines() byte {
	if u.dsrDown {
		return hostLines &^ msrDSR
	}
	return hostLines
}

// rxReady is LSR.DR: a looped-back byte, or host input the guest has
// opened the port for.
func (u *UART) rxReady() bool {
	return u.lb.n > 0 || u.rx.n > 0 && u.rxOpen()
}

// setLines recomputes the modem inputs after an MCR write. In loopback
// the outputs drive the inputs (DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD);
// Linux's probe checks exactly that mapping before trusting the port.
func (u *UART) setLines() {
	lines := u.presentLines()
	if u.mcr&mcrLoop != 0 {
		lines = 0
		if u.mcr&mcrDTR != 0 {
			lines |= msrDSR
		}
		if u.mcr&mcrRTS != 0 {
			lines |= msrCTS
		}
		if u.mcr&mcrOUT1 != 0 {
			lines |= msrRI
		}
		if u.mcr&mcrOUT2 != 0 {
			lines |= msrDCD
		}
	}
	changed := lines ^ u.lines
	if changed&msrCTS != 0 {
		u.msrDelta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		u.msrDelta |= msrDDSR
	}
	if changed&msrDCD != 0 {
		u.msrDelta |= msrDDCD
	}
	if changed&msrRI != 0 && lines&msrRI == 0 {
		u.msrDelta |= msrTERI
	}
	u.lines = lines
}

// wantLevel is the level of the IRQ pin as a PC wires it: the chip's
// INTR output passes through a buffer enabled by OUT2, and in loopback the
// chip forces OUT2 inactive, so the line is quiet during Linux's probe.
func (u *UART) wantLevel() bool {
	return u.mcr&mcrOUT2 != 0 && u.mcr&mcrLoop == 0 && u.pendingID() != iirNoInt
}

// update drives the interrupt line after any state change. It runs after
// every register access and every Receive, so no path can leave the line
// stale; calling SetLevel only on a change keeps KVM_IRQ_LINE ioctls off
// the hot path of polled output.
func (u *UART) update() {
	if !u.wasOpen && u.rxOpen() {
		u.wasOpen = true
		close(u.opened)
	}
	if l := u.wantLevel(); l != u.level {
		u.level = l
		u.irq.SetLevel(l)
	}
}

// Receive queues host input for the guest, like io.Writer.Write. When the
// RX buffer is full it blocks until the guest reads enough, so a paste is
// never dropped; it returns early with ErrClosed once Close is called,
// reporting how many bytes were queued.
func (u *UART) Receive(p []byte) (int, error) {
	u.recvMu.Lock()
	defer u.recvMu.Unlock()
	n := 0
	for {
		select {
		case <-u.closed:
			return n, ErrClosed
		default:
		}
		n += u.push(p[n:])
		if n == len(p) {
			return n, nil
		}
		select {
		case <-u.space:
		case <-u.closed:
			return n, ErrClosed
		}
	}
}

// push queues as much of p as fits and reports how much that was.
func (u *UART) push(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for n < len(p) && u.rx.push(p[n]) {
		n++
	}
	u.update()
	return n
}

// wakeReceiver tells a blocked Receive there is room. The channel holds
// one token, so a wake-up sent before Receive starts waiting is kept.
func (u *UART) wakeReceiver() {
	select {
	case u.space <- struct{}{}:
	default:
	}
}

// Close makes pending and future Receive calls return ErrClosed, so the
// goroutine copying host input does not outlive the machine. The guest
// side keeps working. Close is idempotent and always returns nil.
func (u *UART) Close() error {
	u.closeOnce.Do(func() { close(u.closed) })
	return nil
}

// ring is the RX buffer: a fixed array, so a flood of input cannot grow
// the VMM's memory.
type ring struct {
	buf  [RXBufferSize]byte
	head int
	n    int
}

func (r *ring) push(b byte) bool {
	if r.n == len(r.buf) {
		return false
	}
	r.buf[(r.head+r.n)%len(r.buf)] = b
	r.n++
	return true
}

func (r *ring) pop() (byte, bool) {
	if r.n == 0 {
		return 0, false
	}
	b := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return b, true
}

func (r *ring) reset() { r.head, r.n = 0, 0 }
