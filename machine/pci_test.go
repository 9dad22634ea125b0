package machine

import (
	"encoding/binary"
	"testing"

	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/virtio"
)

// configAddr is a CONFIG_ADDRESS value for bus 0, device dev, register
// reg (PCI 3.0 §3.2.2.3.2).
func configAddr(dev int, reg uint32) []byte {
	return binary.LittleEndian.AppendUint32(nil, 1<<31|uint32(dev)<<11|reg)
}

// TestVirtioWiringPCI: the default transport puts each disk on bus 0 as
// a virtio-pci function behind the host bridge, with its MSI-X vectors'
// irqfds on their own GSIs and its queue's ioeventfd on the notification
// slot of the BAR the guest finds; a BAR the guest moves takes its
// ioeventfd along, and an MSI-X entry the guest programs becomes an MSI
// route sent with KVM's default ones.
func TestVirtioWiringPCI(t *testing.T) {
	cfg := Config{Disks: []Disk{{Path: newDisk(t)}, {Path: newDisk(t), ReadOnly: true}}}
	bar1 := uint64(pciWindowBase + virtio.PCIBARSize)
	moved := uint32(pciWindowBase + 0x100000)
	readID, id := ioIn(pciConfigPort+4, 4, 1)
	readMoved, magic := mmioRead(uint64(moved)+0x12, 2) // num_queues in the moved BAR
	readOld, old := mmioRead(bar1+0x12, 2)
	v := newFakeVCPU(0,
		// The host bridge answers at device 0, disk 1 at device 2.
		ioOut(pciConfigPort, 4, configAddr(2, 0)...), readID,
		// Disk 1's BAR moved: decoding off, a new address, on again.
		ioOut(pciConfigPort, 4, configAddr(2, 0x04)...), ioOut(pciConfigPort+4, 2, 0, 0),
		ioOut(pciConfigPort, 4, configAddr(2, 0x10)...), ioOut(pciConfigPort+4, 4, binary.LittleEndian.AppendUint32(nil, moved)...),
		ioOut(pciConfigPort, 4, configAddr(2, 0x04)...), ioOut(pciConfigPort+4, 2, 2, 0),
		readMoved, readOld,
		// Disk 0's vector 1 programmed: address, data.
		mmioWrite(pciWindowBase+0x4010, 0x00, 0x10, 0xe0, 0xfe), mmioWrite(pciWindowBase+0x4018, 0x31, 0, 0, 0),
		exitWith(0))
	m, w := newFakeMachine(t, cfg, v)
	for i := range cfg.Disks {
		for vec := 0; vec < virtio.PCIMSIXVectors; vec++ {
			if _, ok := w.irqfds[msiGSI(i, vec)]; !ok {
				t.Errorf("disk %d: no irqfd for vector %d on GSI %d", i, vec, msiGSI(i, vec))
			}
		}
	}
	if len(w.ioevents) != 2 {
		t.Fatalf("ioeventfds %+v, want one per disk", w.ioevents)
	}
	for i, e := range w.ioevents {
		if want := pciWindowBase + uint64(i)*virtio.PCIBARSize + virtio.PCINotifyOff; e.addr != want || e.n != 2 || e.flags != 0 {
			t.Errorf("ioeventfd %d: %+v, want a 2-byte one at %#x", i, e, want)
		}
	}
	if err := runFake(t, m); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkContract(t, v)
	if got := binary.LittleEndian.Uint32(id); got != 0x1042<<16|virtio.PCIVendorID {
		t.Errorf("device 2 reads ID %#x, want virtio-blk's 0x1042 and vendor %#x", got, virtio.PCIVendorID)
	}
	if got := binary.LittleEndian.Uint16(magic); got != 1 {
		t.Errorf("num_queues at the moved BAR reads %d, want 1", got)
	}
	if got := binary.LittleEndian.Uint16(old); got != 0xffff {
		t.Errorf("the old BAR address still decodes (%#x)", got)
	}
	// Decoding off removed disk 1's ioeventfd; on again at the new
	// address added it there.
	ev := w.ioevents[2:]
	if len(ev) != 2 || ev[0].flags != kvm.IOEventFDDeassign || ev[0].addr != bar1+virtio.PCINotifyOff ||
		ev[1].flags != 0 || ev[1].addr != uint64(moved)+virtio.PCINotifyOff {
		t.Errorf("ioeventfds after the move %+v, want disk 1's removed at its old BAR and added at %#x", ev, moved)
	}
	defaults := kvm.DefaultIRQRoutes()
	if len(w.routes) != len(defaults)+1 {
		t.Fatalf("routes %+v, want KVM's %d defaults and one MSI route", w.routes, len(defaults))
	}
	for i, r := range defaults {
		if w.routes[i] != r {
			t.Fatalf("route %d is %+v, want the default %+v", i, w.routes[i], r)
		}
	}
	if got, want := w.routes[len(defaults)], (kvm.IRQRoute{GSI: msiGSI(0, 1), Kind: kvm.RouteMSI, MSIAddr: 0xfee01000, MSIData: 0x31}); got != want {
		t.Errorf("MSI route %+v, want %+v", got, want)
	}
}

