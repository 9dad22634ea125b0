package acpi

import (
	"encoding/binary"
	"fmt"
	"github.com/vmm-dev/vmm/devices/pm"
)

// Identification written into every table header (ACPI 6.4 §5.2.6). Linux
// applies quirks by OEM ID, so ours matches no real vendor. The XSDT's and
// FADT's OEM Table IDs must match each other (ACPI 6.4 §5.2.8, §5.2.9);
// using one ID everywhere satisfies that.
const (
	oemID           = "GOVMM "
	oemTableID      = "GOVMMTBL"
	oemRevision     = 1
	creatorID       = "GVMM"
	creatorRevision = 1
)

// Table signatures and revisions (ACPI 6.4 §5.2.5.3, §5.2.6 Table 5.5).
const (
	rsdpSignature = "RSD PTR "
	rsdpRevision  = 2 // ACPI 2.0+ RSDP, the one with XsdtAddress
	sigXSDT       = "XSDT"
	xsdtRevision  = 1 // ACPI 6.4 §5.2.8
	sigFADT       = "FACP"
	fadtRevision  = 6 // ACPI 6.4 §5.2.9: FADT major version
	fadtMinor     = 4 // ACPI 6.4 §5.2.9: FADT Minor Version for ACPI 6.4
	sigFACS       = "FACS"
	facsVersion   = 2 // ACPI 6.4 §5.2.10
	sigDSDT       = "DSDT"
	// dsdtRevision 2 makes AML integers 64 bits wide (ACPI 6.4 §5.2.11.1);
	// revision 1 would truncate them to 32.
	dsdtRevision = 2
	sigMADT      = "APIC"
	madtRevision = 5 // ACPI 6.4 §5.2.12
)

// Table sizes and header field offsets.
const (
	headerLen = 36 // ACPI 6.4 §5.2.6 Table 5.4
	// rsdpLen and its two checksummed spans (ACPI 6.4 §5.2.5.3): the
	// ACPI 1.0 checksum covers the first 20 bytes, the extended one all 36.
	rsdpLen      = 36
	rsdpV1Len    = 20
	hdrLengthOff = 4
	hdrChecksum  = 9
	// fadtLen is the full ACPI 6.x FADT, through Hypervisor Vendor
	// Identity (ACPI 6.4 §5.2.9 Table 5.9).
	fadtLen = 276
	facsLen = 64 // ACPI 6.4 §5.2.10 Table 5.14, the minimum
)

func xsdtLen(entries int) int { return headerLen + 8*entries }

// FADT field offsets (ACPI 6.4 §5.2.9 Table 5.9).
const (
	fadtFirmwareCtrl  = 36
	fadtDSDT          = 40
	fadtPMProfile     = 45
	fadtSCIInt        = 46
	fadtSMICmd        = 48
	fadtPM1aEvtBlk    = 56
	fadtPM1aCntBlk    = 64
	fadtPM1EvtLen     = 88
	fadtPM1CntLen     = 89
	fadtPLvl2Lat      = 96
	fadtPLvl3Lat      = 98
	fadtCentury       = 108
	fadtIAPCBootArch  = 109
	fadtFlags         = 112
	fadtResetReg      = 116
	fadtResetValue    = 128
	fadtMinorVersion  = 131
	fadtXFirmwareCtrl = 132
	fadtXDSDT         = 140
	fadtXPM1aEvtBlk   = 148
	fadtXPM1aCntBlk   = 172
)

// FADT Fixed Feature Flags (ACPI 6.4 §5.2.9 Table 5.10).
const (
	// fadtWBINVD: WBINVD works; under KVM it does. Required of ACPI 1.0+
	// x86 platforms.
	fadtWBINVD = 1 << 0
	// fadtProcC1: C1 (HLT) works on every CPU.
	fadtProcC1 = 1 << 2
	// fadtPwrButton and fadtSlpButton say there is no fixed-feature power
	// or sleep button; we have neither, so Linux registers no button
	// device that could never fire.
	fadtPwrButton = 1 << 4
	fadtSlpButton = 1 << 5
	// fadtFixRTC: no RTC_STS/RTC_EN in the PM1 block; the RTC is not a
	// wake source.
	fadtFixRTC = 1 << 6
	// fadtResetRegSup: RESET_REG works, so Linux's ACPI reboot (its
	// default first method on x86) resets through us.
	fadtResetRegSup = 1 << 10
)

