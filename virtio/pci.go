// The virtio-pci transport (virtio v1.2 §4.1): modern (non-transitional)
// devices only, interrupts by MSI-X only.
//
// vmm has it next to virtio-mmio for what an interrupt costs. A
// virtio-mmio driver learns why its line fired by reading InterruptStatus
// and clears it by writing InterruptACK: two trapped accesses, two exits
// to vmm, for every interrupt. With MSI-X the vector is the reason, so an
// interrupt is one irqfd write on the host and nothing the guest has to
// ask about. The cost is a PCI function (package pci) in front of it.
//
// Every structure the driver uses sits in BAR 0, each on its own 4 KiB
// page so the machine can trap or ioeventfd them independently: the
// common configuration, the ISR byte, the device configuration, the
// notification area (one 4-byte slot per queue, each caught by an
// ioeventfd at its own address, so a kick exits only into KVM) and the
// MSI-X table and pending-bit array. The capability list points at them
// (virtio v1.2 §4.1.4). The optional PCI configuration access capability
// (§4.1.4.9) is left out: it is a window for firmware without BAR access,
// which no driver vmm boots uses, and serving it would need configuration
// reads with side effects.
//
// The MSI-X table has PCIMSIXVectors entries: one for configuration
// changes and one for every queue. Devices report used buffers per
// device, not per queue (Env.Interrupt), so per-queue vectors would only
// fire each other; with two entries Linux's driver shares one vector
// among the queues of any device with more than one (vp_find_vqs falls
// back to it) and checks each ring, as it does for virtio-mmio.

package virtio

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/vmm-dev/vmm/pci"
)

// Identity of a virtio PCI function (virtio v1.2 §4.1.2).
const (
	// PCIVendorID is the vendor every virtio PCI device carries.
	PCIVendorID = 0x1af4
	// pciDeviceIDBase + the device type is a non-transitional device's
	// ID (§4.1.2).
	pciDeviceIDBase = 0x1040
	// pciRevision: non-transitional devices have revision 1 or higher
	// (§4.1.2.1), which tells a legacy driver to leave them alone.
	pciRevision = 1
	// pciSubsystemID: non-transitional devices SHOULD have 0x40 or
	// higher (§4.1.2.1).
	pciSubsystemID = 0x40
)

// BAR 0's layout. Offsets are vmm's choice, announced in the capability
// list; a page apiece keeps the structures apart.
const (
	// PCIBARSize is BAR 0's size: a power of two (PCI 3.0 §6.2.5.1)
	// holding the six pages below.
	PCIBARSize = 0x8000

	pciCommonOff = 0x0000
	// pciCommonLen covers struct virtio_pci_common_cfg up to
	// queue_reset (§4.1.4.3); Linux maps at least up to queue_device.
	pciCommonLen = 0x3c
	pciISROff    = 0x1000
	pciISRLen    = 1 // of its page, up to pciDeviceOff
	pciDeviceOff = 0x2000
	pciDeviceLen = 0x1000
	// PCINotifyOff is the notification area: queue q's slot is at
	// PCINotifyOff + q*pciNotifyMultiplier (queue_notify_off = q).
	PCINotifyOff        = 0x3000
	pciNotifyLen        = 0x1000
	pciNotifyMultiplier = 4
	pciMSIXTableOff     = 0x4000
	pciMSIXPBAOff       = 0x5000

	// PCIMSIXVectors is the MSI-X table size: configuration changes and
	// the queues (see the package doc).
	PCIMSIXVectors = 2
	// NoVector is VIRTIO_MSI_NO_VECTOR: no interrupt for this event.
	NoVector = 0xffff
)

