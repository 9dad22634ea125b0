package kvm

import (
	"bytes"
	"strings"
	"testing"
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// The bytes struct kvm_irq_routing and its entries hold on x86-64, by hand.
func TestEncodeIRQRouting(t *testing.T) {
	ioapicPin4 := cat([]byte{
		4, 0, 0, 0, // gsi
		1, 0, 0, 0, // type KVM_IRQ_ROUTING_IRQCHIP
		0, 0, 0, 0, // flags
		0, 0, 0, 0, // pad
		2, 0, 0, 0, // u.irqchip.irqchip KVM_IRQCHIP_IOAPIC
		4, 0, 0, 0, // u.irqchip.pin
	}, make([]byte, 24))
	slavePin1 := cat([]byte{
		9, 0, 0, 0, // gsi
		1, 0, 0, 0, // type KVM_IRQ_ROUTING_IRQCHIP
		0, 0, 0, 0, 0, 0, 0, 0,
		1, 0, 0, 0, // u.irqchip.irqchip KVM_IRQCHIP_PIC_SLAVE
		1, 0, 0, 0, // u.irqchip.pin
	}, make([]byte, 24))
	msi := cat([]byte{
		0x20, 0, 0, 0, // gsi 32
		2, 0, 0, 0, // type KVM_IRQ_ROUTING_MSI
		0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x10, 0xe0, 0xfe, // u.msi.address_lo 0xfee01000
		0x00, 0x01, 0x00, 0x00, // u.msi.address_hi 0x100
		0x41, 0x40, 0x00, 0x00, // u.msi.data 0x4041
		0, 0, 0, 0, // u.msi.pad
	}, make([]byte, 16))

	tests := []struct {
		name   string
		routes []IRQRoute
		want   []byte
	}{
		{"empty", nil, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{"irqchip", []IRQRoute{{GSI: 4, Kind: RouteIRQChip, Chip: IRQChipIOAPIC, Pin: 4}},
			cat([]byte{1, 0, 0, 0, 0, 0, 0, 0}, ioapicPin4)},
		{"msi", []IRQRoute{{GSI: 32, Kind: RouteMSI, MSIAddr: 0x100_fee01000, MSIData: 0x4041}},
			cat([]byte{1, 0, 0, 0, 0, 0, 0, 0}, msi)},
		{"three", []IRQRoute{
			{GSI: 4, Kind: RouteIRQChip, Chip: IRQChipIOAPIC, Pin: 4},
			{GSI: 9, Kind: RouteIRQChip, Chip: IRQChipPICSlave, Pin: 1},
			{GSI: 32, Kind: RouteMSI, MSIAddr: 0x100_fee01000, MSIData: 0x4041},
		}, cat([]byte{3, 0, 0, 0, 0, 0, 0, 0}, ioapicPin4, slavePin1, msi)},
	}
	for _, tt := range tests {
		got, err := encodeIRQRouting(tt.routes)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s:\n got % x\nwant % x", tt.name, got, tt.want)
		}
	}
}

func TestEncodeIRQRoutingRefuses(t *testing.T) {
	tests := []struct {
		name   string
		routes []IRQRoute
		want   string
	}{
		{"too many", make([]IRQRoute, MaxIRQRoutes+1), "4097 routes"},
		{"gsi past table", []IRQRoute{{GSI: MaxIRQRoutes, Kind: RouteMSI}}, "GSI 4096"},
		{"no kind", []IRQRoute{{GSI: 5}}, "unknown kind 0"},
	}
	for _, tt := range tests {
		_, err := encodeIRQRouting(tt.routes)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	full := make([]IRQRoute, MaxIRQRoutes)
	for i := range full {
		full[i] = IRQRoute{GSI: uint32(i), Kind: RouteMSI}
	}
	if _, err := encodeIRQRouting(full); err != nil {
		t.Errorf("%d routes: %v", MaxIRQRoutes, err)
	}
}

// DefaultIRQRoutes against kvm_setup_default_irq_routing's table.
func TestDefaultIRQRoutes(t *testing.T) {
	routes := DefaultIRQRoutes()
	if len(routes) != 16*2+8 {
		t.Fatalf("%d routes, kernel installs 40", len(routes))
	}
	ioapic := map[uint32]int{}
	pic := map[uint32]int{}
	for _, r := range routes {
		if r.Kind != RouteIRQChip {
			t.Fatalf("%+v: not an irqchip route", r)
		}
		switch r.Chip {
		case IRQChipIOAPIC:
			if r.Pin != r.GSI {
				t.Errorf("GSI %d reaches IOAPIC pin %d", r.GSI, r.Pin)
			}
			ioapic[r.GSI]++
		case IRQChipPICMaster, IRQChipPICSlave:
			wantChip := uint32(IRQChipPICMaster)
			if r.GSI >= 8 {
				wantChip = IRQChipPICSlave
			}
			if r.GSI >= 16 || r.Chip != wantChip || r.Pin != r.GSI%8 {
				t.Errorf("GSI %d reaches PIC chip %d pin %d", r.GSI, r.Chip, r.Pin)
			}
			pic[r.GSI]++
		default:
			t.Errorf("GSI %d: chip %d", r.GSI, r.Chip)
		}
	}
	for gsi := uint32(0); gsi < 24; gsi++ {
		if ioapic[gsi] != 1 {
			t.Errorf("GSI %d: %d IOAPIC routes, want 1", gsi, ioapic[gsi])
		}
		want := 0
		if gsi < 16 {
			want = 1
		}
		if pic[gsi] != want {
			t.Errorf("GSI %d: %d PIC routes, want %d", gsi, pic[gsi], want)
		}
	}
	if _, err := encodeIRQRouting(routes); err != nil {
		t.Fatal(err)
	}
}
