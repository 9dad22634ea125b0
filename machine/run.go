package machine

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/virtio/console"
)

// Run boots the guest and blocks until it powers off or reboots (nil),
// fails (an error saying why, with the vCPU's registers where they
// help), or ctx is canceled (ctx's error).
func (m *Machine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	m.places = make([]VCPUPlace, len(m.vcpus))
	if m.cfg.SaveOnWait {
		m.snap.inGuest.Add(len(m.vcpus))
	}
	for _, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// left says v will not enter the guest again, once, on
			// whatever path its thread ends (saveVCPUOnThread).
			left := func() {}
			if m.cfg.SaveOnWait {
				left = sync.OnceFunc(m.snap.inGuest.Done)
			}
			defer left()
			// A panic here is a bug in vmm (a device's emulation runs
			// on this thread), never the guest's doing: it stops the
			// machine as an error, with the stack for the report, so
			// that vmm still ends the way it always does (the
			// terminal restored, disks closed, status 1) instead of
			// crashing with the terminal raw.
			defer func() {
				if r := recover(); r != nil {
					m.stop(StopError, &BugError{What: fmt.Sprintf("vCPU %d", v.ID()), Panic: r, Stack: debug.Stack()})
				}
			}()
			if err := m.runVCPU(v, left); err != nil {
				m.stop(StopError, err)
			}
		}()
	}
	// The devices are handed over here, not read by the goroutines:
	// Close clears the machine's fields while a forwarder may still be
	// blocked in its reader.
	if m.job != nil && m.cfg.JobInput != nil {
		port := m.jobInPort
		if m.cfg.JobPortInput != nil {
			port = nil // the port has input of its own
		}
		r, u, done := m.cfg.JobInput, m.job, m.done
		m.goDevice("job input", func() { forwardJobInput(r, u, port, done) })
	}
	if m.jobInPort != nil && m.cfg.JobPortInput != nil {
		r, p, done := m.cfg.JobPortInput, m.jobInPort, m.done
		m.goDevice("job input", func() { forwardWhenOpen(r, p, done) })
	}
	if m.cfg.ConsoleIn != nil {
		// This goroutine may stay blocked in Read after Run returns when
		// the reader cannot be interrupted (a terminal); it holds nothing
		// but the UART, which Close unblocks.
		go forwardInput(m.cfg.ConsoleIn, m.uart, false)
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		m.stop(StopCanceled, ctx.Err())
	}
	wg.Wait()
	switch m.Reason() {
	case StopPoweroff, StopReboot, StopExit:
		// The guest ended: what it wrote before is output, however
		// long the host's reader takes, while ctx allows.
		if err := m.flushJobOutput(ctx); err != nil {
			m.mu.Lock()
			m.reason, m.err = StopCanceled, err
			m.mu.Unlock()
		}
	case StopCanceled, StopError:
		// Stopped from outside or by a fault: the job's last output
		// (often what says why) still goes out if the host takes
		// it at once, as the UART's queued bytes do.
		fctx, cancel := context.WithTimeout(context.Background(), stopFlushGrace)
		m.flushJobOutput(fctx)
		cancel()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reason == StopPoweroff || m.reason == StopReboot || m.reason == StopExit {
		return nil
	}
	return m.err
}

// stopFlushGrace bounds what a run stopped by -timeout, a signal or a
// fault spends taking the job's queued output off its port: the stop
// must stay prompt, and a reader that is not keeping up gets the rest
// dropped as it would from the UART's queue.
const stopFlushGrace = 300 * time.Millisecond

// Reason reports why the machine stopped.
func (m *Machine) Reason() StopReason {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason
}

// BugError is a panic that stopped the machine: a bug in vmm, never the
// guest's doing. Its message is one line; the stack, for the report, is
// apart, so that a caller can print it as the lines it is.
type BugError struct {
	What  string // where: "vCPU 0", a device's name
	Panic any    // what the panic was given
	Stack []byte // debug.Stack where it was recovered
}

func (e *BugError) Error() string {
	return fmt.Sprintf("%s: internal error, a bug in vmm: %v", e.What, e.Panic)
}

