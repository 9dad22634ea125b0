// Package acpi describes the machine to the guest through ACPI tables and
// implements the one piece of ACPI fixed hardware the guest drives: the PM1
// register block with its reset register.
//
// It exists because a distro kernel has no other way to learn the machine's
// shape. Debian builds without CONFIG_X86_MPPARSE, so without a MADT the
// kernel sees neither the other CPUs nor the IOAPIC and boots on one CPU
// with the 8259s. And a guest "poweroff" ends in an ACPI S5 transition, a
// write to PM1a_CNT that only a described, working PM block can turn into
// the VMM exiting cleanly.
//
// The tables are a pure function of Config, built without /dev/kvm, so
// every byte the guest parses is checked by the tests here.
package acpi

import (
	"errors"
	"fmt"
	"github.com/vmm-dev/vmm/devices/pm"
)

// Config is the part of the machine layout the tables announce. The
// machine owns the layout; this package only encodes it.
type Config struct {
	// Base is the guest-physical address the blob is copied to. The RSDP
	// sits at Base, so on a BIOS-style boot Base must lie in
	// 0xE0000-0xFFFFF, where Linux scans for it, and be 16-byte aligned.
	Base uint64
	// CPUs is the vCPU count, 1-255; their local APIC IDs are 0..CPUs-1.
	CPUs int
	// LAPICAddr and IOAPICAddr are the interrupt controllers' MMIO bases
	// (0xFEE00000 and 0xFEC00000 on a PC).
	LAPICAddr  uint32
	IOAPICAddr uint32
	IOAPICID   uint8
	// PMPort is the I/O port base of the PM block served by PM: PM1a
	// event block at +0 (status, enable), PM1a control at +4, reset
	// register at +8. The machine inserts PM there with size pm.Size.
	PMPort uint16
	// SCIIRQ is the ISA IRQ of the ACPI SCI (9 on a PC).
	SCIIRQ uint8
	// MaxSize is the room available at Base; Build fails rather than let
	// the tables spill over whatever follows.
	MaxSize int
	// VirtioMMIO are the virtio-mmio transports to describe in the DSDT,
	// in the order the guest should find them (Linux probes them, and so
	// names disks vda, vdb, ..., in this order).
	VirtioMMIO []MMIODevice
	// PCI, when not nil, is the PCI root bridge to declare in the DSDT as
	// \_SB.PCI0. Linux with ACPI enumerates PCI only below host bridges
	// the DSDT declares, so without it the guest never scans bus 0.
	PCI *PCIRoot
}

// PCIRoot is a conventional PCI host bridge (PNP0A03) for bus 0 of
// segment 0, reached through configuration mechanism #1 (PCI Local Bus
// 3.0 §3.2.2.3.2). Its devices have only 32-bit memory BARs, assigned
// inside one memory window, and signal with MSI-X only, so the bridge
// forwards no I/O ports and needs no interrupt routing (_PRT).
type PCIRoot struct {
	// ConfigPort is the first of the 8 ports of configuration mechanism
	// #1, CONFIG_ADDRESS at +0 and CONFIG_DATA at +4. It must be 0xCF8:
	// the mechanism lives there, Linux's conf1 accessors hard-code it,
	// and Linux drops exactly 0xCF8-0xCFF from a host bridge's _CRS as
	// the bridge's own, taking any other I/O range there for a window.
	ConfigPort uint16
	// MMIOBase and MMIOSize are the memory window the BARs are assigned
	// in, [MMIOBase, MMIOBase+MMIOSize), below 4 GiB.
	MMIOBase, MMIOSize uint32
}

// MMIODevice is one virtio-mmio transport (virtio v1.2 §4.2): a register
// window and the GSI its interrupt arrives on.
type MMIODevice struct {
	Addr, Size uint32
	GSI        uint32
}