// Common configuration fields (virtio v1.2 §4.1.4.3, struct
// virtio_pci_common_cfg; Linux include/uapi/linux/virtio_pci.h).
const (
	pciDeviceFeatureSel = 0x00 // le32 RW
	pciDeviceFeature    = 0x04 // le32 R
	pciDriverFeatureSel = 0x08 // le32 RW
	pciDriverFeature    = 0x0c // le32 RW
	pciConfigMSIXVector = 0x10 // le16 RW
	pciNumQueues        = 0x12 // le16 R
	pciDeviceStatus     = 0x14 // u8 RW
	pciConfigGeneration = 0x15 // u8 R
	pciQueueSelect      = 0x16 // le16 RW
	pciQueueSize        = 0x18 // le16 RW
	pciQueueMSIXVector  = 0x1a // le16 RW
	pciQueueEnable      = 0x1c // le16 RW
	pciQueueNotifyOff   = 0x1e // le16 R
	pciQueueDesc        = 0x20 // le64 RW
	pciQueueDriver      = 0x28 // le64 RW
	pciQueueDevice      = 0x30 // le64 RW
)

// virtio structure types (virtio v1.2 §4.1.4) and MSI-X fields.
const (
	pciCapCommonCfg = 1 // VIRTIO_PCI_CAP_COMMON_CFG
	pciCapNotifyCfg = 2 // VIRTIO_PCI_CAP_NOTIFY_CFG
	pciCapISRCfg    = 3 // VIRTIO_PCI_CAP_ISR_CFG
	pciCapDeviceCfg = 4 // VIRTIO_PCI_CAP_DEVICE_CFG

	// PCIMSIXCapability is the index of the MSI-X capability among
	// Capabilities: the one whose writes go to WriteMSIXControl.
	PCIMSIXCapability = 4

	msixCtlEnable  = 1 << 15 // Message Control: MSI-X Enable
	msixCtlMaskAll = 1 << 14 // Message Control: Function Mask
	msixEntrySize  = 16      // PCI 3.0 §6.8.2.6: address lo, hi, data, vector control
	msixVectorMask = 1       // Vector Control bit 0
	// pciMaxQueues is how many slots the notification area holds.
	pciMaxQueues = pciNotifyLen / pciNotifyMultiplier
)

// MSIRouter points an MSI-X vector at the message the driver programmed
// into its table entry; in vmm a GSI route of the vector's irqfd. It is
// called on the vCPU thread that wrote the entry.
type MSIRouter interface {
	RouteMSI(vector int, addr uint64, data uint32) error
}

// Bits of msixEntry.state: a vector fires only when neither mask holds
// it; otherwise the interrupt waits as pending (PCI 3.0 §6.8.3.4).
const (
	vecMasked  = 1 << iota // the entry's Vector Control mask
	vecOff                 // MSI-X disabled or the function masked
	vecPending             // an interrupt arrived while masked
)

// msixEntry is one MSI-X table entry. state is one word so a device
// goroutine firing and a vCPU unmasking agree on whether a pending
// interrupt is owed, without a lock.
type msixEntry struct {
	addrLo, addrHi, data uint32 // under transport.mu
	state                atomic.Uint32
}

// PCI is one device's virtio-pci transport: BAR 0's contents (it
// implements bus.Device over BAR offsets) and the capabilities the
// machine puts in the function's configuration space.
type PCI struct {
	transport
	vectors []Interrupt
	router  MSIRouter
	msix    [PCIMSIXVectors]msixEntry

	// Under transport.mu: what the driver wrote.
	configVector uint16
	queueVectors []uint16
	// Mirrors for raise, which runs without transport.mu: the config
	// vector (NoVector for none) and the set of queue vectors.
	configVec atomic.Uint32
	queueVecs atomic.Uint32
	msixOn    atomic.Bool
}

// NewPCI returns the transport for dev: vectors are the MSI-X vectors'
// interrupts (PCIMSIXVectors of them), router routes them, notifiers
// carry each queue's notifications. logf, which may be nil, reports guest
// mistakes; it should name the device.
func NewPCI(dev Device, mem Memory, vectors []Interrupt, router MSIRouter, notifiers []Notifier, logf func(format string, args ...any)) (*PCI, error) {
	if len(vectors) != PCIMSIXVectors || router == nil {
		return nil, fmt.Errorf("virtio-pci: %d vectors (want %d) or no router", len(vectors), PCIMSIXVectors)
	}
	for i, v := range vectors {
		if v == nil {
			return nil, fmt.Errorf("virtio-pci: vector %d: nil interrupt", i)
		}
	}
	p := &PCI{vectors: append([]Interrupt(nil), vectors...), router: router}
	if err := p.init("virtio-pci", dev, mem, notifiers, logf, p.raiseMSIX); err != nil {
		return nil, err
	}
	if n := len(p.queues); n > pciMaxQueues {
		return nil, fmt.Errorf("virtio-pci type %d: %d queues, the notification area holds %d", dev.Type(), n, pciMaxQueues)
	}
	p.queueVectors = make([]uint16, len(p.queues))
	p.onReset = p.resetVectors
	p.resetVectors()
	for i := range p.msix {
		// Entries start masked (PCI 3.0 §6.8.2.9) and MSI-X disabled.
		p.msix[i].state.Store(vecMasked | vecOff)
	}
	return p, nil
}

