package machine

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/pci"
	"github.com/vmm-dev/vmm/virtio"
)

// pciBus is bus 0: the host bridge on the configuration ports, the root
// bridge's memory window on the MMIO bus, and the MSI routes of every
// function's vectors (VirtioPCI's devices; none with VirtioMMIO).
type pciBus struct {
	bridge *pci.HostBridge
	window *pci.Window
	routes *msiRoutes
}

// msiGSI is the GSI of MSI-X vector v of virtio device i.
func msiGSI(i, v int) uint32 { return msiGSIBase + uint32(i*virtio.PCIMSIXVectors+v) }

// addHostBridge puts bus 0's host bridge on the configuration ports and
// the root bridge's memory window on the MMIO bus. Every machine has
// them, with virtio-pci functions behind the bridge or none: Linux on a
// PC decides whether it can reach configuration space at all by probing
// the ports for a host bridge (arch/x86/pci/direct.c, pci_sanity_check,
// which accepts any machine whose bus 0 has one), and without one prints
// "PCI: Fatal: No config space access function found" at every boot,
// quiet or not, into every `vmm run` job's stderr. A bridge with nothing
// behind it is not declared in ACPI (no PNP0A03), so the guest scans no
// bus for it: what it costs is the probe, which the kernel made anyway.
func (m *Machine) addHostBridge(vm irqWiring) error {
	m.pci = &pciBus{
		bridge: pci.NewHostBridge(),
		window: pci.NewWindow(pciWindowBase, pciWindowSize),
		routes: &msiRoutes{vm: vm, msi: map[uint32]kvm.IRQRoute{}},
	}
	if err := m.pio.Insert("pci-config", pciConfigPort, pci.ConfigPorts, m.pci.bridge); err != nil {
		return err
	}
	return m.mmio.Insert("pci-window", pciWindowBase, pciWindowSize, m.pci.window)
}

// addVirtioPCI makes each virtio device a virtio-pci function on bus 0,
// device pciFirstDevice+i, its BAR at its own slice of the window. Each
// MSI-X vector is an irqfd on its own GSI, routed to whatever message the
// driver programs; each queue's notification slot gets an ioeventfd once
// the BAR decodes (pciFunction.BARChanged), so neither an interrupt nor a
// kick passes through vmm's vCPU loop.
//
// Bus Master Enable is kept as the guest writes it but not enforced: a
// device serves its queues until the driver resets it, which Linux's
// virtio_pci does on remove and shutdown (kexec included).
func (m *Machine) addVirtioPCI(vm irqWiring) error {
	for i, d := range m.virtio {
		vectors := make([]virtio.Interrupt, virtio.PCIMSIXVectors)
		for v := range vectors {
			e, err := newEventFD()
			if err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
			d.vectors = append(d.vectors, e)
			vectors[v] = e
			if err := vm.IRQFD(e.fd, msiGSI(i, v)); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
		}
		notifiers, err := d.newKicks()
		if err != nil {
			return err
		}
		logf := m.prefixLogf(d.name)
		router := msiRouter{routes: m.pci.routes, gsi: msiGSI(i, 0)}
		if d.pci, err = virtio.NewPCI(d.dev, m.mem, vectors, router, notifiers, logf); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		f := &pciFunction{vm: vm, window: m.pci.window, d: d, key: i, logf: logf}
		d.hooks = f
		bar := uint32(pciWindowBase + uint64(i)*virtio.PCIBARSize)
		if d.fn, err = pci.NewEndpoint(d.pci.Header(), [6]uint32{virtio.PCIBARSize}, [6]uint32{bar}, d.pci.Capabilities(), f); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := m.pci.bridge.Add(pciFirstDevice+i, d.fn); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		// Memory decoding on, as firmware leaves a device whose BAR it
		// assigned: the guest finds it working at its address and keeps
		// it there (Linux claims firmware assignments inside the window).
		d.fn.SetMemoryDecoding(true)
	}
	return nil
}

// pciFunction is the machine's side of one virtio-pci function: it moves
// the BAR's window mapping and the queues' ioeventfds wherever the guest
// puts the BAR, and passes MSI-X enable and mask to the transport.
type pciFunction struct {
	vm     irqWiring
	window *pci.Window
	d      *virtioDev
	key    int
	logf   func(string, ...any)

	mu sync.Mutex // serializes BAR moves from several vCPUs
	// at is where each queue's ioeventfd is registered, 0 for nowhere;
	// one KVM could not remove stays listed, and its queue is not bound
	// again, so no two ioeventfds of one queue coexist.
	at []uint64
}