// goDevice runs f, device work, on a goroutine of its own. A panic there
// is a bug in vmm's device code, never the guest's doing: it stops the
// machine as an error with its stack, as one on a vCPU's thread does,
// so vmm still restores the terminal and exits 1.
func (m *Machine) goDevice(name string, f func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				m.stop(StopError, &BugError{What: name, Panic: r, Stack: debug.Stack()})
			}
		}()
		f()
	}()
}

// forwardJobInput sends the job's input r to whichever of its UART u and
// its input port p (nil for none) the guest's init opens first: the port
// when the init finds it, the UART otherwise (a kernel without
// virtio_console, an init that knows only the UART). Nothing is read
// before that, so no byte goes where the guest will not read it.
func forwardJobInput(r io.Reader, u *serial.UART, p *console.Device, done <-chan struct{}) {
	if p != nil {
		select {
		case <-u.Opened():
		case <-p.Opened():
			forwardToPort(r, p, done)
			return
		case <-done:
			return
		}
	}
	forwardInput(r, u, true)
}

// forwardWhenOpen sends r to the port p once the guest has opened it (a
// restored job's stdin, Config.JobPortInput), or gives up when the
// machine stops.
func forwardWhenOpen(r io.Reader, p *console.Device, done <-chan struct{}) {
	select {
	case <-p.Opened():
		forwardToPort(r, p, done)
	case <-done:
	}
}

// forwardToPort copies host input to a virtio-console port until r ends
// or fails, then closes the port's host side, which the guest reads as
// end of file once it has every byte; or until the machine stops. Send
// waits for the guest's buffers, so the input is paced by the guest.
func forwardToPort(r io.Reader, p *console.Device, done <-chan struct{}) {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if p.Send(buf[:n], done) != nil {
				return
			}
		}
		if err != nil {
			p.EndInput()
			return
		}
	}
}

// forwardInput copies host input to a UART's receive side until r ends
// or fails, or the UART is closed. Receive blocks while the guest does
// not read, so input is paced by the guest rather than dropped.
func forwardInput(r io.Reader, u *serial.UART, endInput bool) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := u.Receive(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			// End of file (or a read error, after which nothing more
			// comes either). The guest keeps running. A job's input
			// ends once the guest has read what is queued (serial's
			// EndInput, which vmm-init turns into end of file on the
			// job's stdin); the console's just stops.
			if endInput {
				u.EndInput()
			}
			return
		}
	}
}

// stop records the first reason the machine stops and kicks every vCPU
// (vcpu.kick says how a kick reaches a vCPU inside KVM_RUN). Later calls
// change nothing: the first reason is the one Run reports. It is called
// from vCPU threads (device callbacks, fatal exits) and from Run.
func (m *Machine) stop(reason StopReason, err error) {
	m.stopOnce.Do(func() {
		if reason == StopPoweroff || reason == StopReboot {
			m.mark(guestabi.Poweroff)
		}
		m.mu.Lock()
		m.reason, m.err = reason, err
		m.mu.Unlock()
		// stopping before the kicks: a vCPU that a kick finds between two
		// runs sees it at the top of its loop.
		m.stopping.Store(true)
		for _, v := range m.vcpus {
			v.kick()
		}
		close(m.done)
	})
}

// runVCPU is one vCPU's thread: KVM requires a vCPU's ioctls from the
// thread that runs it, so the goroutine is locked to its OS thread for
// good (the thread is discarded when the goroutine ends). It returns nil
// when the machine stops and an error when this vCPU's exit is fatal.
func (m *Machine) runVCPU(v vcpu, left func()) error {
	runtime.LockOSThread()
	v.bindThread()
	// The boot CPU stamps its first entry and first exit; a local flag
	// keeps that off every later exit.
	first := v.ID() == 0
	if first {
		m.mark(guestabi.FirstRun)
	}
	for !m.stopping.Load() {
		e, err := v.Run()
		if err != nil {
			return err
		}
		// An interrupted run (a kick, a signal) proves nothing about the
		// guest: the first exit is the first one the guest made.
		if first && e.reason != kvm.ExitIntr {
			m.mark(guestabi.FirstExit)
			first = false
		}
		// Writes KVM coalesced (on any vCPU) happened before this
		// exit: they are served first.
		if err := m.drainCoalesced(); err != nil {
			return fmt.Errorf("vCPU %d: %w", v.ID(), err)
		}
		if err := m.handleExit(v, &e); err != nil {
			return err
		}
	}
	switch m.Reason() {
	case StopSnapshot:
		return m.saveVCPUOnThread(v, left)
	case StopCanceled:
		m.places[v.ID()] = placeOf(v)
	}
	return nil
}

