package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_* in include/uapi/linux/kvm.h).
type ExitReason uint32

// Exit reasons vmm handles or reports.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO", ExitHypercall: "HYPERCALL",
	ExitDebug: "DEBUG", ExitHLT: "HLT", ExitMMIO: "MMIO", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown: "SHUTDOWN", ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR", ExitSetTPR: "SET_TPR",
	ExitTPRAccess: "TPR_ACCESS", ExitNMI: "NMI", ExitInternalError: "INTERNAL_ERROR", ExitSystemEvent: "SYSTEM_EVENT",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT_%d", uint32(r))
}

// Offsets into struct kvm_run (include/uapi/linux/kvm.h, x86-64). The
// area is shared memory, read with encoding/binary rather than cast to a
// struct, so every access is bounds-checked and no unsafe is needed.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runExit          = 32 // the per-exit union
	// union members
	runIODirection  = runExit + 0
	runIOSize       = runExit + 1
	runIOPort       = runExit + 2
	runIOCount      = runExit + 4
	runIODataOffset = runExit + 8
	runMMIOAddr     = runExit + 0
	runMMIOData     = runExit + 8
	runMMIOLen      = runExit + 16
	runMMIOIsWrite  = runExit + 20
	runFailReason   = runExit + 0
	runFailCPU      = runExit + 8
	runInternalSub  = runExit + 0
	runInternalN    = runExit + 4
	runInternalData = runExit + 8
	runEventType    = runExit + 0
	runEventNData   = runExit + 4
	runEventData    = runExit + 8
	runMinSize      = runExit + 256 // the union is padded to 256 bytes
)

// KVM_EXIT_IO directions.
const (
	IOIn  = 0 // KVM_EXIT_IO_IN
	IOOut = 1 // KVM_EXIT_IO_OUT
)

// KVM_SYSTEM_EVENT_* types.
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// VCPU is one virtual CPU. Its ioctls must be issued from the OS thread
// that runs it (the caller locks that thread).
type VCPU struct {
	f   *os.File
	id  int
	run []byte // the mmapped struct kvm_run
}

func (c *VCPU) fd() uintptr { return c.f.Fd() }

// ID is the index the vCPU was created with.
func (c *VCPU) ID() int { return c.id }

// Close unmaps kvm_run and closes the vCPU.
func (c *VCPU) Close() error {
	err := unix.Munmap(c.run)
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Run enters the guest until the next exit that needs userspace. An
// interrupted run (a signal, or SetImmediateExit) reports ExitIntr, not an
// error: the caller checks whether it was asked to stop and runs again.
func (c *VCPU) Run() (ExitReason, error) {
	if err := runIoctl(c.fd()); err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			return ExitIntr, nil
		}
		return 0, fmt.Errorf("KVM_RUN vCPU %d: %w", c.id, err)
	}
	return ExitReason(binary.LittleEndian.Uint32(c.run[runExitReason:])), nil
}

// SetImmediateExit sets kvm_run.immediate_exit: while it is set, KVM_RUN
// returns EINTR at once. Another thread sets it, then signals this vCPU's
// thread, so a stop request is never lost between two runs.
func (c *VCPU) SetImmediateExit(on bool) {
	var v byte
	if on {
		v = 1
	}
	c.run[runImmediateExit] = v
}

// IOExit describes a KVM_EXIT_IO. Data aliases kvm_run: Size*Count bytes,
// Count accesses of Size bytes each (string I/O), to fill for IOIn.
type IOExit struct {
	Direction uint8
	Size      uint8
	Port      uint16
	Count     uint32
	Data      []byte
}

// IO decodes the current KVM_EXIT_IO. The kernel's data_offset and sizes
// are checked against the mapping rather than trusted.
func (c *VCPU) IO() (IOExit, error) {
	le := binary.LittleEndian
	e := IOExit{
		Direction: c.run[runIODirection],
		Size:      c.run[runIOSize],
		Port:      le.Uint16(c.run[runIOPort:]),
		Count:     le.Uint32(c.run[runIOCount:]),
	}
	off := le.Uint64(c.run[runIODataOffset:])
	n := uint64(e.Size) * uint64(e.Count)
	if off > uint64(len(c.run)) || n > uint64(len(c.run))-off {
		return e, fmt.Errorf("KVM_EXIT_IO vCPU %d: data %#x+%d outside kvm_run", c.id, off, n)
	}
	e.Data = c.run[off : off+n]
	return e, nil
}

// MMIOExit describes a KVM_EXIT_MMIO. Data aliases kvm_run.mmio.data.
type MMIOExit struct {
	Addr    uint64
	Data    []byte
	IsWrite bool
}

