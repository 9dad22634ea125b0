package machine

import (
	"encoding/binary"
	"testing"

	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/kvm"
)

func lowMem(t *testing.T, size uint64) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: make([]byte, size)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPageTablesIdentityMap4GiB(t *testing.T) {
	mem := lowMem(t, pdAddr+4*pageSize)
	if err := writePageTables(mem); err != nil {
		t.Fatal(err)
	}
	// Walk the tables like the MMU for a few addresses.
	read := func(addr uint64) uint64 {
		b, err := mem.Slice(addr, 8)
		if err != nil {
			t.Fatalf("walk reads %#x: %v", addr, err)
		}
		return binary.LittleEndian.Uint64(b)
	}
	for _, va := range []uint64{0, kernelLoadAddr + 0x200, zeroPageAddr, 0x3fffffff, 0x40000000, 0xfee00000, 0xffffffff} {
		pml4e := read(pml4Addr + 8*(va>>39&511))
		pdpte := read(pml4e&^0xfff + 8*(va>>30&511))
		pde := read(pdpte&^0xfff + 8*(va>>21&511))
		if pde&(pteP|ptePS) != pteP|ptePS {
			t.Fatalf("va %#x: PDE %#x not a present 2 MiB page", va, pde)
		}
		if pa := pde&^0x1fffff | va&0x1fffff; pa != va {
			t.Errorf("va %#x maps to %#x", va, pa)
		}
	}
}

func TestBootSetupOneByteTooSmall(t *testing.T) {
	tests := []struct {
		name string
		need uint64
		fn   func(*guestmem.Memory) error
	}{
		{"page tables", pdAddr + 4*pageSize, writePageTables},
		{"GDT", bootGDTAddr + gdtEntries*8, func(m *guestmem.Memory) error { return writeGDT(m, true) }},
	}
	for _, tt := range tests {
		if err := tt.fn(lowMem(t, tt.need)); err != nil {
			t.Errorf("%s with exactly enough memory: %v", tt.name, err)
		}
		if err := tt.fn(lowMem(t, tt.need-1)); err == nil {
			t.Errorf("%s with one byte too little memory: no error", tt.name)
		}
	}
}

func TestGDTMatchesSegments(t *testing.T) {
	mem := lowMem(t, 0x1000)
	if err := writeGDT(mem, true); err != nil {
		t.Fatal(err)
	}
	b, _ := mem.Slice(bootGDTAddr, gdtEntries*8)
	// Well-known encodings of flat segments: 64-bit code 0x00af9b000000ffff,
	// data 0x00cf93000000ffff (as in the kernel's own boot GDT).
	if got := binary.LittleEndian.Uint64(b[bootCS:]); got != 0x00af9b000000ffff {
		t.Errorf("code descriptor %#x", got)
	}
	if got := binary.LittleEndian.Uint64(b[bootDS:]); got != 0x00cf93000000ffff {
		t.Errorf("data descriptor %#x", got)
	}
	if err := writeGDT(mem, false); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(b[bootCS:]); got != 0x00cf9b000000ffff {
		t.Errorf("32-bit code descriptor %#x", got)
	}
}

func TestBootRegisters(t *testing.T) {
	tests := []struct {
		long           bool
		rip, cr0, efer uint64
	}{
		{true, kernelLoadAddr + 0x200, cr0PE | cr0ET | cr0PG, eferLME | eferLMA},
		{false, kernelLoadAddr, cr0PE | cr0ET, 0},
	}
	for _, tt := range tests {
		r := bootRegs(tt.rip)
		s := bootSregs(kvm.Sregs{TR: kvm.Segment{Type: 0xb, Present: 1}}, tt.long)
		if r.RIP != tt.rip || r.RSI != zeroPageAddr || r.RFLAGS != 2 {
			t.Errorf("long=%v regs %+v", tt.long, r)
		}
		if s.CR0 != tt.cr0 || s.EFER != tt.efer || s.CS.Selector != bootCS || s.SS.Selector != bootDS {
			t.Errorf("long=%v sregs cr0 %#x efer %#x cs %#x", tt.long, s.CR0, s.EFER, s.CS.Selector)
		}
		if s.TR.Type != 0xb {
			t.Errorf("TR from KVM's reset state was not kept")
		}
	}
}

