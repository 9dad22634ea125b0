package kvm

import (
	"reflect"
	"testing"
)

// The snapshot state structs against the kernel's sizes and offsets
// (arch/x86/include/uapi/asm/kvm.h, x86-64).
func TestStateStructLayout(t *testing.T) {
	sizes := []struct {
		v    any
		want uintptr
	}{
		{XSave{}, sizeofXSave},
		{XCRs{}, sizeofXCRs},
		{XCR{}, 16},
		{MPState{}, sizeofMPState},
		{VCPUEvents{}, sizeofVCPUEvents},
		{DebugRegs{}, sizeofDebugRegs},
		{IRQChip{}, sizeofIRQChip},
		{PITChannelState{}, 24},
		{PITState2{}, sizeofPITState2},
		{ClockData{}, sizeofClockData},
	}
	for _, tt := range sizes {
		if got := reflect.TypeOf(tt.v).Size(); got != tt.want {
			t.Errorf("%T: Go size %d, kernel size %d", tt.v, got, tt.want)
		}
	}
	offsets := []struct {
		v     any
		field string
		want  uintptr
	}{
		{VCPUEvents{}, "Interrupt", 8},
		{VCPUEvents{}, "NMI", 12},
		{VCPUEvents{}, "SIPIVector", 16},
		{VCPUEvents{}, "Flags", 20},
		{VCPUEvents{}, "SMI", 24},
		{VCPUEvents{}, "TripleFault", 28},
		{VCPUEvents{}, "ExceptionHasPayload", 55},
		{VCPUEvents{}, "ExceptionPayload", 56},
		{XCRs{}, "XCRs", 8},
		{DebugRegs{}, "DR7", 40},
		{IRQChip{}, "Chip", 8},
		{PITChannelState{}, "Gate", 15},
		{PITChannelState{}, "CountLoadTime", 16},
		{PITState2{}, "Flags", 72},
		{ClockData{}, "Realtime", 16},
		{ClockData{}, "HostTSC", 24},
	}
	for _, tt := range offsets {
		f, ok := reflect.TypeOf(tt.v).FieldByName(tt.field)
		if !ok {
			t.Fatalf("%T has no field %s", tt.v, tt.field)
		}
		if f.Offset != tt.want {
			t.Errorf("%T.%s at %d, kernel has it at %d", tt.v, tt.field, f.Offset, tt.want)
		}
	}
}

// The values <linux/kvm.h>'s macros produce on x86-64.
func TestStateIoctlNumbers(t *testing.T) {
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, 0xC004AE02},
		{"KVM_SET_CLOCK", kvmSetClock, 0x4030AE7B},
		{"KVM_GET_CLOCK", kvmGetClock, 0x8030AE7C},
		{"KVM_GET_IRQCHIP", kvmGetIRQChip, 0xC208AE62},
		{"KVM_SET_IRQCHIP", kvmSetIRQChip, 0x8208AE63},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xC008AE88},
		{"KVM_GET_FPU", kvmGetFPU, 0x81A0AE8C},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004AE98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004AE99},
		{"KVM_GET_PIT2", kvmGetPIT2, 0x8070AE9F},
		{"KVM_SET_PIT2", kvmSetPIT2, 0x4070AEA0},
		{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, 0x8040AE9F},
		{"KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, 0x4040AEA0},
		{"KVM_GET_DEBUGREGS", kvmGetDebugRegs, 0x8080AEA1},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, 0x4080AEA2},
		{"KVM_SET_TSC_KHZ", kvmSetTSCKHz, 0xAEA2},
		{"KVM_GET_TSC_KHZ", kvmGetTSCKHz, 0xAEA3},
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000AEA4},
		{"KVM_SET_XSAVE", kvmSetXSave, 0x5000AEA5},
		{"KVM_GET_XCRS", kvmGetXCRs, 0x8188AEA6},
		{"KVM_SET_XCRS", kvmSetXCRs, 0x4188AEA7},
		{"KVM_KVMCLOCK_CTRL", kvmKVMClockCtrl, 0xAEAD},
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

func TestMSRsRoundTrip(t *testing.T) {
	in := []MSREntry{{Index: 0x10, Data: 0x1234}, {Index: 0xc0000080, Data: 0xd01}, {Index: 0x4b564d01, Data: 1<<63 | 7}}
	if got := decodeMSRs(encodeMSRs(in), len(in)); !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip: %+v, want %+v", got, in)
	}
}
