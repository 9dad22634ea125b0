package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The state a snapshot saves and a restore writes back: everything of a
// vCPU and of the VM's in-kernel devices that KVM keeps and userspace
// cannot rebuild. The structs mirror arch/x86/include/uapi/asm/kvm.h and
// include/uapi/linux/kvm.h on x86-64; their sizes and ioctl numbers are
// tested against the kernel's.

// XSave mirrors struct kvm_xsave without its flexible tail: the 4 KiB
// XSAVE area KVM_GET_XSAVE fills (legacy region, header, and the extended
// components the guest's XCR0 enables that fit; KVM_CAP_XSAVE2 reports a
// larger size only for AMX, which vmm's guests are not offered).
type XSave struct {
	Region [1024]uint32
}

// XCR mirrors struct kvm_xcr: one extended control register.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs mirrors struct kvm_xcrs (KVM_MAX_XCRS = 16).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR
	_      [16]uint64
}

// MPState mirrors struct kvm_mp_state: KVM_MP_STATE_RUNNABLE (0),
// UNINITIALIZED (1), INIT_RECEIVED (2), HALTED (3), SIPI_RECEIVED (4).
type MPState struct {
	State uint32
}

// MPStateHalted is KVM_MP_STATE_HALTED (include/uapi/linux/kvm.h): the
// vCPU executed HLT and waits, in KVM, for an interrupt.
const MPStateHalted = 3

// VCPUEvents mirrors struct kvm_vcpu_events: pending and injected
// exceptions, interrupts, NMIs and SMIs, and the interrupt shadow.
type VCPUEvents struct {
	Exception struct {
		Injected     uint8
		Nr           uint8
		HasErrorCode uint8
		Pending      uint8
		ErrorCode    uint32
	}
	Interrupt struct {
		Injected uint8
		Nr       uint8
		Soft     uint8
		Shadow   uint8
	}
	NMI struct {
		Injected uint8
		Pending  uint8
		Masked   uint8
		_        uint8
	}
	SIPIVector uint32
	Flags      uint32
	SMI        struct {
		SMM          uint8
		Pending      uint8
		SMMInsideNMI uint8
		LatchedInit  uint8
	}
	TripleFault         struct{ Pending uint8 }
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// DebugRegs mirrors struct kvm_debugregs.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// IRQChip mirrors struct kvm_irqchip: one in-kernel interrupt controller's
// state, chosen by ChipID (IRQChipPICMaster, IRQChipPICSlave,
// IRQChipIOAPIC); Chip is the union of kvm_pic_state and
// kvm_ioapic_state, which userspace saves and restores as it is.
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// In-kernel interrupt controllers, KVM_IRQCHIP_* in asm/kvm.h.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// PITChannelState mirrors struct kvm_pit_channel_state.
type PITChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 mirrors struct kvm_pit_state2.
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32
	_        [9]uint32
}

// ClockData mirrors struct kvm_clock_data: the VM's kvmclock.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// Sizes of the state structs, as the kernel declares them.
const (
	sizeofXSave          = 4096
	sizeofXCRs           = 392
	sizeofMPState        = 4
	sizeofVCPUEvents     = 64
	sizeofDebugRegs      = 128
	sizeofIRQChip        = 520
	sizeofPITState2      = 112
	sizeofClockData      = 48
	sizeofMSRListHeader  = 4 // struct kvm_msr_list without indices
	maxMSRIndexListBound = 4096
)