// VCPUPlace is where a vCPU was when a cancel (vmm's -timeout, a
// signal) took it out of the guest: what tells a guest that hung with
// interrupts off, spinning in its kernel, from one idle or busy in user
// space, when nothing on its console says. Known is false when the
// registers could not be read, or the vCPU had ended before.
type VCPUPlace struct {
	Known bool
	RIP   uint64
	// CPL is the privilege level the vCPU ran at: 0 the guest's
	// kernel, 3 its user space (the DPL of SS, Intel SDM vol. 3 §5.5).
	CPL uint8
	// Interrupts is RFLAGS.IF (bit 9).
	Interrupts bool
	// Halted says the vCPU had executed HLT and was waiting for an
	// interrupt (KVM_MP_STATE_HALTED): an idle guest, where one that
	// is not halted was running.
	Halted bool
}

// rflagsIF is RFLAGS's interrupt enable flag (Intel SDM vol. 1 §3.4.3.2).
const rflagsIF = 1 << 9

// placeOf reads where v is; only on v's thread, after its last run.
func placeOf(v vcpu) VCPUPlace {
	r, err := v.Regs()
	if err != nil {
		return VCPUPlace{}
	}
	s, err := v.Sregs()
	if err != nil {
		return VCPUPlace{}
	}
	p := VCPUPlace{Known: true, RIP: r.RIP, CPL: s.SS.DPL & 3, Interrupts: r.RFLAGS&rflagsIF != 0}
	if mp, err := v.MPState(); err == nil {
		p.Halted = mp.State == kvm.MPStateHalted
	}
	return p
}

func (p VCPUPlace) String() string {
	if !p.Known {
		return "unknown"
	}
	where := "the guest's kernel"
	if p.CPL == 3 {
		where = "the guest's user space"
	} else if p.CPL != 0 {
		where = fmt.Sprintf("the guest at privilege level %d", p.CPL)
	}
	irq := "interrupts on"
	if !p.Interrupts {
		irq = "interrupts off"
	}
	state := "running"
	if p.Halted {
		state = "halted"
	}
	return fmt.Sprintf("RIP=%#x in %s, %s, %s", p.RIP, where, state, irq)
}

// Places says where each vCPU was when a cancel of Run's context stopped
// the machine, by vCPU ID; nil unless Run returned for that reason.
func (m *Machine) Places() []VCPUPlace {
	if m.Reason() != StopCanceled {
		return nil
	}
	return m.places
}

// handleExit serves one exit: port and MMIO accesses go to the buses,
// a system event stops the machine, and anything else is fatal and
// described with v's registers. It allocates nothing on the exits a
// running guest makes (I/O, MMIO, interrupted runs).
func (m *Machine) handleExit(v vcpu, e *exit) error {
	switch e.reason {
	case kvm.ExitIO:
		m.handleIO(&e.io)
	case kvm.ExitMMIO:
		m.handleMMIO(&e.mmio)
	case kvm.ExitIntr:
		// A signal or a stop request: the loop condition decides.
	case kvm.ExitSystemEvent:
		switch e.event {
		case kvm.SystemEventShutdown:
			m.stop(StopPoweroff, nil)
		case kvm.SystemEventReset:
			m.stop(StopReboot, nil)
		default:
			return m.guestError(v, fmt.Sprintf("guest crashed (system event %d)", e.event))
		}
	case kvm.ExitShutdown:
		return m.guestError(v, "guest triple fault (KVM_EXIT_SHUTDOWN)")
	case kvm.ExitHLT:
		return m.guestError(v, "guest halted with interrupts off")
	case kvm.ExitFailEntry:
		return m.guestError(v, fmt.Sprintf("KVM_EXIT_FAIL_ENTRY, hardware reason %#x", e.failEntry))
	case kvm.ExitInternalError:
		return m.guestError(v, fmt.Sprintf("KVM_EXIT_INTERNAL_ERROR suberror %d data %#x", e.internalSub, e.internalData))
	default:
		return m.guestError(v, fmt.Sprintf("unexpected %v", e.reason))
	}
	return nil
}

