package machine

import (
	"encoding/binary"
	"fmt"

	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/kvm"
)

// Boot GDT selectors. The boot protocol (Documentation/arch/x86/boot.rst,
// "32-bit" and "64-bit boot protocol") requires __BOOT_CS = 0x10 and
// __BOOT_DS = 0x18 as flat 4 GiB segments.
const (
	bootCS = 0x10
	bootDS = 0x18
)

// Descriptor bits (Intel SDM vol. 3, 3.4.5 "Segment Descriptors").
const (
	cr0PE    = 1 << 0
	cr0ET    = 1 << 4
	cr0PG    = 1 << 31
	cr4PAE   = 1 << 5
	eferLME  = 1 << 8
	eferLMA  = 1 << 10
	pteP     = 1 << 0
	pteRW    = 1 << 1
	ptePS    = 1 << 7 // a 2 MiB page in a page directory entry
	pageSize = 0x1000
	hugePage = 2 << 20
)

// segments returns the flat code and data segments for a 64-bit (long)
// or 32-bit protected-mode entry.
func segments(long bool) (code, data kvm.Segment) {
	code = kvm.Segment{Limit: 0xffffffff, Selector: bootCS, Type: 0xb, Present: 1, S: 1, G: 1}
	if long {
		code.L = 1
	} else {
		code.DB = 1
	}
	data = kvm.Segment{Limit: 0xffffffff, Selector: bootDS, Type: 0x3, Present: 1, S: 1, DB: 1, G: 1}
	return code, data
}

// descriptor packs a kvm.Segment into an 8-byte GDT entry, so the table
// in memory matches what is loaded into the hidden segment registers.
func descriptor(s kvm.Segment) uint64 {
	limit := uint64(s.Limit)
	if s.G != 0 {
		limit >>= 12
	}
	base := s.Base
	d := limit & 0xffff
	d |= (base & 0xffffff) << 16
	d |= uint64(s.Type&0xf) << 40
	d |= uint64(s.S&1) << 44
	d |= uint64(s.DPL&3) << 45
	d |= uint64(s.Present&1) << 47
	d |= (limit >> 16 & 0xf) << 48
	d |= uint64(s.AVL&1) << 52
	d |= uint64(s.L&1) << 53
	d |= uint64(s.DB&1) << 54
	d |= uint64(s.G&1) << 55
	d |= (base >> 24 & 0xff) << 56
	return d
}

// gdtEntries is the boot GDT: null, unused, code (0x10), data (0x18).
const gdtEntries = 4

// writeGDT writes the boot GDT for the chosen entry mode.
func writeGDT(mem *guestmem.Memory, long bool) error {
	code, data := segments(long)
	var b [gdtEntries * 8]byte
	binary.LittleEndian.PutUint64(b[bootCS:], descriptor(code))
	binary.LittleEndian.PutUint64(b[bootDS:], descriptor(data))
	if err := mem.WriteAt(b[:], bootGDTAddr); err != nil {
		return fmt.Errorf("write boot GDT: %w", err)
	}
	return nil
}

// writePageTables identity-maps the first 4 GiB with 2 MiB pages, which is
// what the 64-bit entry needs (kernel, zero page and command line mapped).
func writePageTables(mem *guestmem.Memory) error {
	pml4, err := mem.Slice(pml4Addr, pageSize)
	if err != nil {
		return fmt.Errorf("write PML4: %w", err)
	}
	pdpt, err := mem.Slice(pdptAddr, pageSize)
	if err != nil {
		return fmt.Errorf("write PDPT: %w", err)
	}
	pd, err := mem.Slice(pdAddr, 4*pageSize)
	if err != nil {
		return fmt.Errorf("write page directories: %w", err)
	}
	clear(pml4)
	clear(pdpt)
	binary.LittleEndian.PutUint64(pml4, pdptAddr|pteP|pteRW)
	for i := uint64(0); i < 4; i++ {
		binary.LittleEndian.PutUint64(pdpt[8*i:], (pdAddr+i*pageSize)|pteP|pteRW)
	}
	for i := uint64(0); i < 4*512; i++ {
		binary.LittleEndian.PutUint64(pd[8*i:], i*hugePage|pteP|pteRW|ptePS)
	}
	return nil
}

