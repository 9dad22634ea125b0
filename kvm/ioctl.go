package kvm

// Ioctl number encoding from include/uapi/asm-generic/ioctl.h (x86 uses the
// generic layout): dir:2 | size:14 | type:8 | nr:8.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
)

// kvmio is KVMIO from include/uapi/linux/kvm.h.
const kvmio = 0xAE

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<iocSizeShift | kvmio<<iocTypeShift | nr<<iocNRShift
}

func io(nr uintptr) uintptr         { return ioc(iocNone, nr, 0) }
func ior(nr, size uintptr) uintptr  { return ioc(iocRead, nr, size) }
func iow(nr, size uintptr) uintptr  { return ioc(iocWrite, nr, size) }
func iowr(nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, nr, size) }

// Ioctl numbers, each with the name it has in include/uapi/linux/kvm.h.
// Sizes come from the mirrored structs so the two cannot drift apart.
var (
	kvmGetAPIVersion         = io(0x00)
	kvmCreateVM              = io(0x01)
	kvmCheckExtension        = io(0x03)
	kvmGetVCPUMmapSize       = io(0x04)
	kvmGetSupportedCPUID     = iowr(0x05, sizeofCPUID2Header)
	kvmCreateVCPU            = io(0x41)
	kvmSetUserMemoryRegion   = iow(0x46, sizeofUserspaceMemoryRegion)
	kvmSetTSSAddr            = io(0x47)
	kvmSetIdentityMapAddr    = iow(0x48, 8)
	kvmCreateIRQChip         = io(0x60)
	kvmIRQLine               = iow(0x61, sizeofIRQLevel)
	kvmRegisterCoalescedMMIO = iow(0x67, sizeofCoalescedZone)
	kvmSetGSIRouting         = iow(0x6a, sizeofIRQRoutingHeader)
	kvmIRQFD                 = iow(0x76, sizeofIRQFD)
	kvmCreatePIT2            = iow(0x77, sizeofPITConfig)
	kvmIOEventFD             = iow(0x79, sizeofIOEventFD)
	kvmRun                   = io(0x80)
	kvmGetRegs               = ior(0x81, sizeofRegs)
	kvmSetRegs               = iow(0x82, sizeofRegs)
	kvmGetSregs              = ior(0x83, sizeofSregs)
	kvmSetSregs              = iow(0x84, sizeofSregs)
	kvmSetMSRs               = iow(0x89, sizeofMSRsHeader)
	kvmSetFPU                = iow(0x8d, sizeofFPU)
	kvmGetLAPIC              = ior(0x8e, sizeofLAPICState)
	kvmSetLAPIC              = iow(0x8f, sizeofLAPICState)
	kvmSetCPUID2             = iow(0x90, sizeofCPUID2Header)
)

// Request returns the request number of the KVM ioctl that
// include/uapi/linux/kvm.h names name ("KVM_RUN"), for code that names an
// ioctl without issuing it: the sandbox's allow-list is BPF assembled
// ahead of time, and its tests check its numbers against these. ok is
// false for an ioctl this package does not issue.
func Request(name string) (nr uintptr, ok bool) {
	switch name {
	case "KVM_GET_API_VERSION":
		return kvmGetAPIVersion, true
	case "KVM_CREATE_VM":
		return kvmCreateVM, true
	case "KVM_GET_MSR_INDEX_LIST":
		return kvmGetMSRIndexList, true
	case "KVM_CHECK_EXTENSION":
		return kvmCheckExtension, true
	case "KVM_GET_VCPU_MMAP_SIZE":
		return kvmGetVCPUMmapSize, true
	case "KVM_GET_SUPPORTED_CPUID":
		return kvmGetSupportedCPUID, true
	case "KVM_CREATE_VCPU":
		return kvmCreateVCPU, true
	case "KVM_SET_USER_MEMORY_REGION":
		return kvmSetUserMemoryRegion, true
	case "KVM_SET_TSS_ADDR":
		return kvmSetTSSAddr, true
	case "KVM_SET_IDENTITY_MAP_ADDR":
		return kvmSetIdentityMapAddr, true
	case "KVM_CREATE_IRQCHIP":
		return kvmCreateIRQChip, true
	case "KVM_IRQ_LINE":
		return kvmIRQLine, true
	case "KVM_GET_IRQCHIP":
		return kvmGetIRQChip, true
	case "KVM_SET_IRQCHIP":
		return kvmSetIRQChip, true
	case "KVM_REGISTER_COALESCED_MMIO":
		return kvmRegisterCoalescedMMIO, true
	case "KVM_SET_GSI_ROUTING":
		return kvmSetGSIRouting, true
	case "KVM_IRQFD":
		return kvmIRQFD, true
	case "KVM_CREATE_PIT2":
		return kvmCreatePIT2, true
	case "KVM_IOEVENTFD":
		return kvmIOEventFD, true
	case "KVM_SET_CLOCK":
		return kvmSetClock, true
	case "KVM_GET_CLOCK":
		return kvmGetClock, true
	case "KVM_RUN":
		return kvmRun, true
	case "KVM_GET_REGS":
		return kvmGetRegs, true
	case "KVM_SET_REGS":
		return kvmSetRegs, true
	case "KVM_GET_SREGS":
		return kvmGetSregs, true
	case "KVM_SET_SREGS":
		return kvmSetSregs, true
	case "KVM_GET_MSRS":
		return kvmGetMSRs, true
	case "KVM_SET_MSRS":
		return kvmSetMSRs, true
	case "KVM_GET_FPU":
		return kvmGetFPU, true
	case "KVM_SET_FPU":
		return kvmSetFPU, true
	case "KVM_GET_LAPIC":
		return kvmGetLAPIC, true
	case "KVM_SET_LAPIC":
		return kvmSetLAPIC, true
	case "KVM_SET_CPUID2":
		return kvmSetCPUID2, true
	case "KVM_GET_MP_STATE":
		return kvmGetMPState, true
	case "KVM_SET_MP_STATE":
		return kvmSetMPState, true
	case "KVM_GET_PIT2":
		return kvmGetPIT2, true
	case "KVM_SET_PIT2":
		return kvmSetPIT2, true
	case "KVM_GET_VCPU_EVENTS":
		return kvmGetVCPUEvents, true
	case "KVM_SET_VCPU_EVENTS":
		return kvmSetVCPUEvents, true
	case "KVM_GET_DEBUGREGS":
		return kvmGetDebugRegs, true
	case "KVM_SET_DEBUGREGS":
		return kvmSetDebugRegs, true
	case "KVM_SET_TSC_KHZ":
		return kvmSetTSCKHz, true
	case "KVM_GET_TSC_KHZ":
		return kvmGetTSCKHz, true
	case "KVM_GET_XSAVE":
		return kvmGetXSave, true
	case "KVM_SET_XSAVE":
		return kvmSetXSave, true
	case "KVM_GET_XCRS":
		return kvmGetXCRs, true
	case "KVM_SET_XCRS":
		return kvmSetXCRs, true
	case "KVM_KVMCLOCK_CTRL":
		return kvmKVMClockCtrl, true
	}
	return 0, false
}