// IA-PC Boot Architecture Flags (ACPI 6.4 §5.2.9.3 Table 5.11).
const (
	// bootLegacyDevices: there are user-visible ISA devices (the serial
	// port, RTC and PIT live at their ISA ports).
	bootLegacyDevices = 1 << 0
	// boot8042 is deliberately left clear: with it clear (FADT revision
	// >= 2) Linux marks the i8042 as absent and skips probing a PS/2
	// controller, which otherwise costs boot time for no device.
	boot8042 = 1 << 1
	// bootNoVGA: no VGA hardware to probe.
	bootNoVGA = 1 << 2
	// bootNoMSI is deliberately left clear: set, it tells the OS that
	// MSI must not be enabled, and Linux's acpi_pci_init then calls
	// pci_no_msi(), leaving MSI-X-only PCI devices without interrupts.
	bootNoMSI = 1 << 3
	// bootNoASPM is deliberately left clear: it forbids OSPM control of
	// PCI Express Active State Power Management, which our conventional
	// PCI bus does not have; Linux disables ASPM below a PNP0A03 bridge
	// without _OSC anyway.
	bootNoASPM = 1 << 4
	// bootNoCMOSRTC is deliberately left clear: we emulate the CMOS RTC,
	// and setting it would stop Linux registering rtc_cmos.
	bootNoCMOSRTC = 1 << 5
)

const iapcBootArch = bootLegacyDevices | bootNoVGA

// Other FADT values.
const (
	// pmProfileUnspecified: Preferred_PM_Profile 0 (ACPI 6.4 §5.2.9);
	// claiming a desktop or server profile would steer guest policy for
	// no reason.
	pmProfileUnspecified = 0
	// pLvl2Unsupported and pLvl3Unsupported are latencies above the
	// limits (100 and 1000 us) that mean "C2/C3 not supported" (ACPI 6.4
	// §5.2.9), so the guest idles with HLT only.
	pLvl2Unsupported = 101
	pLvl3Unsupported = 1001
	// centuryIndex is the CMOS RAM index of the RTC century register
	// (ACPI 6.4 §5.2.9 CENTURY), 0x32 as on every PC since the IBM AT.
	centuryIndex = 0x32
	// pm1EvtLen: PM1 status and enable, 2 bytes each (ACPI 6.4 §4.8.3.1).
	pm1EvtLen = 4
	// pm1CntLen: PM1 control is 2 bytes (ACPI 6.4 §4.8.3.2).
	pm1CntLen = 2
)

// Generic Address Structure (ACPI 6.4 §5.2.3.2 Table 5.1).
const (
	gasLen      = 12
	gasSystemIO = 1 // Address Space ID: System I/O
	gasAccByte  = 1 // Access Size: byte
	gasAccWord  = 2 // Access Size: word
)

// MADT (ACPI 6.4 §5.2.12).
const (
	madtLAPICAddrOff = 36
	madtFlagsOff     = 40
	madtEntriesOff   = 44
	// madtPCATCompat: the machine also has dual 8259s, which the OS must
	// mask when it switches to the APICs (ACPI 6.4 §5.2.12 Table 5.20).
	madtPCATCompat = 1 << 0

	// Interrupt controller structure types and lengths (ACPI 6.4
	// §5.2.12 Table 5.21 and the sections named).
	madtTypeLAPIC    = 0 // §5.2.12.2
	madtLenLAPIC     = 8
	madtTypeIOAPIC   = 1 // §5.2.12.3
	madtLenIOAPIC    = 12
	madtTypeISO      = 2 // §5.2.12.5
	madtLenISO       = 10
	madtTypeLAPICNMI = 4 // §5.2.12.7
	madtLenLAPICNMI  = 6

	// madtLAPICEnabled: the processor is usable (ACPI 6.4 §5.2.12.2
	// Table 5.23).
	madtLAPICEnabled = 1 << 0
	// madtISABus is the Bus field of an Interrupt Source Override: 0 is
	// ISA, the only value defined (ACPI 6.4 §5.2.12.5).
	madtISABus = 0
	// MPS INTI flags (ACPI 6.4 §5.2.12.5 Table 5.26): polarity in bits
	// 0-1, trigger mode in bits 2-3.
	intiActiveHigh = 0b01
	intiEdge       = 0b01 << 2
	intiLevel      = 0b11 << 2
	// sciFlags: the SCI is shareable, level-triggered, and we drive the
	// line active high through KVM_IRQ_LINE, so say so rather than let
	// the OS assume the active-low default for the SCI.
	sciFlags = intiLevel | intiActiveHigh
	// nmiFlags: NMI is edge-triggered, active high.
	nmiFlags = intiEdge | intiActiveHigh
	// allProcessors is the Local APIC NMI processor UID meaning every
	// processor (ACPI 6.4 §5.2.12.7).
	allProcessors = 0xff
	// lint1 is the local APIC pin wired to NMI on a PC.
	lint1 = 1
	// ioapicGSIBase: our one IOAPIC's pin n is GSI n. KVM's default IRQ
	// routing sends GSI n to IOAPIC pin n (and, for n < 16, 8259 pin n),
	// so the PIT on IRQ 0 arrives on pin 0 and needs no override.
	ioapicGSIBase = 0
)