// BARChanged implements pci.Hooks. A BAR the window refuses (outside it,
// or over another function's) decodes nothing, as on a bus where no one
// claims the cycle.
func (f *pciFunction) BARChanged(i int, addr uint32, mapped bool) {
	if i != 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unbindKicks()
	if !mapped || !f.window.Map(f.key, uint64(addr), virtio.PCIBARSize, f.d.pci) {
		f.window.Unmap(f.key)
		return
	}
	f.bindKicks(uint64(addr))
}

// bindKicks puts each queue's ioeventfd on its notification slot at BAR
// address base: Linux notifies with a 16-bit write of the queue index
// (vp_notify), and each queue has its own slot, so no datamatch. A queue
// whose ioeventfd KVM refuses still works, through the transport's Write.
func (f *pciFunction) bindKicks(base uint64) {
	if f.at == nil {
		f.at = make([]uint64, len(f.d.kicks))
	}
	for q, k := range f.d.kicks {
		if f.at[q] != 0 {
			continue
		}
		addr := base + virtio.PCINotifyAddr(q)
		if err := f.vm.IOEventFD(k.fd, addr, 2, 0, 0); err != nil {
			f.logf("queue %d notifications will exit to vmm: %v", q, err)
			continue
		}
		f.at[q] = addr
	}
}

func (f *pciFunction) unbindKicks() {
	for q, addr := range f.at {
		if addr == 0 {
			continue
		}
		if err := f.vm.IOEventFD(f.d.kicks[q].fd, addr, 2, 0, kvm.IOEventFDDeassign); err != nil {
			f.logf("queue %d: removing its ioeventfd at %#x: %v", q, addr, err)
			continue
		}
		f.at[q] = 0
	}
}

// CapabilityWritten implements pci.Hooks: of the capabilities only
// MSI-X's Message Control is writable.
func (f *pciFunction) CapabilityWritten(k int, body []byte) {
	if k == virtio.PCIMSIXCapability && len(body) >= 2 {
		f.d.pci.WriteMSIXControl(binary.LittleEndian.Uint16(body))
	}
}

// msiRoutes is the VM's GSI routing table: KVM's default routes for the
// PIC and IOAPIC plus one MSI route per programmed vector.
// KVM_SET_GSI_ROUTING replaces the whole table, so every change sends
// all of it. Changes come from MSI-X table writes, a handful per device
// per boot, never from an interrupt.
type msiRoutes struct {
	vm  irqWiring
	mu  sync.Mutex
	msi map[uint32]kvm.IRQRoute
}

func (r *msiRoutes) route(gsi uint32, addr uint64, data uint32) (err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.msi[gsi]
	defer func() {
		if err == nil {
			return
		}
		// A route KVM refused must not ride along with every later
		// change: the table goes back to what KVM holds.
		if had {
			r.msi[gsi] = old
		} else {
			delete(r.msi, gsi)
		}
	}()
	r.msi[gsi] = kvm.IRQRoute{GSI: gsi, Kind: kvm.RouteMSI, MSIAddr: addr, MSIData: data}
	gsis := make([]uint32, 0, len(r.msi))
	for g := range r.msi {
		gsis = append(gsis, g)
	}
	sort.Slice(gsis, func(a, b int) bool { return gsis[a] < gsis[b] })
	all := kvm.DefaultIRQRoutes()
	for _, g := range gsis {
		all = append(all, r.msi[g])
	}
	return r.vm.SetGSIRouting(all)
}

// msiRouter is one function's virtio.MSIRouter: its vectors' GSIs start
// at gsi.
type msiRouter struct {
	routes *msiRoutes
	gsi    uint32
}

func (r msiRouter) RouteMSI(v int, addr uint64, data uint32) error {
	return r.routes.route(r.gsi+uint32(v), addr, data)
}

// PCIFunctionState is one virtio-pci function in a snapshot: its
// configuration space and its transport.
type PCIFunctionState struct {
	Function  pci.EndpointState
	Transport virtio.PCIState
}
