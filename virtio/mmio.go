// The virtio-mmio transport (virtio v1.2 §4.2), modern interface
// (Version 2) only.
//
// vmm uses virtio-mmio rather than virtio-pci because it is the smallest
// transport a guest can discover without PCI: a device is a 512-byte
// register window plus one interrupt line, so there is no PCI host bridge,
// configuration space, capability list or BAR emulation to write. The
// machine describes each device to the guest in the ACPI DSDT as a
// LNRO0005 device with a Memory32Fixed (the window) and an Interrupt
// resource, which Linux's virtio_mmio driver binds to; the kernel command
// line alternative (virtio_mmio.device=) needs
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, which Debian's kernels lack.
//
// Queue notifications are register writes to QueueNotify; the machine
// catches them in the kernel with an ioeventfd on base+MMIOQueueNotify
// (datamatch = queue index), so a kick costs no exit to user space, and
// Write handles only the ones no ioeventfd caught. Interrupts go out on
// one edge-triggered line per device through an irqfd; InterruptStatus
// tells the driver why it fired.

package virtio

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// MMIOSize is the size of one device's register window: the registers
// below MMIOConfig and a device-specific configuration space after them
// (virtio v1.2 §4.2.2). 0x100 bytes of configuration are more than
// virtio-blk (60) or virtio-net (24) have.
const MMIOSize = 0x200

// Register offsets within the window (virtio v1.2 §4.2.2, Table 4.1;
// Linux include/uapi/linux/virtio_mmio.h). Every register is 32 bits wide
// and little-endian.
const (
	MMIOMagicValue        = 0x000 // R: "virt"
	MMIOVersion           = 0x004 // R: 2, the modern interface
	MMIODeviceID          = 0x008 // R: the DeviceType
	MMIOVendorID          = 0x00c // R
	MMIODeviceFeatures    = 0x010 // R: word DeviceFeaturesSel of the offered features
	MMIODeviceFeaturesSel = 0x014 // W
	MMIODriverFeatures    = 0x020 // W: word DriverFeaturesSel of the accepted features
	MMIODriverFeaturesSel = 0x024 // W
	MMIOQueueSel          = 0x030 // W: the queue the Queue* registers address
	MMIOQueueNumMax       = 0x034 // R: 0 when that queue does not exist
	MMIOQueueNum          = 0x038 // W: the size the driver chose
	MMIOQueueReady        = 0x044 // RW
	MMIOQueueNotify       = 0x050 // W: the index of a queue with new buffers
	MMIOInterruptStatus   = 0x060 // R: InterruptUsedBuffer | InterruptConfigChange
	MMIOInterruptACK      = 0x064 // W: clears the bits written
	MMIOStatus            = 0x070 // RW: device status (§2.1); 0 resets
	MMIOQueueDescLow      = 0x080 // W: descriptor table address, bits 0-31
	MMIOQueueDescHigh     = 0x084 // W: bits 32-63
	MMIOQueueDriverLow    = 0x090 // W: available ring address
	MMIOQueueDriverHigh   = 0x094 // W
	MMIOQueueDeviceLow    = 0x0a0 // W: used ring address
	MMIOQueueDeviceHigh   = 0x0a4 // W
	MMIOSHMSel            = 0x0ac // W: shared memory region (none here)
	MMIOSHMLenLow         = 0x0b0 // R
	MMIOSHMLenHigh        = 0x0b4 // R
	MMIOSHMBaseLow        = 0x0b8 // R
	MMIOSHMBaseHigh       = 0x0bc // R
	MMIOQueueReset        = 0x0c0 // RW: only with VIRTIO_F_RING_RESET, not offered
	MMIOConfigGeneration  = 0x0fc // R: changes whenever the configuration may have changed (here: each reset)
	MMIOConfig            = 0x100 // device-specific configuration space
)

const (
	mmioMagic   = 0x74726976 // "virt" little-endian (virtio v1.2 §4.2.2)
	mmioVersion = 2          // the non-legacy interface (virtio v1.2 §4.2.2)
	// mmioVendor identifies vmm as the implementer: "VMM" in ASCII,
	// little-endian. The spec leaves vendor IDs free and Linux ignores it;
	// it only keeps vmm distinguishable from QEMU's "QEMU" (0x554d4551).
	mmioVendor = 0x004d4d56

	// Feature bits that change how the transport or the rings work and
	// that neither this transport nor Queue implement (virtio v1.2 §6): a
	// device offering them is refused by NewMMIO rather than silently
	// promising them to the driver.
	featureRingPacked       = 34 // VIRTIO_F_RING_PACKED
	featureNotificationData = 38 // VIRTIO_F_NOTIFICATION_DATA
	featureRingReset        = 40 // VIRTIO_F_RING_RESET

	// statusDriverBits are the status bits a driver may set (virtio v1.2
	// §2.1); DEVICE_NEEDS_RESET belongs to the device.
	statusDriverBits = StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusDriverOK | StatusFailed
)