// State ioctls, each with the name it has in include/uapi/linux/kvm.h.
var (
	kvmGetMSRIndexList = iowr(0x02, sizeofMSRListHeader)
	kvmSetClock        = iow(0x7b, sizeofClockData)
	kvmGetClock        = ior(0x7c, sizeofClockData)
	kvmGetIRQChip      = iowr(0x62, sizeofIRQChip)
	// KVM_SET_IRQCHIP is declared _IOR although it writes: the number
	// is the kernel's, mistake and all.
	kvmSetIRQChip    = ior(0x63, sizeofIRQChip)
	kvmGetMSRs       = iowr(0x88, sizeofMSRsHeader)
	kvmGetFPU        = ior(0x8c, sizeofFPU)
	kvmGetMPState    = ior(0x98, sizeofMPState)
	kvmSetMPState    = iow(0x99, sizeofMPState)
	kvmGetPIT2       = ior(0x9f, sizeofPITState2)
	kvmSetPIT2       = iow(0xa0, sizeofPITState2)
	kvmGetVCPUEvents = ior(0x9f, sizeofVCPUEvents)
	kvmSetVCPUEvents = iow(0xa0, sizeofVCPUEvents)
	kvmGetDebugRegs  = ior(0xa1, sizeofDebugRegs)
	kvmSetDebugRegs  = iow(0xa2, sizeofDebugRegs)
	kvmSetTSCKHz     = io(0xa2)
	kvmGetTSCKHz     = io(0xa3)
	kvmGetXSave      = ior(0xa4, sizeofXSave)
	kvmSetXSave      = iow(0xa5, sizeofXSave)
	kvmGetXCRs       = ior(0xa6, sizeofXCRs)
	kvmSetXCRs       = iow(0xa7, sizeofXCRs)
	kvmKVMClockCtrl  = io(0xad)
)

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU
// (KVM_GET_MSR_INDEX_LIST): the list a snapshot reads with GetMSRs. The
// kernel answers E2BIG with the count it needs, so ask twice at most.
func (s *System) MSRIndexList() ([]uint32, error) {
	n := 64
	for tries := 0; tries < 3; tries++ {
		buf := make([]byte, sizeofMSRListHeader+4*n)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		_, err := ioctlBuf(s.fd(), kvmGetMSRIndexList, buf)
		got := int(binary.LittleEndian.Uint32(buf))
		if errors.Is(err, unix.E2BIG) && got > n && got <= maxMSRIndexListBound {
			n = got
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
		}
		if got > n {
			return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %d entries in a list of %d", got, n)
		}
		out := make([]uint32, got)
		for i := range out {
			out[i] = binary.LittleEndian.Uint32(buf[sizeofMSRListHeader+4*i:])
		}
		return out, nil
	}
	return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: the list kept growing")
}

// MSRs reads the MSRs named by indices (KVM_GET_MSRS). KVM stops at the
// first MSR it cannot read; that is an error naming it, since a snapshot
// missing an MSR would restore a different machine.
func (c *VCPU) MSRs(indices []uint32) ([]MSREntry, error) {
	if len(indices) == 0 {
		return nil, nil
	}
	entries := make([]MSREntry, len(indices))
	for i, idx := range indices {
		entries[i].Index = idx
	}
	buf := encodeMSRs(entries)
	n, err := ioctlBuf(c.fd(), kvmGetMSRs, buf)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_MSRS vCPU %d: %w", c.id, err)
	}
	if int(n) != len(entries) {
		return nil, fmt.Errorf("KVM_GET_MSRS vCPU %d: read %d of %d, failed at MSR %#x", c.id, n, len(entries), indices[n])
	}
	return decodeMSRs(buf, len(entries)), nil
}

// decodeMSRs reads n entries of a struct kvm_msrs laid out in buf.
func decodeMSRs(buf []byte, n int) []MSREntry {
	out := make([]MSREntry, n)
	for i := range out {
		b := buf[sizeofMSRsHeader+i*sizeofMSREntry:]
		out[i] = MSREntry{Index: binary.LittleEndian.Uint32(b), Data: binary.LittleEndian.Uint64(b[8:])}
	}
	return out
}

// vcpuGet and vcpuSet wrap a state ioctl with the error context every
// caller would write.
func vcpuGet[T any](c *VCPU, req uintptr, name string) (T, error) {
	var v T
	if _, err := ioctlPtr(c.fd(), req, &v); err != nil {
		return v, fmt.Errorf("%s vCPU %d: %w", name, c.id, err)
	}
	return v, nil
}

func vcpuSet[T any](c *VCPU, req uintptr, name string, v T) error {
	if _, err := ioctlPtr(c.fd(), req, &v); err != nil {
		return fmt.Errorf("%s vCPU %d: %w", name, c.id, err)
	}
	return nil
}

// FPU reads the x87/SSE state (KVM_GET_FPU).
func (c *VCPU) FPU() (FPU, error) { return vcpuGet[FPU](c, kvmGetFPU, "KVM_GET_FPU") }

// XSave reads the XSAVE area (KVM_GET_XSAVE).
func (c *VCPU) XSave() (XSave, error) { return vcpuGet[XSave](c, kvmGetXSave, "KVM_GET_XSAVE") }

// SetXSave writes the XSAVE area (KVM_SET_XSAVE).
func (c *VCPU) SetXSave(x XSave) error { return vcpuSet(c, kvmSetXSave, "KVM_SET_XSAVE", x) }

// XCRs reads the extended control registers (KVM_GET_XCRS).
func (c *VCPU) XCRs() (XCRs, error) { return vcpuGet[XCRs](c, kvmGetXCRs, "KVM_GET_XCRS") }

// SetXCRs writes the extended control registers (KVM_SET_XCRS).
func (c *VCPU) SetXCRs(x XCRs) error { return vcpuSet(c, kvmSetXCRs, "KVM_SET_XCRS", x) }

// MPState reads the vCPU's multiprocessing state (KVM_GET_MP_STATE).
func (c *VCPU) MPState() (MPState, error) {
	return vcpuGet[MPState](c, kvmGetMPState, "KVM_GET_MP_STATE")
}