// Limits on Config.
const (
	// pciConfigPort and pciConfigPorts are configuration mechanism #1's
	// I/O ports, 0xCF8-0xCFF (PCI Local Bus 3.0 §3.2.2.3.2).
	pciConfigPort  = 0xcf8
	pciConfigPorts = 8
	// apicPageSize is the span the PCI window must keep clear at
	// LAPICAddr and at IOAPICAddr: the MADT gives only their bases, and
	// each controller's registers lie within a 4 KiB page.
	apicPageSize = 0x1000
	// msiAddrBase and msiAddrSize are the interrupt address range,
	// 0xFEE00000-0xFEEFFFFF, where a write is an MSI rather than memory
	// (Intel SDM Vol. 3, "Message Address Register Format"); a BAR there
	// would be hidden behind the MSI-X messages themselves.
	msiAddrBase = 0xfee00000
	msiAddrSize = 1 << 20
	// maxCPUs keeps local APIC IDs and ACPI processor UIDs below 0xFF:
	// APIC ID 0xFF is the xAPIC broadcast destination, and processor UID
	// 0xFF means "all processors" in the Local APIC NMI structure
	// (ACPI 6.4 §5.2.12.7).
	maxCPUs = 255
	// rsdpAlign: on IA-PC the RSDP is found on a 16-byte boundary
	// (ACPI 6.4 §5.2.5.1).
	rsdpAlign = 16
	// facsAlign: the FACS is 64-byte aligned (ACPI 6.4 §5.2.10).
	facsAlign = 64
	// tableAlign keeps every other table on its own 16-byte paragraph.
	// The spec requires no alignment for them, but it keeps the XSDT's
	// and FADT's 64-bit fields naturally aligned relative to the table
	// start and makes hex dumps of guest memory readable.
	tableAlign = 16
)

// Build returns the ACPI tables for c, laid out to be copied to c.Base:
// RSDP (revision 2, pointing at the XSDT) at offset 0, then XSDT, FADT,
// FACS, DSDT and MADT. Every pointer is an absolute guest-physical address
// and every checksum is filled in. The FACS is there because a FADT that
// is not hardware-reduced must point at one (ACPI 6.4 §5.2.10), and the
// guest's ACPI global lock lives in it.
func Build(c Config) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	dsdt, err := buildDSDT(c)
	if err != nil {
		return nil, err
	}
	madt := buildMADT(c)

	// Lay out first, then encode the tables that hold pointers.
	var l layout
	l.base = c.Base
	rsdpOff := l.place(rsdpLen, 1) // Base is already 16-byte aligned
	xsdtOff := l.place(xsdtLen(2), tableAlign)
	fadtOff := l.place(fadtLen, tableAlign)
	facsOff := l.place(facsLen, facsAlign)
	dsdtOff := l.place(len(dsdt), tableAlign)
	madtOff := l.place(len(madt), tableAlign)
	if l.size > c.MaxSize {
		return nil, fmt.Errorf("acpi: tables need %d bytes at %#x, only %d available", l.size, c.Base, c.MaxSize)
	}
	if c.Base > ^uint64(0)-uint64(l.size) {
		return nil, fmt.Errorf("acpi: tables at %#x would run past the end of the address space", c.Base)
	}
	addr := func(off int) uint64 { return c.Base + uint64(off) }

	fadt := buildFADT(c, addr(dsdtOff), addr(facsOff))
	xsdt := buildXSDT(addr(fadtOff), addr(madtOff))
	rsdp := buildRSDP(addr(xsdtOff))

	out := make([]byte, l.size)
	copy(out[rsdpOff:], rsdp)
	copy(out[xsdtOff:], xsdt)
	copy(out[fadtOff:], fadt)
	copy(out[facsOff:], buildFACS())
	copy(out[dsdtOff:], dsdt)
	copy(out[madtOff:], madt)
	return out, nil
}