// Kinds of guest mistakes, each logged at most once per transport so a
// guest cannot flood the host's log.
const (
	logWidth uint32 = 1 << iota
	logReadOnly
	logWriteOnly
	logNoQueue
	logQueueLocked
	logFeaturesLocked
	logFeaturesRefused
	logNotFeaturesOK
	logQueueSetup
	logActivate
	logFail
)

// mmioQueue is what the driver wrote for one queue: nothing is checked
// until DRIVER_OK hands it to Queue.Setup.
type mmioQueue struct {
	num                  uint32
	ready                bool
	desc, driver, device uint64
}

// MMIO is one device's virtio-mmio register window. It implements
// bus.Device.
type MMIO struct {
	dev       Device
	mem       Memory
	irq       Interrupt
	notifiers []Notifier
	queues    []*Queue
	features  uint64 // dev.Features(), fixed so negotiation sees one set
	logf      func(format string, args ...any)
	interrupt func() // usedBuffer bound once, so Env.Interrupt never allocates

	// Written by device goroutines through Env without t.mu: a worker
	// must never wait for t.mu, which a vCPU holds while dev.Reset waits
	// for that worker.
	isr        atomic.Uint32 // interrupt status
	needsReset atomic.Bool   // DEVICE_NEEDS_RESET
	activation atomic.Uint64 // bumped by every reset: Fail of an older activation is ignored
	configGen  atomic.Uint32
	logged     atomic.Uint32 // log* kinds already reported

	mu                 sync.Mutex // guards the registers below against concurrent vCPUs
	status             uint32     // driver-set bits; NEEDS_RESET is in needsReset
	deviceFeaturesSel  uint32
	driverFeaturesSel  uint32
	driverFeatures     uint64
	driverFeaturesHigh bool // a non-zero word beyond bit 63 was accepted
	queueSel           uint32
	qregs              []mmioQueue
	activated          bool // dev.Activate was called since the last reset
	closed             bool
}

// NewMMIO returns the transport for dev, with one notifier per queue
// (notifiers[i] for queue i). logf, which may be nil, reports guest
// mistakes and device failures; it should name the device.
func NewMMIO(dev Device, mem Memory, irq Interrupt, notifiers []Notifier, logf func(format string, args ...any)) (*MMIO, error) {
	if dev == nil || mem == nil || irq == nil {
		return nil, fmt.Errorf("virtio-mmio: nil device, memory or interrupt")
	}
	typ := dev.Type()
	features := dev.Features()
	if features&(1<<FeatureVersion1) == 0 {
		return nil, fmt.Errorf("virtio-mmio type %d: device does not offer VIRTIO_F_VERSION_1 (features %#x); only modern devices are supported", typ, features)
	}
	if f := features & (1<<featureRingPacked | 1<<featureNotificationData | 1<<featureRingReset); f != 0 {
		return nil, fmt.Errorf("virtio-mmio type %d: device offers features %#x the transport does not implement", typ, f)
	}
	maxes := dev.QueueMax()
	if len(maxes) == 0 {
		return nil, fmt.Errorf("virtio-mmio type %d: device has no queues", typ)
	}
	if len(notifiers) != len(maxes) {
		return nil, fmt.Errorf("virtio-mmio type %d: %d notifiers for %d queues", typ, len(notifiers), len(maxes))
	}
	t := &MMIO{
		dev:       dev,
		mem:       mem,
		irq:       irq,
		notifiers: append([]Notifier(nil), notifiers...),
		queues:    make([]*Queue, len(maxes)),
		features:  features,
		logf:      logf,
		qregs:     make([]mmioQueue, len(maxes)),
	}
	for i, m := range maxes {
		// A split queue's size is a power of 2 up to 32768 (virtio v1.2
		// §2.7), and Linux sizes its rings at exactly QueueNumMax.
		if m == 0 || m&(m-1) != 0 || m > 32768 {
			return nil, fmt.Errorf("virtio-mmio type %d: queue %d: maximum size %d is not a power of 2 up to 32768", typ, i, m)
		}
		if notifiers[i] == nil {
			return nil, fmt.Errorf("virtio-mmio type %d: queue %d: nil notifier", typ, i)
		}
		t.queues[i] = NewQueue(m)
		t.qregs[i].num = uint32(m)
	}
	if t.logf == nil {
		t.logf = func(string, ...any) {}
	}
	t.interrupt = t.usedBuffer
	return t, nil
}