// Header is the function's identity for its configuration space.
func (p *PCI) Header() pci.Header {
	typ := p.dev.Type()
	return pci.Header{
		VendorID:          PCIVendorID,
		DeviceID:          pciDeviceIDBase + uint16(typ),
		SubsystemVendorID: PCIVendorID,
		SubsystemID:       pciSubsystemID,
		Class:             pciClass(typ),
		Revision:          pciRevision,
	}
}

// pciClass is the class code a guest's lspci shows; Linux's driver binds
// by vendor ID whatever it is. Codes from the PCI Code and ID Assignment
// Specification (network controller, SCSI storage, other simple
// communication controller, other storage).
func pciClass(t DeviceType) uint32 {
	switch t {
	case TypeNet:
		return 0x020000
	case TypeBlock:
		return 0x010000
	case TypeConsole:
		return 0x078000
	}
	return 0x018000
}

// Capabilities is the function's capability list: the four virtio
// structures (struct virtio_pci_cap, virtio v1.2 §4.1.4) and MSI-X (PCI
// 3.0 §6.8.2), at index PCIMSIXCapability, whose Message Control the guest
// may write.
func (p *PCI) Capabilities() []pci.Capability {
	notify := virtioCap(pciCapNotifyCfg, PCINotifyOff, uint32(len(p.queues))*pciNotifyMultiplier, 4)
	binary.LittleEndian.PutUint32(notify[14:], pciNotifyMultiplier)
	msix := make([]byte, 10)
	binary.LittleEndian.PutUint16(msix[0:], PCIMSIXVectors-1) // table size - 1
	binary.LittleEndian.PutUint32(msix[2:], pciMSIXTableOff)  // BIR 0
	binary.LittleEndian.PutUint32(msix[6:], pciMSIXPBAOff)    // BIR 0
	msixWritable := make([]byte, 10)
	binary.LittleEndian.PutUint16(msixWritable, msixCtlEnable|msixCtlMaskAll)
	return []pci.Capability{
		{ID: pci.CapIDVendorSpecific, Body: virtioCap(pciCapCommonCfg, pciCommonOff, pciCommonLen, 0)},
		{ID: pci.CapIDVendorSpecific, Body: virtioCap(pciCapISRCfg, pciISROff, pciISRLen, 0)},
		{ID: pci.CapIDVendorSpecific, Body: virtioCap(pciCapDeviceCfg, pciDeviceOff, pciDeviceLen, 0)},
		{ID: pci.CapIDVendorSpecific, Body: notify},
		{ID: pci.CapIDMSIX, Body: msix, Writable: msixWritable},
	}
}

// virtioCap is a struct virtio_pci_cap's body after cap_vndr and
// cap_next, with extra bytes for a longer variant.
func virtioCap(typ uint8, off, length uint32, extra int) []byte {
	b := make([]byte, 14+extra)
	b[0] = byte(16 + extra) // cap_len counts cap_vndr and cap_next too
	b[1] = typ
	b[2] = 0 // bar
	binary.LittleEndian.PutUint32(b[6:], off)
	binary.LittleEndian.PutUint32(b[10:], length)
	return b
}

// PCINotifyAddr is queue q's notification slot within BAR 0, where the
// machine places its ioeventfd.
func PCINotifyAddr(q int) uint64 { return PCINotifyOff + uint64(q)*pciNotifyMultiplier }

