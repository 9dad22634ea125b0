package serial

import "fmt"

// State is a UART's registers and buffered bytes as a snapshot keeps
// them. Host-side plumbing (the writer, the interrupt line, a paced
// writer's room) is not state: the restoring machine wires its own.
type State struct {
	IER        byte
	LCR        byte
	MCR        byte
	FCR        byte
	SCR        byte
	DLL        byte
	DLM        byte
	LSRErr     byte
	MSRDelta   byte
	Lines      byte
	RBR        byte
	THRPending bool
	Level      bool
	RX         []byte
	Loopback   []byte
	// ReceiveOnOUT1 is the raw-tty handshake (see UART.ReceiveOnOUT1).
	// It is kept with the registers, whose MCR says whether the guest
	// has raised OUT1, because the two only mean something together: a
	// guest saved while it waits for its job on a handshake port
	// expects input to flow again on restore, and one saved before its
	// program raised OUT1 must not see input early.
	ReceiveOnOUT1 bool
}

// State returns the UART's state. The machine takes it with the vCPUs
// stopped, so no register access races it; input a host goroutine is
// still feeding may or may not be in RX.
func (u *UART) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return State{
		IER: u.ier, LCR: u.lcr, MCR: u.mcr, FCR: u.fcr, SCR: u.scr, DLL: u.dll, DLM: u.dlm,
		LSRErr: u.lsrErr, MSRDelta: u.msrDelta, Lines: u.lines, RBR: u.rbr,
		THRPending: u.thrPending, Level: u.level,
		RX: u.rx.bytes(), Loopback: u.lb.bytes(),
		ReceiveOnOUT1: u.rxNeed&mcrOUT1 != 0,
	}
}

// Restore puts a UART made by New in state s. The interrupt line's level
// is taken as it was saved without driving it: the interrupt
// controller's own state, restored with it, already holds that level.
// The OUT1 handshake is s's, replacing whatever ReceiveOnOUT1 set: it
// belongs to the saved guest's program, not to the restoring host.
func (u *UART) Restore(s State) error {
	if len(s.RX) > RXBufferSize || len(s.Loopback) > RXBufferSize {
		return fmt.Errorf("serial: %d bytes of input and %d of loopback, buffers hold %d", len(s.RX), len(s.Loopback), RXBufferSize)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ier, u.lcr, u.mcr, u.fcr, u.scr, u.dll, u.dlm = s.IER, s.LCR, s.MCR, s.FCR, s.SCR, s.DLL, s.DLM
	u.lsrErr, u.msrDelta, u.lines, u.rbr = s.LSRErr, s.MSRDelta, s.Lines, s.RBR
	u.thrPending, u.level = s.THRPending, s.Level
	u.rxNeed = 0
	if s.ReceiveOnOUT1 {
		u.rxNeed = mcrOUT1
	}
	u.txBusy = false
	// The end of input is the restoring host's, like its input.
	u.inputEnded, u.dsrDown = false, false
	u.rx.reset()
	for _, b := range s.RX {
		u.rx.push(b)
	}
	u.lb.reset()
	for _, b := range s.Loopback {
		u.lb.push(b)
	}
	u.update()
	return nil
}

// bytes returns the ring's contents, oldest first.
func (r *ring) bytes() []byte {
	if r.n == 0 {
		return nil
	}
	out := make([]byte, r.n)
	for i := range out {
		out[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	return out
}