// Read implements bus.Device: off is within the window, len(data) the
// access width.
func (t *MMIO) Read(off uint64, data []byte) {
	clear(data)
	if off >= MMIOConfig {
		if t.configAccessOK(off, data) {
			t.dev.ReadConfig(off-MMIOConfig, data)
		}
		return
	}
	if !t.registerAccessOK(off, data) {
		return
	}
	binary.LittleEndian.PutUint32(data, t.readRegister(off))
}

// Write implements bus.Device.
func (t *MMIO) Write(off uint64, data []byte) {
	if off >= MMIOConfig {
		if t.configAccessOK(off, data) {
			t.dev.WriteConfig(off-MMIOConfig, data)
		}
		return
	}
	if !t.registerAccessOK(off, data) {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	// The two registers the hot path writes need no lock: the notifiers
	// are fixed and the interrupt status is atomic.
	switch off {
	case MMIOQueueNotify:
		if v < uint32(len(t.notifiers)) {
			t.notifiers[v].Signal()
		} else {
			t.logOnce(logNoQueue, "notify of queue %d, device has %d", v, len(t.notifiers))
		}
		return
	case MMIOInterruptACK:
		t.isr.And(^v)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.writeRegister(off, v)
	}
}

// Close resets the device, stopping its workers, and makes the transport
// ignore further register writes. It is idempotent.
func (t *MMIO) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.reset()
	t.closed = true
}

// registerAccessOK enforces virtio v1.2 §4.2.2.2: the driver accesses
// the registers only 32 bits wide and aligned.
func (t *MMIO) registerAccessOK(off uint64, data []byte) bool {
	if len(data) == 4 && off%4 == 0 {
		return true
	}
	t.logOnce(logWidth, "%d-byte access at register offset %#x ignored: registers are 32-bit", len(data), off)
	return false
}

// configAccessOK allows the widths virtio v1.2 §4.2.2.2 allows for the
// configuration space, wholly inside the window.
func (t *MMIO) configAccessOK(off uint64, data []byte) bool {
	n := uint64(len(data))
	if (n == 1 || n == 2 || n == 4 || n == 8) && off < MMIOSize && n <= MMIOSize-off {
		return true
	}
	t.logOnce(logWidth, "%d-byte access at config offset %#x ignored", len(data), off)
	return false
}

