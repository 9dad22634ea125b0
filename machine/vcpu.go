package machine

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/kvm"
)

// vcpu is all the run loop (run.go) asks of a virtual CPU: run it to the
// next exit, stop it from another goroutine, and read its registers when
// an exit is fatal. The loop sees nothing else of KVM, so it can be
// tested against a scripted vCPU without /dev/kvm; kvmVCPU is the real
// one. Setting a vCPU up (CPUID, MSRs, entry registers) is build-time
// work on the *kvm.VCPU itself and is not part of this.
type vcpu interface {
	// ID is the index the vCPU was created with, also its APIC ID.
	ID() int
	// bindThread is called once, on the OS thread the vCPU's goroutine
	// is locked to, before the first Run: KVM wants a vCPU's ioctls from
	// one thread, and kick must know which thread to interrupt.
	bindThread()
	// Run enters the guest until the next exit userspace must handle and
	// decodes it. A run cut short by a signal or by kick reports
	// kvm.ExitIntr, not an error. Run must not allocate: it is the hot
	// path, once per port or MMIO access of the guest.
	Run() (exit, error)
	// kick makes the vCPU's current Run return soon and every later Run
	// return at once. It is called from other goroutines, possibly more
	// than once, before or after bindThread; a kicked vCPU is never
	// resumed.
	kick()
	// Regs and Sregs read the registers, to say where a fatal exit
	// happened.
	Regs() (kvm.Regs, error)
	Sregs() (kvm.Sregs, error)
	// MPState reads whether the vCPU is halted, to say where a
	// canceled run left it.
	MPState() (kvm.MPState, error)
	Close() error
}

// exit is one vCPU exit, decoded from kvm_run. It is returned by value
// and its slices alias memory the vcpu owns (kvm_run for the real one),
// valid until the next Run, so an exit allocates nothing. Only the
// fields of its reason are set.
type exit struct {
	reason kvm.ExitReason
	io     kvm.IOExit   // ExitIO: Count accesses of Size bytes at Port
	mmio   kvm.MMIOExit // ExitMMIO
	// event is the KVM_SYSTEM_EVENT_* type of an ExitSystemEvent.
	event uint32
	// failEntry is hardware_entry_failure_reason of an ExitFailEntry.
	failEntry uint64
	// internalSub and internalData are the suberror and data of an
	// ExitInternalError. The data is a copy (the one exit that
	// allocates), which is fine: that exit is fatal.
	internalSub  uint32
	internalData []uint64
}

// kvmVCPU is a vcpu backed by KVM.
type kvmVCPU struct {
	c   *kvm.VCPU
	tid atomic.Int32 // OS thread running it, 0 until bindThread
}

func (v *kvmVCPU) ID() int                       { return v.c.ID() }
func (v *kvmVCPU) Regs() (kvm.Regs, error)       { return v.c.Regs() }
func (v *kvmVCPU) Sregs() (kvm.Sregs, error)     { return v.c.Sregs() }
func (v *kvmVCPU) MPState() (kvm.MPState, error) { return v.c.MPState() }
func (v *kvmVCPU) Close() error                  { return v.c.Close() }

func (v *kvmVCPU) bindThread() { v.tid.Store(int32(unix.Gettid())) }

// Run issues KVM_RUN and decodes the exit from kvm_run. kvm.VCPU.Run
// already turns EINTR (a signal, or immediate_exit) into ExitIntr. The
// decoders check the kernel's offsets and sizes against the mapping; a
// bad one is an error, which stops the machine.
func (v *kvmVCPU) Run() (exit, error) {
	r, err := v.c.Run()
	if err != nil {
		return exit{}, err
	}
	e := exit{reason: r}
	switch r {
	case kvm.ExitIO:
		e.io, err = v.c.IO()
	case kvm.ExitMMIO:
		e.mmio, err = v.c.MMIO()
	case kvm.ExitSystemEvent:
		e.event = v.c.SystemEvent()
	case kvm.ExitFailEntry:
		e.failEntry = v.c.FailEntry()
	case kvm.ExitInternalError:
		e.internalSub, e.internalData = v.c.InternalError()
	}
	return e, err
}

// kick stops the vCPU in two steps, so a stop is never lost between two
// runs: immediate_exit catches a vCPU about to enter KVM_RUN, and a
// signal to its thread one already inside (KVM_RUN returns EINTR). The
// signal is SIGURG, the Go runtime's own preemption signal, so
// delivering it to a Go thread at any moment is harmless. Before
// bindThread there is no thread to signal, and immediate_exit alone
// suffices: the vCPU has not entered the guest yet.
func (v *kvmVCPU) kick() {
	v.c.SetImmediateExit(true)
	if tid := v.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}