// header returns a table of length n with its header filled in, checksum
// left zero.
func header(sig string, n int, rev uint8) []byte {
	t := make([]byte, n)
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[hdrLengthOff:], uint32(n))
	t[8] = rev
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	binary.LittleEndian.PutUint32(t[24:], oemRevision)
	copy(t[28:32], creatorID)
	binary.LittleEndian.PutUint32(t[32:], creatorRevision)
	return t
}

// checksum returns the byte that makes b sum to zero modulo 256, given
// that the checksum's own slot in b is zero.
func checksum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return -s
}

// seal fills in a table's header checksum; it must be the last write.
func seal(t []byte) []byte {
	t[hdrChecksum] = 0
	t[hdrChecksum] = checksum(t)
	return t
}

func buildRSDP(xsdt uint64) []byte {
	r := make([]byte, rsdpLen)
	copy(r[0:8], rsdpSignature)
	copy(r[9:15], oemID)
	r[15] = rsdpRevision
	// RsdtAddress (offset 16) stays 0: there is no RSDT, and an ACPI 2.0+
	// OS uses the XSDT when one is given.
	binary.LittleEndian.PutUint32(r[20:], rsdpLen)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	r[8] = checksum(r[:rsdpV1Len])
	r[32] = checksum(r)
	return r
}

func buildXSDT(entries ...uint64) []byte {
	t := header(sigXSDT, xsdtLen(len(entries)), xsdtRevision)
	for i, e := range entries {
		binary.LittleEndian.PutUint64(t[headerLen+8*i:], e)
	}
	return seal(t)
}

// putGAS writes a Generic Address Structure for a System I/O register.
func putGAS(b []byte, bits, access uint8, port uint64) {
	b[0] = gasSystemIO
	b[1] = bits
	b[2] = 0 // bit offset
	b[3] = access
	binary.LittleEndian.PutUint64(b[4:gasLen], port)
}