func (t *MMIO) readRegister(off uint64) uint32 {
	switch off {
	case MMIOMagicValue:
		return mmioMagic
	case MMIOVersion:
		return mmioVersion
	case MMIODeviceID:
		return uint32(t.dev.Type())
	case MMIOVendorID:
		return mmioVendor
	case MMIOInterruptStatus:
		return t.isr.Load()
	case MMIOConfigGeneration:
		return t.configGen.Load()
	case MMIOSHMLenLow, MMIOSHMLenHigh:
		// A length of all ones says the selected region does not exist
		// (virtio v1.2 §4.2.2): vmm has no shared memory regions.
		return 0xffffffff
	case MMIOSHMBaseLow, MMIOSHMBaseHigh, MMIOQueueReset:
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch off {
	case MMIODeviceFeatures:
		switch t.deviceFeaturesSel {
		case 0:
			return uint32(t.features)
		case 1:
			return uint32(t.features >> 32)
		}
		return 0
	case MMIOQueueNumMax:
		if t.queueSel < uint32(len(t.queues)) {
			return uint32(t.queues[t.queueSel].Max())
		}
		return 0
	case MMIOQueueReady:
		if t.queueSel < uint32(len(t.qregs)) && t.qregs[t.queueSel].ready {
			return 1
		}
		return 0
	case MMIOStatus:
		st := t.status
		if t.needsReset.Load() {
			st |= StatusDeviceNeedsReset
		}
		return st
	}
	t.logOnce(logWriteOnly, "read of write-only or reserved register %#x", off)
	return 0
}

// writeRegister handles every register but QueueNotify and
// InterruptACK; t.mu is held.
func (t *MMIO) writeRegister(off uint64, v uint32) {
	switch off {
	case MMIODeviceFeaturesSel:
		t.deviceFeaturesSel = v
	case MMIODriverFeaturesSel:
		t.driverFeaturesSel = v
	case MMIODriverFeatures:
		t.writeDriverFeatures(v)
	case MMIOQueueSel:
		t.queueSel = v
	case MMIOStatus:
		t.writeStatus(v)
	case MMIOQueueNum, MMIOQueueReady,
		MMIOQueueDescLow, MMIOQueueDescHigh,
		MMIOQueueDriverLow, MMIOQueueDriverHigh,
		MMIOQueueDeviceLow, MMIOQueueDeviceHigh:
		t.writeQueue(off, v)
	case MMIOSHMSel:
		// Every region reads as absent whatever is selected.
	default:
		t.logOnce(logReadOnly, "write of %#x to read-only or reserved register %#x ignored", v, off)
	}
}

// writeDriverFeatures stores a word of accepted features. Once
// FEATURES_OK is set the negotiated set is final (virtio v1.2 §3.1.1), so
// later writes are ignored rather than changing features under a
// running device.
func (t *MMIO) writeDriverFeatures(v uint32) {
	if t.status&StatusFeaturesOK != 0 {
		t.logOnce(logFeaturesLocked, "driver features written after FEATURES_OK ignored")
		return
	}
	switch t.driverFeaturesSel {
	case 0:
		t.driverFeatures = t.driverFeatures&^0xffffffff | uint64(v)
	case 1:
		t.driverFeatures = t.driverFeatures&0xffffffff | uint64(v)<<32
	default:
		// No feature beyond bit 63 is offered, so accepting one makes
		// FEATURES_OK fail; clearing one again is harmless.
		if v != 0 {
			t.driverFeaturesHigh = true
		}
	}
}

// writeQueue configures the selected queue. The registers are writable
// only while the queue is not ready and the device not running (virtio
// v1.2 §4.2.3.2); anything else is ignored, so a running device's rings
// never move under it.
func (t *MMIO) writeQueue(off uint64, v uint32) {
	if t.queueSel >= uint32(len(t.qregs)) {
		t.logOnce(logNoQueue, "write to register %#x for queue %d, device has %d", off, t.queueSel, len(t.qregs))
		return
	}
	q := &t.qregs[t.queueSel]
	if t.status&StatusDriverOK != 0 || (q.ready && off != MMIOQueueReady) {
		t.logOnce(logQueueLocked, "write to register %#x of queue %d while it is in use ignored", off, t.queueSel)
		return
	}
	switch off {
	case MMIOQueueNum:
		q.num = v
	case MMIOQueueReady:
		q.ready = v&1 != 0
	case MMIOQueueDescLow:
		q.desc = setLow(q.desc, v)
	case MMIOQueueDescHigh:
		q.desc = setHigh(q.desc, v)
	case MMIOQueueDriverLow:
		q.driver = setLow(q.driver, v)
	case MMIOQueueDriverHigh:
		q.driver = setHigh(q.driver, v)
	case MMIOQueueDeviceLow:
		q.device = setLow(q.device, v)
	case MMIOQueueDeviceHigh:
		q.device = setHigh(q.device, v)
	}
}

func setLow(x uint64, v uint32) uint64  { return x&^0xffffffff | uint64(v) }
func setHigh(x uint64, v uint32) uint64 { return x&0xffffffff | uint64(v)<<32 }

// writeStatus follows the driver through device initialization (virtio
// v1.2 §3.1.1). A driver never clears a bit except by writing 0 (§2.1.2),
// so status only accumulates bits until then.
func (t *MMIO) writeStatus(v uint32) {
	if v == 0 {
		t.reset()
		return
	}
	old := t.status
	st := old | v&statusDriverBits
	if st&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		// The device refuses features by leaving FEATURES_OK clear for
		// the driver to read back (§2.2.2).
		if err := t.checkFeatures(); err != nil {
			st &^= StatusFeaturesOK
			t.logOnce(logFeaturesRefused, "FEATURES_OK refused: %v", err)
		}
	}
	t.status = st
	if st&StatusDriverOK == 0 || old&StatusDriverOK != 0 {
		return
	}
	switch {
	case st&StatusFeaturesOK == 0:
		// Nothing was negotiated, so there is nothing to start with.
		t.status &^= StatusDriverOK
		t.logOnce(logNotFeaturesOK, "DRIVER_OK without FEATURES_OK ignored")
	case st&StatusFailed != 0:
		// The driver gave up on the device (§2.1): do not start it.
	default:
		t.activate()
	}
}