// WriteMSIXControl takes the MSI-X capability's Message Control after a
// guest write: enabling, disabling or masking the function holds or
// releases every vector.
func (p *PCI) WriteMSIXControl(ctl uint16) {
	on := ctl&msixCtlEnable != 0
	p.msixOn.Store(on)
	for v := range p.msix {
		if on && ctl&msixCtlMaskAll == 0 {
			p.unmask(v, vecOff)
		} else {
			p.msix[v].state.Or(vecOff)
		}
	}
}

// raiseMSIX is the transport's interrupt: the configuration vector for a
// configuration change, the queues' vectors for used buffers. The ISR
// keeps the configuration bit always and the queue bit only while MSI-X
// is off (virtio v1.2 §4.1.4.5.1); with MSI-X off nothing is sent, since
// the function has no INTx line, but the queues' vectors are marked
// pending (fire: vecOff holds them), so a driver that enables MSI-X
// later hears of buffers used meanwhile, where with EVENT_IDX no later
// interrupt would come for them.
func (p *PCI) raiseMSIX(cause uint32) {
	if cause == InterruptConfigChange {
		p.isr.Or(cause)
		if v := p.configVec.Load(); v < PCIMSIXVectors {
			p.fire(int(v))
		}
		return
	}
	if !p.msixOn.Load() {
		p.isr.Or(cause)
	}
	for m := p.queueVecs.Load(); m != 0; m &= m - 1 {
		p.fire(bits.TrailingZeros32(m))
	}
}

// fire sends vector v, or marks it pending while it is masked.
func (p *PCI) fire(v int) {
	e := &p.msix[v]
	for {
		old := e.state.Load()
		if old&(vecMasked|vecOff) == 0 {
			p.vectors[v].Trigger()
			return
		}
		if old&vecPending != 0 || e.state.CompareAndSwap(old, old|vecPending) {
			return
		}
	}
}

// unmask clears mask bits of vector v and sends what was pending if
// nothing masks it any more (PCI 3.0 §6.8.3.4).
func (p *PCI) unmask(v int, maskBits uint32) {
	e := &p.msix[v]
	for {
		old := e.state.Load()
		nw := old &^ maskBits
		send := nw&(vecMasked|vecOff) == 0 && nw&vecPending != 0
		if send {
			nw &^= vecPending
		}
		if e.state.CompareAndSwap(old, nw) {
			if send {
				p.vectors[v].Trigger()
			}
			return
		}
	}
}

// resetVectors is the device reset's part here: no event has a vector
// (virtio v1.2 §4.1.5.1.2 has the driver write them again); t.mu is held
// or p not yet shared.
func (p *PCI) resetVectors() {
	p.configVector = NoVector
	for i := range p.queueVectors {
		p.queueVectors[i] = NoVector
	}
	p.syncVectors()
}

// syncVectors publishes the driver's vector choices to raiseMSIX; t.mu is
// held.
func (p *PCI) syncVectors() {
	p.configVec.Store(uint32(p.configVector))
	var m uint32
	for _, v := range p.queueVectors {
		if v < PCIMSIXVectors {
			m |= 1 << v
		}
	}
	p.queueVecs.Store(m)
}

// Read implements bus.Device over BAR 0: off is the offset in the BAR.
func (p *PCI) Read(off uint64, data []byte) {
	clear(data)
	n := uint64(len(data))
	switch {
	case off < pciCommonOff+pciCommonLen:
		p.readCommon(off, data)
	case off >= pciISROff && off < pciDeviceOff:
		// Reading the ISR clears it (§4.1.4.5).
		if off == pciISROff {
			data[0] = byte(p.isr.Swap(0))
		}
	case off >= pciDeviceOff && off < pciDeviceOff+pciDeviceLen:
		if widthOK(n) && off+n <= pciDeviceOff+pciDeviceLen {
			p.dev.ReadConfig(off-pciDeviceOff, data)
		}
	case off >= pciMSIXTableOff && off < pciMSIXTableOff+PCIMSIXVectors*msixEntrySize:
		p.accessTable(off-pciMSIXTableOff, data, false)
	case off == pciMSIXPBAOff && (n == 4 || n == 8):
		var pba uint32
		for v := range p.msix {
			if p.msix[v].state.Load()&vecPending != 0 {
				pba |= 1 << v
			}
		}
		binary.LittleEndian.PutUint32(data, pba)
	}
}