// guestError describes a fatal exit with the state that explains it.
func (m *Machine) guestError(v vcpu, what string) error {
	if m.kvmNote != "" {
		what += " (" + m.kvmNote + ")"
	}
	r, err := v.Regs()
	if err != nil {
		return fmt.Errorf("vCPU %d: %s", v.ID(), what)
	}
	s, _ := v.Sregs()
	return fmt.Errorf("vCPU %d: %s", v.ID(), describeFault(what, r, s))
}

// resetRIP and resetCSBase are where a reset or INIT leaves a vCPU (Intel
// SDM vol. 3A §9.1.4 "First Instruction Executed"): real mode at
// 0xFFFF0.
const (
	resetRIP    = 0xfff0
	resetCSBase = 0xffff0000
)

// describeFault adds the registers that locate a fatal exit. On AMD, KVM
// reinitializes the vCPU before it reports KVM_EXIT_SHUTDOWN (the VMCB
// is undefined after a shutdown intercept), so the registers are those of
// a reset vCPU and would send whoever reads them to the reset vector:
// then it says the state is lost instead. vmm never runs a vCPU in real
// mode, so a real-mode vCPU at the reset vector is that case.
func describeFault(what string, r kvm.Regs, s kvm.Sregs) string {
	if r.RIP == resetRIP && s.CS.Base == resetCSBase && s.CR0&cr0PE == 0 {
		return what + " (registers lost: KVM resets the vCPU before reporting this on AMD)"
	}
	return fmt.Sprintf("%s at RIP=%#x RSP=%#x CR0=%#x CR3=%#x CR4=%#x EFER=%#x",
		what, r.RIP, r.RSP, s.CR0, s.CR3, s.CR4, s.EFER)
}

// handleIO serves a port access. String I/O (count > 1) is count
// accesses of size bytes each, all at the same port. Ports nobody claims
// read as all ones and ignore writes, like an empty ISA bus.
func (m *Machine) handleIO(e *kvm.IOExit) {
	size := int(e.Size)
	for i := 0; i < int(e.Count); i++ {
		d := e.Data[i*size : (i+1)*size]
		if e.Direction == kvm.IOOut {
			m.pio.Write(uint64(e.Port), d)
		} else if !m.pio.Read(uint64(e.Port), d) {
			fillOnes(d)
		}
	}
}

// handleMMIO serves an MMIO access outside RAM and the in-kernel APICs.
// Addresses nobody claims read as all ones and ignore writes.
func (m *Machine) handleMMIO(e *kvm.MMIOExit) {
	if e.IsWrite {
		m.mmio.Write(e.Addr, e.Data)
	} else if !m.mmio.Read(e.Addr, e.Data) {
		fillOnes(e.Data)
	}
}

func fillOnes(d []byte) {
	for i := range d {
		d[i] = 0xff
	}
}

// guestExit ends the run with the status the guest wrote to the exit
// port.
func (m *Machine) guestExit(status uint8) {
	m.exitStatus.Store(int32(status))
	m.stop(StopExit, nil)
}

// ExitStatus is the status the guest wrote to the exit port
// (guestabi.ExitPort), if it wrote one.
func (m *Machine) ExitStatus() (status int, ok bool) {
	s := m.exitStatus.Load()
	if s < 0 {
		return 0, false
	}
	return int(s), true
}