// checkFeatures is the device's side of feature negotiation (§2.2.1):
// the driver accepts only offered features, and this transport only
// modern drivers (§6.1: VERSION_1).
func (t *MMIO) checkFeatures() error {
	if t.driverFeaturesHigh {
		return fmt.Errorf("driver accepted a feature beyond bit 63")
	}
	if extra := t.driverFeatures &^ t.features; extra != 0 {
		return fmt.Errorf("driver accepted features %#x the device does not offer (offered %#x)", extra, t.features)
	}
	if t.driverFeatures&(1<<FeatureVersion1) == 0 {
		return fmt.Errorf("driver did not accept VIRTIO_F_VERSION_1 (features %#x): legacy drivers are not supported", t.driverFeatures)
	}
	return nil
}

// activate sets up the ready queues and starts the device; t.mu is held.
// Env.Queues holds every queue, ready or not, because a driver may leave
// queues unused (virtio-net's control queue, multiqueue pairs it did not
// enable): the device skips those whose Ready is false.
func (t *MMIO) activate() { t.activateAt(nil) }

// activateAt is activate with the queues' indices set from rings (one per
// queue, or nil for fresh queues) before the device starts: a restored
// device's workers must never see the indices at 0.
func (t *MMIO) activateAt(rings []QueueState) {
	eventIdx := t.driverFeatures&(1<<FeatureEventIdx) != 0
	indirect := t.driverFeatures&(1<<FeatureIndirectDesc) != 0
	for i, r := range t.qregs {
		if !r.ready {
			continue
		}
		q := t.queues[i]
		if r.num > uint32(q.Max()) {
			t.raiseNeedsReset(logQueueSetup, "queue %d: size %d larger than maximum %d", i, r.num, q.Max())
			return
		}
		cfg := QueueConfig{Size: uint16(r.num), Desc: r.desc, Avail: r.driver, Used: r.device}
		if err := q.Setup(t.mem, cfg, eventIdx, indirect); err != nil {
			t.raiseNeedsReset(logQueueSetup, "queue %d: %v", i, err)
			return
		}
		if rings != nil {
			if err := q.restoreState(rings[i]); err != nil {
				t.raiseNeedsReset(logQueueSetup, "queue %d: %v", i, err)
				return
			}
		}
	}
	gen := t.activation.Load()
	env := Env{
		Features:  t.driverFeatures,
		Mem:       t.mem,
		Queues:    t.queues,
		Notifiers: t.notifiers,
		Interrupt: t.interrupt,
		Fail:      func(err error) { t.fail(gen, err) },
	}
	// Reset is owed even if Activate fails: it may have started some
	// workers before finding what it could not use.
	t.activated = true
	if err := t.dev.Activate(env); err != nil {
		t.raiseNeedsReset(logActivate, "activate: %v", err)
	}
}

// reset returns the transport to its state after NewMMIO (virtio v1.2
// §4.2.2.1: InterruptStatus and every QueueReady clear); t.mu is held.
func (t *MMIO) reset() {
	t.activation.Add(1)
	if t.activated {
		t.dev.Reset()
		t.activated = false
	}
	for i, q := range t.queues {
		q.Reset()
		t.qregs[i] = mmioQueue{num: uint32(q.Max())}
	}
	t.status = 0
	t.deviceFeaturesSel = 0
	t.driverFeaturesSel = 0
	t.driverFeatures = 0
	t.driverFeaturesHigh = false
	t.queueSel = 0
	t.needsReset.Store(false)
	t.isr.Store(0)
	t.configGen.Add(1)
}

// usedBuffer is Env.Interrupt.
func (t *MMIO) usedBuffer() {
	t.isr.Or(InterruptUsedBuffer)
	t.irq.Trigger()
}

// fail is Env.Fail for activation gen.
func (t *MMIO) fail(gen uint64, err error) {
	if t.activation.Load() != gen {
		return
	}
	t.raiseNeedsReset(logFail, "device failed: %v", err)
}

// raiseNeedsReset tells the driver the device needs a reset: the status
// bit, then a configuration change interrupt, which virtio v1.2 §2.1.2
// requires once DRIVER_OK is set (it always is when this runs).
func (t *MMIO) raiseNeedsReset(kind uint32, format string, args ...any) {
	t.needsReset.Store(true)
	t.isr.Or(InterruptConfigChange)
	t.irq.Trigger()
	t.logOnce(kind, format, args...)
}

func (t *MMIO) logOnce(kind uint32, format string, args ...any) {
	if t.logged.Or(kind)&kind == 0 {
		t.logf("virtio-mmio: "+format, args...)
	}
}