// Write implements bus.Device over BAR 0.
func (p *PCI) Write(off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case off >= PCINotifyOff && off < PCINotifyOff+pciNotifyLen:
		// Only a notification no ioeventfd caught gets here.
		rel := off - PCINotifyOff
		if rel%pciNotifyMultiplier == 0 && (n == 2 || n == 4) {
			p.notify(uint32(rel / pciNotifyMultiplier))
		}
	case off < pciCommonOff+pciCommonLen:
		p.writeCommon(off, data)
	case off >= pciDeviceOff && off < pciDeviceOff+pciDeviceLen:
		if widthOK(n) && off+n <= pciDeviceOff+pciDeviceLen {
			p.dev.WriteConfig(off-pciDeviceOff, data)
		}
	case off >= pciMSIXTableOff && off < pciMSIXTableOff+PCIMSIXVectors*msixEntrySize:
		p.accessTable(off-pciMSIXTableOff, data, true)
	}
}

func widthOK(n uint64) bool { return n == 1 || n == 2 || n == 4 || n == 8 }

// readCommon reads a common configuration field, accessed at its own
// width or, for the 64-bit addresses, as 32-bit halves (§4.1.3.1).
func (p *PCI) readCommon(off uint64, data []byte) {
	n := len(data)
	p.mu.Lock()
	defer p.mu.Unlock()
	var v uint64
	switch {
	case off == pciDeviceFeatureSel && n == 4:
		v = uint64(p.deviceFeaturesSel)
	case off == pciDeviceFeature && n == 4:
		v = uint64(p.deviceFeatureWord())
	case off == pciDriverFeatureSel && n == 4:
		v = uint64(p.driverFeaturesSel)
	case off == pciDriverFeature && n == 4:
		switch p.driverFeaturesSel {
		case 0:
			v = p.driverFeatures & 0xffffffff
		case 1:
			v = p.driverFeatures >> 32
		}
	case off == pciConfigMSIXVector && n == 2:
		v = uint64(p.configVector)
	case off == pciNumQueues && n == 2:
		v = uint64(len(p.queues))
	case off == pciDeviceStatus && n == 1:
		v = uint64(p.readStatus())
	case off == pciConfigGeneration && n == 1:
		v = uint64(p.configGen.Load())
	case off == pciQueueSelect && n == 2:
		v = uint64(p.queueSel)
	case off >= pciQueueSize && off < pciQueueDesc && n == 2:
		v = p.readQueue16(off)
	case off >= pciQueueDesc && off < pciQueueDevice+8 && (n == 4 || n == 8) && off%uint64(n) == 0:
		v = p.readQueueAddr(off, n)
	case off >= pciQueueDevice+8:
		// queue_notif_config_data and queue_reset: their features are
		// not offered, so they read as 0.
	default:
		p.logOnce(logWidth, "%d-byte read at common configuration offset %#x ignored", n, off)
	}
	putLE(data, v)
}

// readQueue16 reads the selected queue's 16-bit fields; a queue that does
// not exist has size 0 (§4.1.4.3).
func (p *PCI) readQueue16(off uint64) uint64 {
	if p.queueSel >= uint32(len(p.qregs)) {
		if off == pciQueueMSIXVector {
			return NoVector
		}
		return 0
	}
	q := p.qregs[p.queueSel]
	switch off {
	case pciQueueSize:
		return uint64(q.num)
	case pciQueueMSIXVector:
		return uint64(p.queueVectors[p.queueSel])
	case pciQueueEnable:
		if q.ready {
			return 1
		}
	case pciQueueNotifyOff:
		return uint64(p.queueSel)
	}
	return 0
}

func (p *PCI) readQueueAddr(off uint64, n int) uint64 {
	if p.queueSel >= uint32(len(p.qregs)) {
		return 0
	}
	q := p.qregs[p.queueSel]
	var full uint64
	switch (off - pciQueueDesc) / 8 {
	case 0:
		full = q.desc
	case 1:
		full = q.driver
	default:
		full = q.device
	}
	if n == 8 {
		return full
	}
	if off%8 == 4 {
		return full >> 32
	}
	return full & 0xffffffff
}

