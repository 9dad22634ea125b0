// Package pci is conventional PCI as a guest sees it on a PC: configuration
// mechanism #1 at the CONFIG_ADDRESS/CONFIG_DATA ports, a single bus 0 whose
// device 0 is the host bridge, type-0 endpoint functions with 32-bit memory
// BARs and a capability list, and the root bridge's memory window, which
// routes each MMIO access to whichever BAR currently decodes its address.
//
// It has its own home because PCI's register layout and write semantics
// (read-only identity, BAR sizing, capability chains, sub-dword merges) are
// the same for every device behind it, and a guest reaches all of them with
// hostile input. A transport built on it (virtio-pci) only describes its
// identity, BAR sizes and capabilities, and hears through Hooks what the
// guest programmed; the machine only inserts two bus.Devices (HostBridge on
// the port bus, Window on the MMIO bus). Nothing here knows about KVM.
//
// Lock order, outermost first:
//
//	HostBridge.mu → Endpoint.mu
//	HostBridge.mu → whatever a Hooks method takes (Window.mu, the owner's locks)
//
// Endpoint.mu and Window.mu are leaves: nothing is called while either is
// held (an endpoint releases its lock before calling Hooks, and Window calls
// the mapped bus.Device with no lock at all). A hook therefore may call the
// endpoint's read methods and Window.Map/Unmap, but must not make a config
// access through the HostBridge, whose mutex its caller holds.
package pci

// ConfigSize is the size of a conventional function's configuration space
// (PCI 3.0 §6.1; PCI_CFG_SPACE_SIZE).
const ConfigSize = 256

// NumBARs is the number of Base Address registers in a type-0 header
// (PCI 3.0 §6.2.5; PCI_STD_NUM_BARS).
const NumBARs = 6

// Capability IDs a transport is likely to need (PCI Code and ID Assignment
// specification, as listed in pci_regs.h).
const (
	// CapIDVendorSpecific is PCI_CAP_ID_VNDR; virtio-pci describes its
	// register blocks with it.
	CapIDVendorSpecific = 0x09
	// CapIDMSIX is PCI_CAP_ID_MSIX (PCI 3.0 §6.8.2).
	CapIDMSIX = 0x11
)

// ClassHostBridge is base class 06h (bridge), subclass 00h (host bridge),
// programming interface 00h (PCI 3.0 Appendix D; PCI_CLASS_BRIDGE_HOST<<8).
const ClassHostBridge = 0x060000

// Type-0 configuration header registers (PCI 3.0 §6.1 Figure 6-1; names
// from Linux include/uapi/linux/pci_regs.h).
const (
	regVendorID          = 0x00 // PCI_VENDOR_ID
	regDeviceID          = 0x02 // PCI_DEVICE_ID
	regCommand           = 0x04 // PCI_COMMAND
	regStatus            = 0x06 // PCI_STATUS
	regRevision          = 0x08 // PCI_REVISION_ID; PCI_CLASS_PROG at 0x09, PCI_CLASS_DEVICE at 0x0a
	regCacheLineSize     = 0x0c // PCI_CACHE_LINE_SIZE
	regLatencyTimer      = 0x0d // PCI_LATENCY_TIMER
	regHeaderType        = 0x0e // PCI_HEADER_TYPE
	regBAR0              = 0x10 // PCI_BASE_ADDRESS_0; BAR i at 0x10+4i up to PCI_BASE_ADDRESS_5
	regSubsystemVendorID = 0x2c // PCI_SUBSYSTEM_VENDOR_ID
	regSubsystemID       = 0x2e // PCI_SUBSYSTEM_ID
	regROMAddress        = 0x30 // PCI_ROM_ADDRESS
	regCapabilityList    = 0x34 // PCI_CAPABILITY_LIST
	regInterruptLine     = 0x3c // PCI_INTERRUPT_LINE
	regInterruptPin      = 0x3d // PCI_INTERRUPT_PIN
	headerSize           = 0x40 // PCI_STD_HEADER_SIZEOF: capabilities start after it
)

// Command register bits the endpoint implements (PCI 3.0 §6.2.2). There are
// no I/O BARs, so PCI_COMMAND_IO stays 0, and nothing else applies to a
// virtual function.
const (
	cmdMemory       = 0x0002 // PCI_COMMAND_MEMORY: decode memory BARs
	cmdMaster       = 0x0004 // PCI_COMMAND_MASTER: the function may DMA
	cmdINTxDisable  = 0x0400 // PCI_COMMAND_INTX_DISABLE
	cmdWritableMask = cmdMemory | cmdMaster | cmdINTxDisable
)

// statusCapList is PCI_STATUS_CAP_LIST (PCI 3.0 §6.2.3): the capabilities
// pointer at 0x34 is valid.
const statusCapList = 0x0010

// barFlagsMask covers a memory BAR's low bits (PCI 3.0 §6.2.5.1): bit 0
// PCI_BASE_ADDRESS_SPACE (0 = memory), bits 2:1 PCI_BASE_ADDRESS_MEM_TYPE_MASK
// (00 = 32-bit), bit 3 PCI_BASE_ADDRESS_MEM_PREFETCH. All zero here, which is
// why a BAR's minimum size is 16 bytes.
const barFlagsMask = 0xf

// Capability header layout (PCI 3.0 §6.7).
const (
	capListID   = 0 // PCI_CAP_LIST_ID
	capListNext = 1 // PCI_CAP_LIST_NEXT
	capHeader   = 2 // bytes before a capability's body
)