func (c Config) validate() error {
	var errs []error
	if c.CPUs < 1 || c.CPUs > maxCPUs {
		errs = append(errs, fmt.Errorf("CPUs is %d, want 1-%d", c.CPUs, maxCPUs))
	}
	if c.Base%rsdpAlign != 0 {
		errs = append(errs, fmt.Errorf("Base %#x is not %d-byte aligned as the RSDP must be", c.Base, rsdpAlign))
	}
	if c.LAPICAddr == 0 || c.IOAPICAddr == 0 {
		errs = append(errs, fmt.Errorf("LAPICAddr %#x and IOAPICAddr %#x must both be set", c.LAPICAddr, c.IOAPICAddr))
	}
	// PM1a_EVT_BLK and PM1a_CNT_BLK are required, so port 0 cannot stand
	// for them (ACPI 6.4 §5.2.9); the control block sits at a 32-bit
	// aligned address (ACPI 6.4 §4.8.3.2.1), hence PMPort%4.
	if c.PMPort == 0 || c.PMPort%4 != 0 || int(c.PMPort) > 0x10000-pm.Size {
		errs = append(errs, fmt.Errorf("PMPort %#x must be non-zero, 4-byte aligned and leave %d ports below 0x10000", c.PMPort, pm.Size))
	}
	// The SCI override is an ISA source (bus 0, IRQ 0-15). IRQ 0 is the
	// PIT and IRQ 2 the 8259 cascade; making either level-triggered would
	// break the timer.
	if c.SCIIRQ == 0 || c.SCIIRQ == 2 || c.SCIIRQ > 15 {
		errs = append(errs, fmt.Errorf("SCIIRQ %d must be an ISA IRQ other than 0 and 2", c.SCIIRQ))
	}
	for i, d := range c.VirtioMMIO {
		if d.Size == 0 || uint64(d.Addr)+uint64(d.Size) > 1<<32 {
			errs = append(errs, fmt.Errorf("virtio-mmio device %d: window %#x+%#x must be non-empty and below 4 GiB", i, d.Addr, d.Size))
		}
	}
	if len(c.VirtioMMIO) > maxVirtioMMIO {
		errs = append(errs, fmt.Errorf("%d virtio-mmio devices, at most %d", len(c.VirtioMMIO), maxVirtioMMIO))
	}
	if c.PCI != nil {
		errs = append(errs, c.validatePCI()...)
	}
	if c.MaxSize < 0 {
		errs = append(errs, fmt.Errorf("MaxSize is negative (%d)", c.MaxSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("acpi: bad config: %w", err)
	}
	return nil
}

// validatePCI checks c.PCI: the configuration ports, and a memory window
// that is non-empty, ends at or below 4 GiB and overlaps neither the
// interrupt controllers, nor the MSI address range, nor a virtio-mmio
// transport.
func (c Config) validatePCI() []error {
	p := c.PCI
	var errs []error
	if p.ConfigPort != pciConfigPort {
		errs = append(errs, fmt.Errorf("PCI ConfigPort %#x must be %#x, where configuration mechanism #1 lives", p.ConfigPort, pciConfigPort))
	}
	lo, hi := uint64(p.MMIOBase), uint64(p.MMIOBase)+uint64(p.MMIOSize)
	switch {
	case p.MMIOSize == 0:
		return append(errs, fmt.Errorf("PCI memory window at %#x is empty", p.MMIOBase))
	case hi > 1<<32:
		return append(errs, fmt.Errorf("PCI memory window %#x+%#x runs past 4 GiB", p.MMIOBase, p.MMIOSize))
	}
	type span struct {
		what     string
		lo, size uint64
	}
	var keepOut []span
	if c.LAPICAddr != 0 { // 0 is refused on its own
		keepOut = append(keepOut, span{"local APIC", uint64(c.LAPICAddr), apicPageSize})
	}
	if c.IOAPICAddr != 0 {
		keepOut = append(keepOut, span{"I/O APIC", uint64(c.IOAPICAddr), apicPageSize})
	}
	keepOut = append(keepOut, span{"MSI address range", msiAddrBase, msiAddrSize})
	for i, d := range c.VirtioMMIO {
		keepOut = append(keepOut, span{fmt.Sprintf("virtio-mmio device %d", i), uint64(d.Addr), uint64(d.Size)})
	}
	// Only the first overlap is reported: the local APIC's page usually
	// lies in the MSI address range, and one misplaced window is one
	// fault.
	for _, s := range keepOut {
		if s.size > 0 && lo < s.lo+s.size && s.lo < hi {
			return append(errs, fmt.Errorf("PCI memory window [%#x, %#x) overlaps the %s at [%#x, %#x)", lo, hi, s.what, s.lo, s.lo+s.size))
		}
	}
	return errs
}

// layout hands out offsets in the blob. Alignment is of the absolute
// address, because that is what the FACS requirement is about.
type layout struct {
	base uint64
	size int
}

func (l *layout) place(n, align int) int {
	a := uint64(align)
	off := l.size + int((a-(l.base+uint64(l.size))%a)%a)
	l.size = off + n
	return off
}