// bootSregs returns the special registers for the kernel's entry, starting
// from KVM's reset state so TR and LDT keep values valid for VM entry.
func bootSregs(s kvm.Sregs, long bool) kvm.Sregs {
	code, data := segments(long)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: bootGDTAddr, Limit: gdtEntries*8 - 1}
	s.IDT = kvm.DTable{}
	s.CR0 = cr0PE | cr0ET
	s.CR4 = 0
	s.EFER = 0
	if long {
		s.CR0 |= cr0PG
		s.CR3 = pml4Addr
		s.CR4 = cr4PAE
		s.EFER = eferLME | eferLMA
	}
	return s
}

// bootRegs returns the general registers for the kernel's entry at the
// address loadKernel chose; RSI points at the zero page in both the 32-bit
// and the 64-bit boot protocol (boot.rst).
func bootRegs(entry uint64) kvm.Regs {
	return kvm.Regs{RIP: entry, RSI: zeroPageAddr, RSP: bootStackTop, RFLAGS: 2}
}

// bootFPU is the x87/SSE state after FNINIT, with all SSE exceptions
// masked (MXCSR's reset value).
func bootFPU() kvm.FPU {
	return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
}

// MSR numbers (Intel SDM vol. 4; arch/x86/include/asm/msr-index.h).
const (
	msrTSC          = 0x10
	msrSysenterCS   = 0x174
	msrSysenterESP  = 0x175
	msrSysenterEIP  = 0x176
	msrMiscEnable   = 0x1a0
	msrMTRRDefType  = 0x2ff
	msrSTAR         = 0xc0000081
	msrLSTAR        = 0xc0000082
	msrCSTAR        = 0xc0000083
	msrSyscallMask  = 0xc0000084
	msrKernelGSBase = 0xc0000102

	miscEnableFastStrings = 1 << 0
	// mtrrDefTypeWB enables MTRRs (bit 11) with write-back as the default
	// type, as firmware leaves it; without it Linux reports disabled MTRRs
	// and may map RAM uncached.
	mtrrDefTypeWB = 1<<11 | 6
)

// bootMSRs is the MSR state firmware would leave: syscall MSRs cleared,
// fast strings on, write-back memory.
func bootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: msrSysenterCS}, {Index: msrSysenterESP}, {Index: msrSysenterEIP},
		{Index: msrSTAR}, {Index: msrLSTAR}, {Index: msrCSTAR}, {Index: msrSyscallMask},
		{Index: msrKernelGSBase}, {Index: msrTSC},
		{Index: msrMiscEnable, Data: miscEnableFastStrings},
		{Index: msrMTRRDefType, Data: mtrrDefTypeWB},
	}
}

// Local APIC register offsets and delivery modes (Intel SDM vol. 3,
// 11.5.1 "Local Vector Table").
const (
	apicLVTLINT0  = 0x350
	apicLVTLINT1  = 0x360
	apicDelivMask = 0x700
	apicExtINT    = 0x700
	apicNMI       = 0x400
)

// bootLAPIC wires LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as PC
// firmware does, so legacy PIC interrupts reach the boot CPU before the
// kernel switches to the IOAPIC.
func bootLAPIC(s kvm.LAPICState) kvm.LAPICState {
	for _, r := range []struct {
		off  int
		mode uint32
	}{{apicLVTLINT0, apicExtINT}, {apicLVTLINT1, apicNMI}} {
		v := binary.LittleEndian.Uint32(s.Regs[r.off:])
		binary.LittleEndian.PutUint32(s.Regs[r.off:], v&^apicDelivMask|r.mode)
	}
	return s
}
