package machine

import (
	"fmt"
	"sync"

	"github.com/vmm-dev/vmm/kvm"
)

// writeRing is what the run loop asks of KVM's coalesced ring
// (kvm.CoalescedRing): guest writes KVM recorded instead of exiting, to
// be applied before the next exit is served.
type writeRing interface {
	Pending() bool
	Drain(f func(addr uint64, data []byte, pio bool)) error
}

var _ writeRing = (*kvm.CoalescedRing)(nil)

// coalescing is a machine's coalesced ring, when KVM has one.
type coalescing struct {
	ring writeRing // nil: every write exits
	// mu makes one vCPU at a time drain: entries must be applied in
	// the order the guest wrote them. It is taken only when the ring
	// holds entries, after an index write, not on every exit.
	mu sync.Mutex
	// apply is Machine.applyCoalesced, bound once so that draining
	// allocates nothing.
	apply func(addr uint64, data []byte, pio bool)
}

// coalescedPort is an index register whose writes KVM may record
// instead of exiting: its value matters only to the next access to the
// matching data port, which exits, and the ring is drained first. The
// guest serialises each index-then-data pair under a lock (Linux's
// pci_config_lock, rtc_lock), so which vCPU drains does not matter. Each
// such write exits to vmm otherwise: in one nested boot of the cloud
// kernel, 122 CONFIG_ADDRESS and 67 RTC index writes of 557 port exits.
// QEMU coalesces the same two.
type coalescedPort struct {
	port uint64
	size uint32
}

// coalescedPorts are PCI's CONFIG_ADDRESS (PCI Local Bus 3.0 §3.2.2.3.2,
// all four bytes) and the MC146818's index register (not its data port).
func coalescedPorts() []coalescedPort {
	return []coalescedPort{{pciConfigPort, 4}, {rtcPort, 1}}
}

// coalescePorts registers coalescedPorts with KVM and finds the ring,
// when KVM has both coalesced port writes (KVM_CAP_COALESCED_PIO, Linux
// 4.19) and the ring page in kvm_run. Without them every write exits, as
// before: the ring is an optimisation only.
func (m *Machine) coalescePorts() error {
	off, err := m.sys.CheckExtension(kvm.CapCoalescedMMIO)
	if err != nil || off <= 0 {
		return nil
	}
	if n, err := m.sys.CheckExtension(kvm.CapCoalescedPIO); err != nil || n <= 0 {
		return nil
	}
	kv, ok := m.vcpus[0].(*kvmVCPU)
	if !ok {
		return nil
	}
	ring, err := kv.c.CoalescedRing(off)
	if err != nil {
		return err
	}
	for _, p := range coalescedPorts() {
		if err := m.vm.RegisterCoalescedPIO(p.port, p.size); err != nil {
			return err
		}
	}
	m.coalesced.ring = ring
	m.coalesced.apply = m.applyCoalesced
	return nil
}

// drainCoalesced applies the writes KVM coalesced since the last drain.
// Every vCPU calls it before serving an exit; it costs two loads when
// the ring is empty.
func (m *Machine) drainCoalesced() error {
	c := &m.coalesced
	if c.ring == nil || !c.ring.Pending() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ring.Drain(c.apply); err != nil {
		return fmt.Errorf("KVM %w", err)
	}
	return nil
}

// applyCoalesced is one coalesced write, served as its exit would have
// been.
func (m *Machine) applyCoalesced(addr uint64, data []byte, pio bool) {
	if pio {
		m.pio.Write(addr, data)
	} else {
		m.mmio.Write(addr, data)
	}
}
