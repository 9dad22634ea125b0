// Package pm is the ACPI fixed hardware a guest powers off and reboots
// through: the PM1a event and control registers and the reset register.
// It lives apart from package acpi, which only builds the tables that
// announce it: acpi describes where these registers are (it imports the
// layout from here), this package is what answers when the guest touches
// them, as any other device on the port bus.
package pm

import (
	"encoding/binary"
	"sync"
)

// Layout of the PM block, relative to the port it is inserted at. The
// FADT (package acpi) announces these same offsets, so the guest and the
// device agree by construction.
const (
	// Size is the port range to insert the block at: the 9 bytes in use,
	// rounded up so the block is a tidy, aligned range.
	Size = 16

	// PM1EvtOffset is PM1a_EVT_BLK: PM1 status, then PM1 enable (ACPI 6.4 §4.8.3.1).
	PM1EvtOffset = 0
	// PM1CntOffset is PM1a_CNT_BLK (ACPI 6.4 §4.8.3.2).
	PM1CntOffset = 4
	// ResetRegOffset is RESET_REG (ACPI 6.4 §4.8.3.6).
	ResetRegOffset = 8

	pm1StsOff = PM1EvtOffset
	pm1EnOff  = PM1EvtOffset + 2
)

// SleepTypeS5 is the SLP_TYP value the DSDT's \_S5 package announces and
// PM treats as soft-off. The field is 3 bits and its values are chosen by
// the platform (ACPI 6.4 §4.8.3.2.1); 5 reads as "S5" in a trace.
const SleepTypeS5 = 5

// ResetValue is the byte the FADT tells the OS to write to RESET_REG
// (ACPI 6.4 §5.2.9 RESET_VALUE). Any value would do; 6 is what PC
// chipsets take at port 0xCF9 for a hard reset, so it looks familiar.
const ResetValue = 0x06

// PM1 status bits that exist (ACPI 6.4 §4.8.3.1.1 Table 4.16). None is
// set by our hardware yet; they are kept so a later power button or wake
// source has somewhere to report, and so W1C behaves as the OS expects.
const (
	pm1StsTmr    = 1 << 0
	pm1StsBM     = 1 << 4
	pm1StsGbl    = 1 << 5
	pm1StsPwrBtn = 1 << 8
	pm1StsSlpBtn = 1 << 9
	pm1StsRTC    = 1 << 10
	pm1StsPCIExp = 1 << 14
	pm1StsWak    = 1 << 15
	pm1StsMask   = pm1StsTmr | pm1StsBM | pm1StsGbl | pm1StsPwrBtn | pm1StsSlpBtn | pm1StsRTC | pm1StsPCIExp | pm1StsWak
)

// PM1 enable bits that exist (ACPI 6.4 §4.8.3.1.2 Table 4.17). They are
// plain storage: the OS must read back what it wrote, or ACPICA concludes
// the hardware is missing (it tests GBL_EN that way).
const (
	pm1EnTmr       = 1 << 0
	pm1EnGbl       = 1 << 5
	pm1EnPwrBtn    = 1 << 8
	pm1EnSlpBtn    = 1 << 9
	pm1EnRTC       = 1 << 10
	pm1EnPCIExpDis = 1 << 14
	pm1EnMask      = pm1EnTmr | pm1EnGbl | pm1EnPwrBtn | pm1EnSlpBtn | pm1EnRTC | pm1EnPCIExpDis
)

// PM1 control bits (ACPI 6.4 §4.8.3.2.1 Table 4.18).
const (
	// pm1CntSCIEn reads as 1 always: with SMI_CMD 0 the system is in ACPI
	// mode from reset and can never leave it.
	pm1CntSCIEn = 1 << 0
	pm1CntBMRld = 1 << 1
	// pm1CntGblRls is write-only; writing it would signal firmware that
	// the OS released the global lock, and we have no firmware.
	pm1CntGblRls   = 1 << 2
	pm1CntSlpTypSh = 10
	pm1CntSlpTyp   = 0b111 << pm1CntSlpTypSh
	// pm1CntSlpEn is write-only and reads as 0; writing it starts the
	// transition to the state in SLP_TYP.
	pm1CntSlpEn = 1 << 13
	// pm1CntStored is what a read returns from the last write.
	pm1CntStored = pm1CntBMRld | pm1CntSlpTyp
)