// TestHostBridgeWithoutFunctions: with no virtio-pci function (no
// device, or the mmio transport) the host bridge still answers on the
// configuration ports, as Linux's probe for them needs, and nothing
// else is on bus 0.
func TestHostBridgeWithoutFunctions(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no device", Config{}},
		{"mmio transport", Config{Transport: VirtioMMIO, Disks: []Disk{{Path: newDisk(t)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			readBridge, bridge := ioIn(pciConfigPort+4, 4, 1)
			readDev1, dev1 := ioIn(pciConfigPort+4, 4, 1)
			v := newFakeVCPU(0, ioOut(pciConfigPort, 4, configAddr(0, 0)...), readBridge,
				ioOut(pciConfigPort, 4, configAddr(pciFirstDevice, 0)...), readDev1, exitWith(0))
			m, _ := newFakeMachine(t, tc.cfg, v)
			if err := runFake(t, m); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := binary.LittleEndian.Uint32(bridge); got != 0x12378086 {
				t.Errorf("00.0 reads vendor/device %#x, want the host bridge's 0x12378086", got)
			}
			if got := binary.LittleEndian.Uint32(dev1); got != 0xffffffff {
				t.Errorf("device %d reads %#x, want nothing there (0xffffffff)", pciFirstDevice, got)
			}
		})
	}
}

// TestRestoreMMIOWithBridge: a machine on the mmio transport has the
// host bridge but no functions, and its virtio state saves and restores
// (restoreVirtio once took the bridge for functions and dereferenced
// their nil configuration spaces), latch included.
func TestRestoreMMIOWithBridge(t *testing.T) {
	cfg := Config{Transport: VirtioMMIO, Disks: []Disk{{Path: newDisk(t)}}}
	m1, _ := newFakeMachine(t, cfg)
	m1.pci.bridge.SetConfigAddress(0x80000004)
	var st State
	m1.saveVirtio(&st)
	m1.closeVirtio() // the disk's lock
	if len(st.Virtio) != 1 || len(st.VirtioPCI) != 0 {
		t.Fatalf("saved %d mmio and %d PCI devices, want 1 and 0", len(st.Virtio), len(st.VirtioPCI))
	}
	m2, _ := newFakeMachine(t, cfg)
	if err := m2.restoreVirtio(&st); err != nil {
		t.Fatalf("restoreVirtio: %v", err)
	}
	if got := m2.pci.bridge.ConfigAddress(); got != 0x80000004 {
		t.Errorf("host bridge latch %#x after restore, want 0x80000004", got)
	}
}

// TestRestoreSwappedBARs: a guest that swapped its functions' BARs gets
// them back swapped. Each function restored at its turn would find the
// other one still at the build-time address it wants.
func TestRestoreSwappedBARs(t *testing.T) {
	cfg := Config{Disks: []Disk{{Path: newDisk(t)}, {Path: newDisk(t), ReadOnly: true}}}
	m1, _ := newFakeMachine(t, cfg)
	bar := func(i int) uint32 { return uint32(pciWindowBase + uint64(i)*virtio.PCIBARSize) }
	for _, d := range m1.virtio {
		d.fn.SetMemoryDecoding(false)
	}
	m1.virtio[0].fn.WriteConfig(0x10, binary.LittleEndian.AppendUint32(nil, bar(1)))
	m1.virtio[1].fn.WriteConfig(0x10, binary.LittleEndian.AppendUint32(nil, bar(0)))
	for _, d := range m1.virtio {
		d.fn.SetMemoryDecoding(true)
	}
	m1.pci.bridge.SetConfigAddress(0x80001010)
	var st State
	m1.saveVirtio(&st)
	m1.closeVirtio() // the disks' locks

	m2, _ := newFakeMachine(t, cfg)
	if err := m2.restoreVirtio(&st); err != nil {
		t.Fatalf("restoreVirtio: %v", err)
	}
	for i, other := range []int{1, 0} {
		d := m2.virtio[i]
		if addr, mapped := d.fn.BAR(0); addr != bar(other) || !mapped {
			t.Errorf("function %d: BAR at %#x (mapped %v), want %#x", i, addr, mapped, bar(other))
		}
		if want := uint64(bar(other)) + virtio.PCINotifyOff; len(d.hooks.at) != 1 || d.hooks.at[0] != want {
			t.Errorf("function %d: ioeventfds at %#x, want its queue's at %#x", i, d.hooks.at, want)
		}
	}
	// The window routes each BAR to its own function: the read-only
	// disk offers VIRTIO_BLK_F_RO (bit 5), the other does not.
	for i, other := range []int{1, 0} {
		var b [4]byte
		m2.mmio.Read(uint64(bar(other)), b[:]) // device_feature_select is 0
		m2.mmio.Read(uint64(bar(other))+4, b[:])
		if ro := binary.LittleEndian.Uint32(b[:])&(1<<5) != 0; ro != (i == 1) {
			t.Errorf("BAR %#x answers as disk %d (read-only %v), want disk %d", bar(other), 1-i, ro, i)
		}
	}
	if got := m2.pci.bridge.ConfigAddress(); got != 0x80001010 {
		t.Errorf("CONFIG_ADDRESS %#x after restore, want the saved 0x80001010", got)
	}
}
