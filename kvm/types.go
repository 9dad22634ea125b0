package kvm

// Regs mirrors struct kvm_regs (arch/x86/include/uapi/asm/kvm.h).
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable mirrors struct kvm_dtable (a GDTR or IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs mirrors struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	// InterruptBitmap is KVM_NR_INTERRUPTS (256) bits of pending
	// external interrupts; zero at boot.
	InterruptBitmap [4]uint64
}

// FPU mirrors struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// MSREntry mirrors struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// CPUIDEntry mirrors struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDFlagSignificantIndex is KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic): the
// entry is one subleaf of a leaf that is indexed by ECX.
const CPUIDFlagSignificantIndex = 1 << 0

// userspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// irqLevel mirrors struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// pitConfig mirrors struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

// PITSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: KVM answers port 0x61 itself,
// so the kernel's PIT calibration does not exit to userspace.
const PITSpeakerDummy = 1

// irqfd mirrors struct kvm_irqfd.
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

// ioeventfd mirrors struct kvm_ioeventfd.
type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

// ioeventfd flags from include/uapi/linux/kvm.h.
const (
	IOEventFDDatamatch = 1 << 0 // KVM_IOEVENTFD_FLAG_DATAMATCH
	IOEventFDPIO       = 1 << 1 // KVM_IOEVENTFD_FLAG_PIO
	IOEventFDDeassign  = 1 << 2 // KVM_IOEVENTFD_FLAG_DEASSIGN
)

// irqRouting mirrors struct kvm_irq_routing without its entries, which
// follow it in the same buffer.
type irqRouting struct {
	Nr    uint32
	Flags uint32
}

// irqRoutingEntry mirrors struct kvm_irq_routing_entry. U is its union,
// of which vmm writes irqRoutingIRQChip or irqRoutingMSI.
type irqRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	_     uint32
	U     [32]byte
}

// irqRoutingIRQChip mirrors struct kvm_irq_routing_irqchip.
type irqRoutingIRQChip struct {
	IRQChip uint32
	Pin     uint32
}

// irqRoutingMSI mirrors struct kvm_irq_routing_msi. The last word is
// devid, meaningful only with KVM_MSI_VALID_DEVID (arm64); x86 wants 0.
type irqRoutingMSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	_         uint32
}

// RouteKind is the type of a GSI routing entry, KVM_IRQ_ROUTING_* in
// include/uapi/linux/kvm.h.
type RouteKind uint32

const (
	RouteIRQChip RouteKind = 1 // KVM_IRQ_ROUTING_IRQCHIP: a pin of an in-kernel PIC or IOAPIC
	RouteMSI     RouteKind = 2 // KVM_IRQ_ROUTING_MSI: a message to the local APICs
)

// MaxIRQRoutes is KVM_MAX_IRQ_ROUTES (include/linux/kvm_host.h): the most
// entries KVM_SET_GSI_ROUTING takes, and the bound on their GSIs.
const MaxIRQRoutes = 4096

// LAPICState mirrors struct kvm_lapic_state: the local APIC's 4 KiB
// register page, of which KVM transfers the first KVM_APIC_REG_SIZE bytes.
type LAPICState struct {
	Regs [1024]byte
}

// Sizes of the mirrored structs, as the kernel declares them. The tests
// compare them with the Go layout; the ioctl numbers are built from them.
const (
	sizeofRegs                  = 144
	sizeofSegment               = 24
	sizeofDTable                = 16
	sizeofSregs                 = 312
	sizeofFPU                   = 416
	sizeofMSREntry              = 16
	sizeofMSRsHeader            = 8 // struct kvm_msrs without entries
	sizeofCPUIDEntry            = 40
	sizeofCPUID2Header          = 8 // struct kvm_cpuid2 without entries
	sizeofUserspaceMemoryRegion = 32
	sizeofIRQLevel              = 8
	sizeofPITConfig             = 64
	sizeofIRQFD                 = 32
	sizeofIOEventFD             = 64
	sizeofIRQRoutingHeader      = 8 // struct kvm_irq_routing without entries
	sizeofIRQRoutingEntry       = 48
	sizeofLAPICState            = 1024
)

// Cap is a KVM_CAP_* extension number for KVM_CHECK_EXTENSION.
type Cap uintptr

// Capabilities vmm checks, from include/uapi/linux/kvm.h.
const (
	CapIRQChip            Cap = 0
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapCoalescedMMIO      Cap = 15 // answers the coalesced ring's page offset in kvm_run
	CapIRQRouting         Cap = 25 // answers MaxIRQRoutes
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapTSCDeadlineTimer   Cap = 72
	CapSignalMSI          Cap = 77
	CapMaxVCPUs           Cap = 66
	CapImmediateExit      Cap = 136
	CapCoalescedPIO       Cap = 162
)

// APIVersion is KVM_API_VERSION: the only version the kernel has ever
// reported since 2.6.22; anything else is not the ABI mirrored here.
const APIVersion = 12
