package kvm

import (
	"reflect"
	"testing"
)

// The kernel's sizes and offsets, from include/uapi/linux/kvm.h and
// arch/x86/include/uapi/asm/kvm.h on x86-64.
func TestStructSizes(t *testing.T) {
	tests := []struct {
		v    any
		want uintptr
	}{
		{Regs{}, sizeofRegs},
		{Segment{}, sizeofSegment},
		{DTable{}, sizeofDTable},
		{Sregs{}, sizeofSregs},
		{FPU{}, sizeofFPU},
		{MSREntry{}, sizeofMSREntry},
		{CPUIDEntry{}, sizeofCPUIDEntry},
		{userspaceMemoryRegion{}, sizeofUserspaceMemoryRegion},
		{irqLevel{}, sizeofIRQLevel},
		{pitConfig{}, sizeofPITConfig},
		{irqfd{}, sizeofIRQFD},
		{ioeventfd{}, sizeofIOEventFD},
		{coalescedZone{}, sizeofCoalescedZone},
		{irqRouting{}, sizeofIRQRoutingHeader},
		{irqRoutingEntry{}, sizeofIRQRoutingEntry},
		{irqRoutingIRQChip{}, 8},
		{irqRoutingMSI{}, 16},
		{LAPICState{}, sizeofLAPICState},
	}
	for _, tt := range tests {
		typ := reflect.TypeOf(tt.v)
		if typ.Size() != tt.want {
			t.Errorf("%s: Go size %d, kernel size %d", typ.Name(), typ.Size(), tt.want)
		}
	}
}

func TestFieldOffsets(t *testing.T) {
	tests := []struct {
		v     any
		field string
		want  uintptr
	}{
		{Regs{}, "RIP", 128},
		{Regs{}, "RFLAGS", 136},
		{Segment{}, "Selector", 12},
		{Segment{}, "Type", 14},
		{Segment{}, "Unusable", 22},
		{Sregs{}, "GDT", 192},
		{Sregs{}, "IDT", 208},
		{Sregs{}, "CR0", 224},
		{Sregs{}, "EFER", 264},
		{Sregs{}, "APICBase", 272},
		{Sregs{}, "InterruptBitmap", 280},
		{FPU{}, "FCW", 128},
		{FPU{}, "LastIP", 136},
		{FPU{}, "XMM", 152},
		{FPU{}, "MXCSR", 408},
		{CPUIDEntry{}, "EDX", 24},
		{ioeventfd{}, "FD", 20},
		{ioeventfd{}, "Flags", 24},
		{irqfd{}, "ResampleFD", 12},
		{irqRoutingEntry{}, "Flags", 8},
		{irqRoutingEntry{}, "U", 16},
		{irqRoutingIRQChip{}, "Pin", 4},
		{irqRoutingMSI{}, "AddressHi", 4},
		{irqRoutingMSI{}, "Data", 8},
	}
	for _, tt := range tests {
		typ := reflect.TypeOf(tt.v)
		f, ok := typ.FieldByName(tt.field)
		if !ok {
			t.Fatalf("%s has no field %s", typ.Name(), tt.field)
		}
		if f.Offset != tt.want {
			t.Errorf("%s.%s at %d, kernel has it at %d", typ.Name(), tt.field, f.Offset, tt.want)
		}
	}
}

// The values the kernel's _IO/_IOR/_IOW/_IOWR macros produce on x86-64
// (as printed by a C program including <linux/kvm.h>).
func TestIoctlNumbers(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xAE00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xAE01},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0xAE03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0xAE04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xC008AE05},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0xAE41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020AE46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xAE47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008AE48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0xAE60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008AE61},
		{"KVM_REGISTER_COALESCED_MMIO", kvmRegisterCoalescedMMIO, 0x4010AE67},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting, 0x4008AE6A},
		{"KVM_IRQFD", kvmIRQFD, 0x4020AE76},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040AE77},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040AE79},
		{"KVM_RUN", kvmRun, 0xAE80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090AE81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090AE82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138AE83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138AE84},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008AE89},
		{"KVM_SET_FPU", kvmSetFPU, 0x41A0AE8D},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400AE8E},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400AE8F},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008AE90},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004AE98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004AE99},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, kernel has %#x", tt.name, tt.got, tt.want)
		}
		if nr, ok := Request(tt.name); !ok || nr != tt.got {
			t.Errorf("Request(%q) = %#x, %v; want %#x", tt.name, nr, ok, tt.got)
		}
	}
}

func TestCPUID2RoundTrip(t *testing.T) {
	in := []CPUIDEntry{{Function: 1, EAX: 0x800f12, EBX: 0x5000800, ECX: 0x7ed8320b, EDX: 0x178bfbff}, {Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x209c01a9}}
	out, err := decodeCPUID2(encodeCPUID2(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestDecodeCPUID2RejectsLyingCount(t *testing.T) {
	tests := []struct {
		name string
		buf  []byte
	}{
		{"short header", []byte{1, 0, 0}},
		{"count beyond buffer", encodeCPUID2(make([]CPUIDEntry, 2))[:8+40]},
	}
	for _, tt := range tests {
		if _, err := decodeCPUID2(tt.buf); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

func TestRunLayout(t *testing.T) {
	// kvm_run's exit union starts after 8 bytes of request flags, the
	// exit reason and flags (8 bytes) and cr8/apic_base (16 bytes).
	if runExit != 32 || runMMIOIsWrite != 52 || runIODataOffset != 40 {
		t.Fatalf("kvm_run offsets: exit %d mmio.is_write %d io.data_offset %d", runExit, runMMIOIsWrite, runIODataOffset)
	}
}

func TestIOExitBoundsChecked(t *testing.T) {
	c := &VCPU{run: make([]byte, 4096)}
	c.run[runIOSize] = 4
	c.run[runIOCount] = 2
	c.run[runIODataOffset] = 0xf8 // 0xff8 + 8 bytes fits exactly
	c.run[runIODataOffset+1] = 0x0f
	if e, err := c.IO(); err != nil || len(e.Data) != 8 {
		t.Fatalf("in-bounds IO: %v, %d bytes", err, len(e.Data))
	}
	c.run[runIOCount] = 3 // one access past the end
	if _, err := c.IO(); err == nil {
		t.Fatal("IO past kvm_run: no error")
	}
}

func TestRequestUnknown(t *testing.T) {
	for _, name := range []string{"", "KVM_RUN ", "kvm_run", "KVM_CREATE_GUEST_MEMFD"} {
		if nr, ok := Request(name); ok {
			t.Errorf("Request(%q) = %#x, want none", name, nr)
		}
	}
}
