package kvm

import (
	"encoding/binary"
	"fmt"
)

// IRQRoute is one entry of the VM's GSI routing table: raising GSI
// reaches a pin of an in-kernel irqchip (RouteIRQChip) or sends an MSI
// (RouteMSI). Several routes may share a GSI; KVM fires them all.
type IRQRoute struct {
	GSI  uint32
	Kind RouteKind
	// For RouteIRQChip: IRQChipPICMaster, IRQChipPICSlave or
	// IRQChipIOAPIC, and the pin on that chip.
	Chip uint32
	Pin  uint32
	// For RouteMSI: the address and data a device would write.
	MSIAddr uint64
	MSIData uint32
}

// DefaultIRQRoutes is the table KVM installs itself when the in-kernel
// irqchip is created on x86 (kvm_setup_default_irq_routing,
// arch/x86/kvm/irq_comm.c): GSI 0-15 reach the IOAPIC pin and the 8259
// pin of that number, GSI 16-23 the IOAPIC pin only. KVM_SET_GSI_ROUTING
// replaces the whole table, so routes a VMM adds (MSIs) must come on top
// of these, or every legacy interrupt stops: serial, RTC, and the IOAPIC
// pins 16-23 virtio-mmio uses.
func DefaultIRQRoutes() []IRQRoute {
	routes := make([]IRQRoute, 0, 16*2+8)
	for gsi := uint32(0); gsi < 24; gsi++ {
		routes = append(routes, IRQRoute{GSI: gsi, Kind: RouteIRQChip, Chip: IRQChipIOAPIC, Pin: gsi})
		if gsi < 16 {
			chip := uint32(IRQChipPICMaster)
			if gsi >= 8 {
				chip = IRQChipPICSlave
			}
			routes = append(routes, IRQRoute{GSI: gsi, Kind: RouteIRQChip, Chip: chip, Pin: gsi % 8})
		}
	}
	return routes
}

// SetGSIRouting replaces the VM's GSI routing table with routes
// (KVM_SET_GSI_ROUTING); start from DefaultIRQRoutes to keep the legacy
// interrupts. x86 refuses it without the in-kernel irqchip, so call
// CreateIRQChip first.
func (vm *VM) SetGSIRouting(routes []IRQRoute) error {
	buf, err := encodeIRQRouting(routes)
	if err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING: %w", err)
	}
	if _, err := ioctlBuf(vm.fd(), kvmSetGSIRouting, buf); err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING (%d routes): %w", len(routes), err)
	}
	return nil
}

// encodeIRQRouting lays routes out as struct kvm_irq_routing followed by
// its entries. It refuses, naming the route, what the kernel would answer
// with a bare EINVAL: too many routes, a GSI past the table, an unknown
// kind.
func encodeIRQRouting(routes []IRQRoute) ([]byte, error) {
	if len(routes) > MaxIRQRoutes {
		return nil, fmt.Errorf("%d routes, KVM takes at most %d", len(routes), MaxIRQRoutes)
	}
	le := binary.LittleEndian
	buf := make([]byte, sizeofIRQRoutingHeader+len(routes)*sizeofIRQRoutingEntry)
	le.PutUint32(buf, uint32(len(routes))) // nr; flags must stay 0
	for i, r := range routes {
		if r.GSI >= MaxIRQRoutes {
			return nil, fmt.Errorf("route %d: GSI %d, KVM takes GSIs below %d", i, r.GSI, MaxIRQRoutes)
		}
		e := buf[sizeofIRQRoutingHeader+i*sizeofIRQRoutingEntry:]
		le.PutUint32(e[0:], r.GSI)
		le.PutUint32(e[4:], uint32(r.Kind)) // then flags and pad, 0
		u := e[16:]
		switch r.Kind {
		case RouteIRQChip:
			le.PutUint32(u[0:], r.Chip)
			le.PutUint32(u[4:], r.Pin)
		case RouteMSI:
			le.PutUint32(u[0:], uint32(r.MSIAddr))
			le.PutUint32(u[4:], uint32(r.MSIAddr>>32))
			le.PutUint32(u[8:], r.MSIData)
		default:
			return nil, fmt.Errorf("route %d (GSI %d): unknown kind %d", i, r.GSI, r.Kind)
		}
	}
	return buf, nil
}
