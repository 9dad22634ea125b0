package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// ConfigPorts is the size of the I/O range the HostBridge answers: the
// CONFIG_ADDRESS and CONFIG_DATA dwords of configuration mechanism #1,
// at 0xCF8 on a PC (PCI 3.0 §3.2.2.3.2).
const ConfigPorts = 8

// Offsets within ConfigPorts (PCI 3.0 §3.2.2.3.2).
const (
	configAddress = 0 // CONFIG_ADDRESS, 0xCF8
	configData    = 4 // CONFIG_DATA, 0xCFC
)

// CONFIG_ADDRESS fields (PCI 3.0 §3.2.2.3.2 Figure 3-2).
const (
	addrEnable   = 1 << 31 // enable bit: CONFIG_DATA accesses become config cycles
	addrBusShift = 16      // bits 23:16 bus number
	addrDevShift = 11      // bits 15:11 device number
	addrFnShift  = 8       // bits 10:8 function number
	addrRegMask  = 0xfc    // bits 7:2 register (dword) number
	// addrWritable is what the register latches: bits 30:24 are reserved
	// and bits 1:0 read-only, both reading 0.
	addrWritable = addrEnable | 0xff<<addrBusShift | 0x1f<<addrDevShift | 7<<addrFnShift | addrRegMask
)

// maxDevices is the number of device numbers on a bus (5 bits of
// CONFIG_ADDRESS).
const maxDevices = 32

// The host bridge's own identity. It is Intel's 82441FX PMC (0x8086:0x1237,
// revision 02h), the i440FX host bridge QEMU presents: every x86 guest
// kernel has been booted against it countless times, Linux's
// pci_sanity_check accepts it by vendor as well as by class, and the only
// Linux quirks keyed to it (quirk_passive_release, which looks for a PIIX3
// that is not there, and quirk_natoma, which flags PCI-to-PCI DMA limits
// for a few capture drivers) do nothing here. A made-up ID would gain
// nothing and risk matching some driver's table.
const (
	hostBridgeVendorID = 0x8086 // PCI_VENDOR_ID_INTEL
	hostBridgeDeviceID = 0x1237 // PCI_DEVICE_ID_INTEL_82441
	hostBridgeRevision = 0x02
)

// HostBridge is configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) for bus 0:
// a bus.Device for the ConfigPorts I/O ports holding CONFIG_ADDRESS and
// CONFIG_DATA. Device 0 is the host bridge's own header (Linux's
// pci_sanity_check needs a class 0600h device on bus 0 when there is no
// DMI); endpoints are added at devices 1-31, function 0 only. There are no
// PCI-to-PCI bridges, so nothing answers on other buses.
//
// One mutex guards CONFIG_ADDRESS together with the config access it
// directs, so a vCPU's data access uses the address latched when it began
// and config writes (and the hooks they fire) happen one at a time. That
// costs nothing: Linux serializes config accesses with pci_config_lock
// anyway, and they are not a hot path.
type HostBridge struct {
	mu    sync.Mutex
	addr  uint32
	funcs [maxDevices]Function
}

// NewHostBridge returns a bridge with only its own header at device 0.
func NewHostBridge() *HostBridge {
	hdr := Header{VendorID: hostBridgeVendorID, DeviceID: hostBridgeDeviceID, Class: ClassHostBridge, Revision: hostBridgeRevision}
	self, err := NewEndpoint(hdr, [NumBARs]uint32{}, [NumBARs]uint32{}, nil, nil)
	if err != nil {
		panic("pci: host bridge header: " + err.Error()) // a constant header; cannot fail
	}
	h := &HostBridge{}
	h.funcs[0] = self
	return h
}

// Add puts f at device dev (1-31), function 0, of bus 0. It is called while
// building the machine, before any vCPU runs.
func (h *HostBridge) Add(dev int, f Function) error {
	if dev < 1 || dev >= maxDevices {
		return fmt.Errorf("pci: device number %d out of range 1-%d", dev, maxDevices-1)
	}
	if f == nil {
		return fmt.Errorf("pci: device %d: nil function", dev)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.funcs[dev] != nil {
		return fmt.Errorf("pci: device %d is taken", dev)
	}
	h.funcs[dev] = f
	return nil
}

// dataRegister reports whether an access of n bytes at port offset off is
// a CONFIG_DATA access, and which byte of the dword it starts at. The x86
// instructions give 1, 2 or 4 bytes at 0xCFC+k; an access that is
// misaligned for its width would cross the dword (or the ports), so it is
// no config cycle.
func dataRegister(off uint64, n int) (uint16, bool) {
	if off < configData || off >= ConfigPorts {
		return 0, false
	}
	k := off - configData
	if (n != 1 && n != 2 && n != 4) || k%uint64(n) != 0 {
		return 0, false
	}
	return uint16(k), true
}

// target returns the function CONFIG_ADDRESS selects and the register, or
// nil when the cycle reaches nobody: enable clear, another bus (a type-1
// cycle no bridge forwards), a function other than 0, or no device. h.mu
// is held.
func (h *HostBridge) target(k uint16) (Function, uint16) {
	a := h.addr
	if a&addrEnable == 0 || (a>>addrBusShift)&0xff != 0 || (a>>addrFnShift)&7 != 0 {
		return nil, 0
	}
	return h.funcs[(a>>addrDevShift)&0x1f], uint16(a&addrRegMask) + k
}

// Read answers a port read. Only a dword read at CONFIG_ADDRESS returns
// it; other widths there are not config cycles (PCI 3.0 §3.2.2.3.2) and,
// with nothing else at those ports, read all ones, as does any CONFIG_DATA
// read that reaches no function. Linux's pci_check_type1 relies on this.
func (h *HostBridge) Read(off uint64, data []byte) {
	if off == configAddress && len(data) == 4 {
		h.mu.Lock()
		v := h.addr
		h.mu.Unlock()
		binary.LittleEndian.PutUint32(data, v)
		return
	}
	if k, ok := dataRegister(off, len(data)); ok {
		h.mu.Lock()
		defer h.mu.Unlock()
		if f, reg := h.target(k); f != nil {
			f.ReadConfig(reg, data)
			return
		}
	}
	for i := range data {
		data[i] = 0xff
	}
}

// Write answers a port write: a dword at CONFIG_ADDRESS latches it, a
// CONFIG_DATA write goes to the selected function's register, and anything
// else is dropped.
func (h *HostBridge) Write(off uint64, data []byte) {
	if off == configAddress && len(data) == 4 {
		h.mu.Lock()
		h.addr = binary.LittleEndian.Uint32(data) & addrWritable
		h.mu.Unlock()
		return
	}
	k, ok := dataRegister(off, len(data))
	if !ok {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, reg := h.target(k); f != nil {
		f.WriteConfig(reg, data)
	}
}

// ConfigAddress is the latched CONFIG_ADDRESS, for a snapshot: a vCPU
// stopped between its address write and its data access finds it again
// after a restore.
func (h *HostBridge) ConfigAddress() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr
}

// SetConfigAddress restores a latched CONFIG_ADDRESS (reserved bits are
// dropped, as a guest write would drop them).
func (h *HostBridge) SetConfigAddress(a uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addr = a & addrWritable
}