func buildFADT(c Config, dsdt, facs uint64) []byte {
	t := header(sigFADT, fadtLen, fadtRevision)
	le := binary.LittleEndian
	// FIRMWARE_CTRL stays 0: it must be zero when X_FIRMWARE_CTRL is set
	// (ACPI 6.4 §5.2.9).
	if dsdt <= 0xffffffff {
		le.PutUint32(t[fadtDSDT:], uint32(dsdt))
	}
	t[fadtPMProfile] = pmProfileUnspecified
	le.PutUint16(t[fadtSCIInt:], uint16(c.SCIIRQ))
	// SMI_CMD stays 0, as do ACPI_ENABLE/ACPI_DISABLE: there is no SMM and
	// no legacy mode, so the OS finds the system already in ACPI mode and
	// never tries a transition (ACPI 6.4 §5.2.9 SMI_CMD; ACPICA's
	// acpi_hw_get_mode reports ACPI mode when SMI_CMD is 0).
	le.PutUint32(t[fadtPM1aEvtBlk:], uint32(c.PMPort)+pm.PM1EvtOffset)
	le.PutUint32(t[fadtPM1aCntBlk:], uint32(c.PMPort)+pm.PM1CntOffset)
	t[fadtPM1EvtLen] = pm1EvtLen
	t[fadtPM1CntLen] = pm1CntLen
	// PM2, PM timer and GPE blocks: address and length stay 0, absent.
	le.PutUint16(t[fadtPLvl2Lat:], pLvl2Unsupported)
	le.PutUint16(t[fadtPLvl3Lat:], pLvl3Unsupported)
	t[fadtCentury] = centuryIndex
	le.PutUint16(t[fadtIAPCBootArch:], iapcBootArch)
	le.PutUint32(t[fadtFlags:], fadtWBINVD|fadtProcC1|fadtPwrButton|fadtSlpButton|fadtFixRTC|fadtResetRegSup)
	putGAS(t[fadtResetReg:], 8, gasAccByte, uint64(c.PMPort)+pm.ResetRegOffset)
	t[fadtResetValue] = pm.ResetValue
	t[fadtMinorVersion] = fadtMinor
	le.PutUint64(t[fadtXFirmwareCtrl:], facs)
	le.PutUint64(t[fadtXDSDT:], dsdt)
	putGAS(t[fadtXPM1aEvtBlk:], 8*pm1EvtLen, gasAccWord, uint64(c.PMPort)+pm.PM1EvtOffset)
	putGAS(t[fadtXPM1aCntBlk:], 8*pm1CntLen, gasAccWord, uint64(c.PMPort)+pm.PM1CntOffset)
	return seal(t)
}

// buildFACS returns an FACS with every field zero but the identifying
// ones: no waking vector (we do not do S1-S4), global lock free, no S4BIOS
// and no 64-bit wake support. The FACS has no checksum.
func buildFACS() []byte {
	f := make([]byte, facsLen)
	copy(f[0:4], sigFACS)
	binary.LittleEndian.PutUint32(f[4:], facsLen)
	f[32] = facsVersion
	return f
}

func buildMADT(c Config) []byte {
	n := madtEntriesOff + c.CPUs*madtLenLAPIC + madtLenIOAPIC + madtLenISO + madtLenLAPICNMI
	t := header(sigMADT, n, madtRevision)
	le := binary.LittleEndian
	le.PutUint32(t[madtLAPICAddrOff:], c.LAPICAddr)
	le.PutUint32(t[madtFlagsOff:], madtPCATCompat)
	e := t[madtEntriesOff:]
	for i := 0; i < c.CPUs; i++ {
		// Processor UID and APIC ID are both i; the boot CPU comes
		// first, as the spec asks (ACPI 6.4 §5.2.12.1).
		e[0], e[1], e[2], e[3] = madtTypeLAPIC, madtLenLAPIC, byte(i), byte(i)
		le.PutUint32(e[4:], madtLAPICEnabled)
		e = e[madtLenLAPIC:]
	}
	e[0], e[1], e[2], e[3] = madtTypeIOAPIC, madtLenIOAPIC, c.IOAPICID, 0
	le.PutUint32(e[4:], c.IOAPICAddr)
	le.PutUint32(e[8:], ioapicGSIBase)
	e = e[madtLenIOAPIC:]
	// Only the SCI needs an override: its trigger and polarity differ
	// from ISA's edge/high default. The source and GSI are equal because
	// KVM's default routing maps ISA IRQ n to IOAPIC pin n.
	e[0], e[1], e[2], e[3] = madtTypeISO, madtLenISO, madtISABus, c.SCIIRQ
	le.PutUint32(e[4:], uint32(c.SCIIRQ)+ioapicGSIBase)
	le.PutUint16(e[8:], sciFlags)
	e = e[madtLenISO:]
	e[0], e[1], e[2] = madtTypeLAPICNMI, madtLenLAPICNMI, allProcessors
	le.PutUint16(e[3:], nmiFlags)
	e[5] = lint1
	return seal(t)
}

// sleepPackage is the \_Sx package for a state we implement: SLP_TYPa,
// SLP_TYPb, then two reserved entries (ACPI 6.4 §7.4.2). There is no PM1b
// block, so SLP_TYPb is a copy of SLP_TYPa, as firmware conventionally
// writes it.
func sleepPackage(typ uint8) amlPackage {
	return amlPackage{amlInt(typ), amlInt(typ), amlInt(0), amlInt(0)}
}