// writeCommon writes a common configuration field (see readCommon).
func (p *PCI) writeCommon(off uint64, data []byte) {
	n := len(data)
	v := getLE(data)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	switch {
	case off == pciDeviceFeatureSel && n == 4:
		p.deviceFeaturesSel = uint32(v)
	case off == pciDriverFeatureSel && n == 4:
		p.driverFeaturesSel = uint32(v)
	case off == pciDriverFeature && n == 4:
		p.writeDriverFeatures(uint32(v))
	case off == pciConfigMSIXVector && n == 2:
		p.configVector = p.vectorOrNone(v)
		p.syncVectors()
	case off == pciDeviceStatus && n == 1:
		p.writeStatus(uint32(v))
	case off == pciQueueSelect && n == 2:
		p.queueSel = uint32(v)
	case off == pciQueueSize && n == 2:
		p.writeQueue(qfNum, uint32(v))
	case off == pciQueueMSIXVector && n == 2:
		if p.queueSel < uint32(len(p.queueVectors)) {
			p.queueVectors[p.queueSel] = p.vectorOrNone(v)
			p.syncVectors()
		}
	case off == pciQueueEnable && n == 2:
		// The driver never writes 0 (§4.1.4.3.2); a queue is disabled
		// only by a reset.
		if v&1 != 0 {
			p.writeQueue(qfReady, 1)
		}
	case off >= pciQueueDesc && off < pciQueueDevice+8 && (n == 4 || n == 8) && off%uint64(n) == 0:
		p.writeQueueAddr(off, n, v)
	default:
		p.logOnce(logReadOnly, "%d-byte write of %#x at common configuration offset %#x ignored", n, v, off)
	}
}

// vectorOrNone is what a vector register keeps of v: the device answers
// NoVector for a vector it cannot use, which is how the driver learns of
// the failure (§4.1.5.1.2).
func (p *PCI) vectorOrNone(v uint64) uint16 {
	if v < PCIMSIXVectors {
		return uint16(v)
	}
	return NoVector
}

func (p *PCI) writeQueueAddr(off uint64, n int, v uint64) {
	base := qfDescLow + queueField(2*((off-pciQueueDesc)/8))
	switch {
	case n == 8:
		p.writeQueue(base, uint32(v))
		p.writeQueue(base+1, uint32(v>>32))
	case off%8 == 4:
		p.writeQueue(base+1, uint32(v))
	default:
		p.writeQueue(base, uint32(v))
	}
}