// PM is the PM1a event and control registers plus the reset register: the
// ACPI fixed hardware the guest uses to power off and reboot. It is a
// bus.Device covering Size ports at the FADT's PM1a_EVT_BLK.
//
// Every register may be accessed with any width at any offset, the way a
// guest's byte, word and dword port instructions land: an access is a
// little-endian window onto the byte-addressed block, so a byte write to
// the high half of PM1 control is exactly as good as a word write.
type PM struct {
	poweroff func()
	reset    func()

	mu  sync.Mutex
	sts uint16 // PM1 status, bits in pm1StsMask
	en  uint16 // PM1 enable, bits in pm1EnMask
	cnt uint16 // PM1 control, bits in pm1CntStored
}

// New returns the PM block. poweroff runs when the guest enters S5,
// reset when it writes ResetValue to the reset register; either may be
// nil. They run on the writing vCPU's thread, outside PM's lock, and run
// again if the guest repeats the request (Linux retries S5 after 10
// seconds), so they must tolerate being called more than once.
func New(poweroff, reset func()) *PM {
	return &PM{poweroff: poweroff, reset: reset}
}

// Read fills data from the registers at offset. Bytes outside the
// registers read as zero.
func (p *PM) Read(offset uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var regs [Size]byte
	binary.LittleEndian.PutUint16(regs[pm1StsOff:], p.sts)
	binary.LittleEndian.PutUint16(regs[pm1EnOff:], p.en)
	binary.LittleEndian.PutUint16(regs[PM1CntOffset:], p.cnt|pm1CntSCIEn)
	for i := range data {
		data[i] = 0
		if a := offset + uint64(i); a >= offset && a < Size {
			data[i] = regs[a]
		}
	}
}

// Write stores data into the registers at offset, one byte lane at a
// time, then acts on a sleep or reset request the write made.
func (p *PM) Write(offset uint64, data []byte) {
	var sleep, reset bool
	p.mu.Lock()
	for i, v := range data {
		a := offset + uint64(i)
		if a < offset || a >= Size {
			break
		}
		switch a {
		case pm1StsOff, pm1StsOff + 1:
			p.sts &^= lane(a-pm1StsOff, v) // write 1 to clear
		case pm1EnOff, pm1EnOff + 1:
			p.en = setLane(p.en, a-pm1EnOff, v) & pm1EnMask
		case PM1CntOffset, PM1CntOffset + 1:
			w := lane(a-PM1CntOffset, v)
			p.cnt = setLane(p.cnt, a-PM1CntOffset, v) & pm1CntStored
			if w&pm1CntSlpEn != 0 {
				sleep = true
			}
		case ResetRegOffset:
			if v == ResetValue {
				reset = true
			}
		}
	}
	// SLP_EN and SLP_TYP share the control register's high byte, so the
	// type is the one this same write supplied.
	poweroff := sleep && (p.cnt&pm1CntSlpTyp)>>pm1CntSlpTypSh == SleepTypeS5
	p.mu.Unlock()

	// Other sleep types are ignored: we announce only \_S5, and there is
	// no S1-S4 to enter.
	if poweroff && p.poweroff != nil {
		p.poweroff()
	}
	if reset && p.reset != nil {
		p.reset()
	}
}

// lane returns byte v placed in byte lane i (0 or 1) of a 16-bit register.
func lane(i uint64, v byte) uint16 { return uint16(v) << (8 * i) }

// setLane replaces byte lane i of r with v.
func setLane(r uint16, i uint64, v byte) uint16 {
	return r&^lane(i, 0xff) | lane(i, v)
}