// dsdtAML is the DSDT's definition block body: \_S5, so the OS knows
// soft-off exists and which SLP_TYP selects it (no \_S1-\_S4, so the
// guest never tries a sleep state we do not implement), and under \_SB
// the PCI host bridge, if any, then one device per virtio-mmio transport.
func dsdtAML(c Config) ([]amlTerm, error) {
	terms := []amlTerm{
		amlName{`\_S5`, sleepPackage(pm.SleepTypeS5)},
	}
	var devs []amlTerm
	if c.PCI != nil {
		devs = append(devs, pciRootDevice(*c.PCI))
	}
	for i, d := range c.VirtioMMIO {
		dev, err := virtioMMIODevice(i, d)
		if err != nil {
			return nil, err
		}
		devs = append(devs, dev)
	}
	if len(devs) == 0 {
		return terms, nil
	}
	return append(terms, amlScope{`\_SB`, devs}), nil
}

// pciHostBridgeHID is the PNP ID of a PCI host bridge, the one Linux's
// pci_root driver binds (drivers/acpi/pci_root.c). It is PNP0A03 and not
// PNP0A08: the bus is conventional PCI, and for PNP0A03 Linux treats _OSC
// as optional (negotiate_os_control), where a PNP0A08 bridge without one
// is logged as the platform keeping control of PCIe features.
const pciHostBridgeHID = "PNP0A03"

// pciBus is the one bus below the bridge, in segment 0.
const pciBus = 0

// pciRootDevice is Device(PCI0) for p: _HID, _UID, _SEG and _BBN, and a
// _CRS holding what the bridge decodes: bus 0 alone; the configuration
// ports, which it consumes itself (Linux drops them from the windows);
// and one memory window. There is no I/O window, as no device has an I/O
// BAR, and no _PRT, as no device uses INTx.
func pciRootDevice(p PCIRoot) amlTerm {
	return amlDevice{"PCI0", []amlTerm{
		amlName{"_HID", amlEISAID(pciHostBridgeHID)},
		amlName{"_UID", amlInt(0)},
		amlName{"_SEG", amlInt(0)},
		amlName{"_BBN", amlInt(pciBus)},
		amlName{"_CRS", resourceTemplate(
			wordBusNumber(pciBus, pciBus),
			ioPort(p.ConfigPort, pciConfigPorts),
			dwordMemory(p.MMIOBase, p.MMIOSize),
		)},
	}}
}

// virtioMMIOHID is the _HID Linux's virtio_mmio driver matches in its ACPI
// table (drivers/virtio/virtio_mmio.c, virtio_mmio_acpi_match): the ID
// Linaro registered for virtio-mmio. It is how a distro kernel without
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES finds MMIO transports.
const virtioMMIOHID = "LNRO0005"

// maxVirtioMMIO keeps device names to the four characters of a NameSeg:
// VR00 to VRFF.
const maxVirtioMMIO = 256

// virtioMMIODevice is Device(VRnn) { _HID, _UID, _CRS } for one transport:
// its register window as a fixed 32-bit memory range and its interrupt
// as an edge-triggered, active-high GSI. Edge, because the line is driven
// by an irqfd, which pulses it; the driver reads InterruptStatus to learn
// why, so nothing depends on the line staying asserted.
func virtioMMIODevice(i int, d MMIODevice) (amlTerm, error) {
	if i >= maxVirtioMMIO {
		return nil, fmt.Errorf("acpi: more than %d virtio-mmio devices", maxVirtioMMIO)
	}
	return amlDevice{fmt.Sprintf("VR%02X", i), []amlTerm{
		amlName{"_HID", amlString(virtioMMIOHID)},
		amlName{"_UID", amlInt(i)},
		amlName{"_CRS", resourceTemplate(
			memory32Fixed(d.Addr, d.Size),
			extendedInterrupt(d.GSI),
		)},
	}}, nil
}

func buildDSDT(c Config) ([]byte, error) {
	terms, err := dsdtAML(c)
	if err != nil {
		return nil, err
	}
	body, err := encodeAML(terms...)
	if err != nil {
		return nil, err
	}
	t := header(sigDSDT, headerLen+len(body), dsdtRevision)
	copy(t[headerLen:], body)
	return seal(t), nil
}