// SetMPState writes the vCPU's multiprocessing state (KVM_SET_MP_STATE).
func (c *VCPU) SetMPState(s MPState) error {
	return vcpuSet(c, kvmSetMPState, "KVM_SET_MP_STATE", s)
}

// Events reads pending and injected events (KVM_GET_VCPU_EVENTS).
func (c *VCPU) Events() (VCPUEvents, error) {
	return vcpuGet[VCPUEvents](c, kvmGetVCPUEvents, "KVM_GET_VCPU_EVENTS")
}

// SetEvents writes pending and injected events (KVM_SET_VCPU_EVENTS).
func (c *VCPU) SetEvents(e VCPUEvents) error {
	return vcpuSet(c, kvmSetVCPUEvents, "KVM_SET_VCPU_EVENTS", e)
}

// DebugRegs reads the debug registers (KVM_GET_DEBUGREGS).
func (c *VCPU) DebugRegs() (DebugRegs, error) {
	return vcpuGet[DebugRegs](c, kvmGetDebugRegs, "KVM_GET_DEBUGREGS")
}

// SetDebugRegs writes the debug registers (KVM_SET_DEBUGREGS).
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	return vcpuSet(c, kvmSetDebugRegs, "KVM_SET_DEBUGREGS", d)
}

// TSCKHz reads the vCPU's TSC frequency (KVM_GET_TSC_KHZ).
func (c *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctlVal(c.fd(), kvmGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_TSC_KHZ vCPU %d: %w", c.id, err)
	}
	return uint32(r), nil
}

// SetTSCKHz sets the vCPU's TSC frequency (KVM_SET_TSC_KHZ), so a guest
// restored on another host sees the TSC rate it calibrated against.
func (c *VCPU) SetTSCKHz(khz uint32) error {
	if _, err := ioctlVal(c.fd(), kvmSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("KVM_SET_TSC_KHZ vCPU %d: %w", c.id, err)
	}
	return nil
}

// KVMClockCtrl tells the guest's kvmclock that the vCPU was paused
// (KVM_KVMCLOCK_CTRL), so its soft-lockup watchdog does not fire over the
// time it spent saved. EINVAL means the guest has not set up kvmclock.
func (c *VCPU) KVMClockCtrl() error {
	if _, err := ioctlVal(c.fd(), kvmKVMClockCtrl, 0); err != nil {
		return fmt.Errorf("KVM_KVMCLOCK_CTRL vCPU %d: %w", c.id, err)
	}
	return nil
}

// IRQChip reads one in-kernel interrupt controller (KVM_GET_IRQCHIP).
func (vm *VM) IRQChip(id uint32) (IRQChip, error) {
	c := IRQChip{ChipID: id}
	if _, err := ioctlPtr(vm.fd(), kvmGetIRQChip, &c); err != nil {
		return c, fmt.Errorf("KVM_GET_IRQCHIP %d: %w", id, err)
	}
	return c, nil
}

// SetIRQChip writes one in-kernel interrupt controller (KVM_SET_IRQCHIP).
func (vm *VM) SetIRQChip(c IRQChip) error {
	if _, err := ioctlPtr(vm.fd(), kvmSetIRQChip, &c); err != nil {
		return fmt.Errorf("KVM_SET_IRQCHIP %d: %w", c.ChipID, err)
	}
	return nil
}

// PIT2 reads the in-kernel PIT (KVM_GET_PIT2).
func (vm *VM) PIT2() (PITState2, error) {
	var s PITState2
	if _, err := ioctlPtr(vm.fd(), kvmGetPIT2, &s); err != nil {
		return s, fmt.Errorf("KVM_GET_PIT2: %w", err)
	}
	return s, nil
}

// SetPIT2 writes the in-kernel PIT (KVM_SET_PIT2).
func (vm *VM) SetPIT2(s PITState2) error {
	if _, err := ioctlPtr(vm.fd(), kvmSetPIT2, &s); err != nil {
		return fmt.Errorf("KVM_SET_PIT2: %w", err)
	}
	return nil
}

// Clock reads the VM's kvmclock (KVM_GET_CLOCK).
func (vm *VM) Clock() (ClockData, error) {
	var d ClockData
	if _, err := ioctlPtr(vm.fd(), kvmGetClock, &d); err != nil {
		return d, fmt.Errorf("KVM_GET_CLOCK: %w", err)
	}
	return d, nil
}

// SetClock sets the VM's kvmclock (KVM_SET_CLOCK). Only Clock (and, with
// KVM_CLOCK_REALTIME in Flags, Realtime) is used; the rest is output.
func (vm *VM) SetClock(d ClockData) error {
	if _, err := ioctlPtr(vm.fd(), kvmSetClock, &d); err != nil {
		return fmt.Errorf("KVM_SET_CLOCK: %w", err)
	}
	return nil
}