func TestVCPUCPUID(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x1f},
		{Function: leafFeatures, EBX: 0x07000800, EDX: 1 << 9},
		{Function: leafTopology, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EDX: 7},
		{Function: leafTopology, Index: 1, Flags: kvm.CPUIDFlagSignificantIndex, EDX: 7},
		{Function: leafAMDExtAPICID, EAX: 7},
	}
	got := vcpuCPUID(supported, 3, 4, cpuidOptions{tscDeadline: true})
	byLeaf := map[[2]uint32]kvm.CPUIDEntry{}
	for _, e := range got {
		byLeaf[[2]uint32{e.Function, e.Index}] = e
	}
	f := byLeaf[[2]uint32{leafFeatures, 0}]
	if f.EBX>>24 != 3 || f.EBX>>16&0xff != 4 || f.ECX&ecxHypervisor == 0 || f.ECX&ecxTSCDeadline == 0 || f.EBX&0xffff != 0x0800 {
		t.Errorf("leaf 1: EBX %#x ECX %#x", f.EBX, f.ECX)
	}
	for i := uint32(0); i < 2; i++ {
		if e := byLeaf[[2]uint32{leafTopology, i}]; e.EDX != 3 {
			t.Errorf("leaf 0xb.%d EDX %d, want APIC ID 3", i, e.EDX)
		}
	}
	if e := byLeaf[[2]uint32{leafAMDExtAPICID, 0}]; e.EAX != 3 {
		t.Errorf("leaf 0x8000001e EAX %d", e.EAX)
	}
	sig, ok := byLeaf[[2]uint32{leafKVMSignature, 0}]
	if !ok || sig.EBX != kvmSignatureEBX || sig.EAX < leafKVMFeatures {
		t.Errorf("KVM signature leaf missing or wrong: %+v", sig)
	}
	if e := vcpuCPUID(supported, 0, 1, cpuidOptions{})[1]; e.ECX&ecxTSCDeadline != 0 {
		t.Errorf("TSC deadline announced without KVM_CAP_TSC_DEADLINE_TIMER")
	}
	if supported[1].EBX != 0x07000800 {
		t.Errorf("input modified")
	}
}

func TestBootLAPIC(t *testing.T) {
	var s kvm.LAPICState
	binary.LittleEndian.PutUint32(s.Regs[apicLVTLINT0:], 0x10700) // masked, ExtINT already
	binary.LittleEndian.PutUint32(s.Regs[apicLVTLINT1:], 0x10000)
	s = bootLAPIC(s)
	if v := binary.LittleEndian.Uint32(s.Regs[apicLVTLINT0:]); v&apicDelivMask != apicExtINT {
		t.Errorf("LINT0 %#x", v)
	}
	if v := binary.LittleEndian.Uint32(s.Regs[apicLVTLINT1:]); v&apicDelivMask != apicNMI || v&0x10000 == 0 {
		t.Errorf("LINT1 %#x (mask bit must be kept)", v)
	}
}

// A fatal exit names where the guest was, except when KVM has already
// reset the vCPU (AMD's shutdown), where the registers would mislead.
func TestDescribeFault(t *testing.T) {
	long := kvm.Sregs{CR0: cr0PE | cr0PG | cr0ET, CR3: 0x1000, EFER: eferLME | eferLMA}
	long.CS.Base = 0
	reset := kvm.Sregs{CR0: 0x60000010}
	reset.CS.Base = resetCSBase
	tests := []struct {
		name string
		r    kvm.Regs
		s    kvm.Sregs
		want string
	}{
		{"long mode", kvm.Regs{RIP: 0xffffffff81000000, RSP: 0x8000}, long,
			"triple fault at RIP=0xffffffff81000000 RSP=0x8000 CR0=0x80000011 CR3=0x1000 CR4=0x0 EFER=0x500"},
		{"reset by KVM", kvm.Regs{RIP: resetRIP}, reset,
			"triple fault (registers lost: KVM resets the vCPU before reporting this on AMD)"},
		{"reset vector in protected mode", kvm.Regs{RIP: resetRIP}, kvm.Sregs{CR0: cr0PE},
			"triple fault at RIP=0xfff0 RSP=0x0 CR0=0x1 CR3=0x0 CR4=0x0 EFER=0x0"},
	}
	for _, tt := range tests {
		if got := describeFault("triple fault", tt.r, tt.s); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}
