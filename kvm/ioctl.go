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