// accessTable reads or writes the MSI-X table at off, a dword or an
// aligned qword at a time (PCI 3.0 §6.8.2: software uses dword or
// aligned qword accesses).
func (p *PCI) accessTable(off uint64, data []byte, write bool) {
	n := uint64(len(data))
	if (n != 4 && n != 8) || off%n != 0 {
		p.logOnce(logWidth, "%d-byte MSI-X table access at %#x ignored", n, off)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := uint64(0); i < n; i += 4 {
		v, dw := int((off+i)/msixEntrySize), (off+i)%msixEntrySize/4
		if write {
			if !p.closed {
				p.writeEntry(v, dw, binary.LittleEndian.Uint32(data[i:]))
			}
			continue
		}
		binary.LittleEndian.PutUint32(data[i:], p.readEntry(v, dw))
	}
}

func (p *PCI) readEntry(v int, dw uint64) uint32 {
	e := &p.msix[v]
	switch dw {
	case 0:
		return e.addrLo
	case 1:
		return e.addrHi
	case 2:
		return e.data
	}
	if e.state.Load()&vecMasked != 0 {
		return msixVectorMask
	}
	return 0
}

// writeEntry changes dword dw of entry v; t.mu is held. A new message is
// routed at once, so the vector is ready whenever the driver unmasks it.
func (p *PCI) writeEntry(v int, dw uint64, x uint32) {
	e := &p.msix[v]
	switch dw {
	case 0:
		x &^= 3 // Message Address bits 1:0 are reserved (PCI 3.0 §6.8.2.7)
		if x == e.addrLo {
			return
		}
		e.addrLo = x
	case 1:
		if x == e.addrHi {
			return
		}
		e.addrHi = x
	case 2:
		if x == e.data {
			return
		}
		e.data = x
	default:
		if x&msixVectorMask != 0 {
			e.state.Or(vecMasked)
		} else {
			p.unmask(v, vecMasked)
		}
		return
	}
	if err := p.router.RouteMSI(v, uint64(e.addrHi)<<32|uint64(e.addrLo), e.data); err != nil {
		p.logOnce(logRoute, "MSI-X vector %d: %v", v, err)
	}
}

func putLE(data []byte, v uint64) {
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
}

func getLE(data []byte) uint64 {
	var v uint64
	for i := range data {
		v |= uint64(data[i]) << (8 * i)
	}
	return v
}

// MSIXEntryState is one MSI-X table entry as a snapshot keeps it.
type MSIXEntryState struct {
	AddrLo  uint32
	AddrHi  uint32
	Data    uint32
	Masked  bool
	Pending bool
}

// PCIState is a virtio-pci transport as a snapshot keeps it: the shared
// transport state, the driver's vector choices and the MSI-X table. The
// function's configuration space (BAR, command, MSI-X enable) is the
// machine's to keep, with package pci's EndpointState.
type PCIState struct {
	Transport    TransportState
	ConfigVector uint16
	QueueVectors []uint16
	MSIX         []MSIXEntryState
}

// State returns the transport's state; call it after Pause.
func (p *PCI) State() PCIState {
	s := PCIState{Transport: p.transport.State()}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.ConfigVector = p.configVector
	s.QueueVectors = append([]uint16(nil), p.queueVectors...)
	for v := range p.msix {
		e := &p.msix[v]
		st := e.state.Load()
		s.MSIX = append(s.MSIX, MSIXEntryState{
			AddrLo: e.addrLo, AddrHi: e.addrHi, Data: e.data,
			Masked: st&vecMasked != 0, Pending: st&vecPending != 0,
		})
	}
	return s
}

// Restore puts a freshly made transport in state s: the MSI-X table
// (each message routed again), the vectors, then the shared state, which
// restarts a running device. The machine restores the configuration
// space first, so MSI-X is enabled as it was before anything fires.
func (p *PCI) Restore(s PCIState) error {
	if len(s.MSIX) != PCIMSIXVectors {
		return fmt.Errorf("virtio-pci: snapshot has %d MSI-X vectors, this transport %d", len(s.MSIX), PCIMSIXVectors)
	}
	if len(s.QueueVectors) != len(p.queueVectors) {
		return fmt.Errorf("virtio-pci: snapshot has vectors for %d queues, device has %d", len(s.QueueVectors), len(p.queueVectors))
	}
	p.mu.Lock()
	for v, es := range s.MSIX {
		e := &p.msix[v]
		e.addrLo, e.addrHi, e.data = es.AddrLo&^3, es.AddrHi, es.Data
		if err := p.router.RouteMSI(v, uint64(e.addrHi)<<32|uint64(e.addrLo), e.data); err != nil {
			p.mu.Unlock()
			return fmt.Errorf("virtio-pci: MSI-X vector %d: %w", v, err)
		}
		st := e.state.Load() &^ (vecMasked | vecPending)
		if es.Masked {
			st |= vecMasked
		}
		if es.Pending {
			st |= vecPending
		}
		e.state.Store(st)
	}
	p.configVector = p.vectorOrNone(uint64(s.ConfigVector))
	for i, v := range s.QueueVectors {
		p.queueVectors[i] = p.vectorOrNone(uint64(v))
	}
	// Published before the device restarts: its first completion may
	// come before transport.Restore returns.
	p.syncVectors()
	p.mu.Unlock()
	if err := p.transport.Restore(s.Transport); err != nil {
		return err
	}
	// Send what was pending and is no longer masked.
	for v := range p.msix {
		p.unmask(v, 0)
	}
	return nil
}