// MMIO decodes the current KVM_EXIT_MMIO.
func (c *VCPU) MMIO() (MMIOExit, error) {
	n := binary.LittleEndian.Uint32(c.run[runMMIOLen:])
	if n > 8 {
		return MMIOExit{}, fmt.Errorf("KVM_EXIT_MMIO vCPU %d: length %d", c.id, n)
	}
	return MMIOExit{
		Addr:    binary.LittleEndian.Uint64(c.run[runMMIOAddr:]),
		Data:    c.run[runMMIOData : runMMIOData+n],
		IsWrite: c.run[runMMIOIsWrite] != 0,
	}, nil
}

// SystemEvent returns the type of a KVM_EXIT_SYSTEM_EVENT.
func (c *VCPU) SystemEvent() uint32 {
	return binary.LittleEndian.Uint32(c.run[runEventType:])
}

// FailEntry returns hardware_entry_failure_reason of KVM_EXIT_FAIL_ENTRY.
func (c *VCPU) FailEntry() uint64 {
	return binary.LittleEndian.Uint64(c.run[runFailReason:])
}

// InternalError returns the suberror and data of KVM_EXIT_INTERNAL_ERROR.
func (c *VCPU) InternalError() (uint32, []uint64) {
	sub := binary.LittleEndian.Uint32(c.run[runInternalSub:])
	n := binary.LittleEndian.Uint32(c.run[runInternalN:])
	if n > 16 {
		n = 16
	}
	data := make([]uint64, n)
	for i := range data {
		data[i] = binary.LittleEndian.Uint64(c.run[runInternalData+8*i:])
	}
	return sub, data
}

// Regs reads the general-purpose registers (KVM_GET_REGS).
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	if _, err := ioctlPtr(c.fd(), kvmGetRegs, &r); err != nil {
		return r, fmt.Errorf("KVM_GET_REGS vCPU %d: %w", c.id, err)
	}
	return r, nil
}

// SetRegs writes the general-purpose registers (KVM_SET_REGS).
func (c *VCPU) SetRegs(r Regs) error {
	if _, err := ioctlPtr(c.fd(), kvmSetRegs, &r); err != nil {
		return fmt.Errorf("KVM_SET_REGS vCPU %d: %w", c.id, err)
	}
	return nil
}

// Sregs reads the special registers (KVM_GET_SREGS).
func (c *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	if _, err := ioctlPtr(c.fd(), kvmGetSregs, &s); err != nil {
		return s, fmt.Errorf("KVM_GET_SREGS vCPU %d: %w", c.id, err)
	}
	return s, nil
}

// SetSregs writes the special registers (KVM_SET_SREGS).
func (c *VCPU) SetSregs(s Sregs) error {
	if _, err := ioctlPtr(c.fd(), kvmSetSregs, &s); err != nil {
		return fmt.Errorf("KVM_SET_SREGS vCPU %d: %w", c.id, err)
	}
	return nil
}

// SetFPU writes the x87/SSE state (KVM_SET_FPU).
func (c *VCPU) SetFPU(f FPU) error {
	if _, err := ioctlPtr(c.fd(), kvmSetFPU, &f); err != nil {
		return fmt.Errorf("KVM_SET_FPU vCPU %d: %w", c.id, err)
	}
	return nil
}

// SetMSRs writes model-specific registers (KVM_SET_MSRS). The kernel
// returns how many it set; fewer than asked is an error naming the first
// one it refused.
func (c *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	n, err := ioctlBuf(c.fd(), kvmSetMSRs, encodeMSRs(entries))
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS vCPU %d: %w", c.id, err)
	}
	if int(n) != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS vCPU %d: set %d of %d, refused MSR %#x", c.id, n, len(entries), entries[n].Index)
	}
	return nil
}

// SetCPUID2 sets what CPUID reports in the guest (KVM_SET_CPUID2). It must
// come before KVM_SET_MSRS: KVM checks MSRs against the guest's CPUID.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if _, err := ioctlBuf(c.fd(), kvmSetCPUID2, encodeCPUID2(entries)); err != nil {
		return fmt.Errorf("KVM_SET_CPUID2 vCPU %d: %w", c.id, err)
	}
	return nil
}

// LAPIC reads the in-kernel local APIC registers (KVM_GET_LAPIC).
func (c *VCPU) LAPIC() (LAPICState, error) {
	var s LAPICState
	if _, err := ioctlPtr(c.fd(), kvmGetLAPIC, &s); err != nil {
		return s, fmt.Errorf("KVM_GET_LAPIC vCPU %d: %w", c.id, err)
	}
	return s, nil
}

// SetLAPIC writes the in-kernel local APIC registers (KVM_SET_LAPIC).
func (c *VCPU) SetLAPIC(s LAPICState) error {
	if _, err := ioctlPtr(c.fd(), kvmSetLAPIC, &s); err != nil {
		return fmt.Errorf("KVM_SET_LAPIC vCPU %d: %w", c.id, err)
	}
	return nil
}
