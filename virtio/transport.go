package virtio

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// transport is what every virtio transport shares (virtio v1.2 §3.1 and
// §2): feature negotiation, the device status state machine, the
// driver's queue setup, activation and reset. MMIO and PCI differ only in
// how a driver reaches these (a register window or a PCI capability
// structure) and in how an interrupt leaves (a line or an MSI-X message),
// so each embeds a transport and maps its registers onto it.
type transport struct {
	name      string // "virtio-mmio" or "virtio-pci", for errors and logs
	dev       Device
	mem       Memory
	notifiers []Notifier
	queues    []*Queue
	features  uint64 // dev.Features(), fixed so negotiation sees one set
	logf      func(format string, args ...any)
	interrupt func() // usedBuffer bound once, so Env.Interrupt never allocates
	// raise delivers an interrupt of the given cause (InterruptUsedBuffer
	// or InterruptConfigChange) the way the concrete transport does. It
	// is called from device goroutines and under mu, so it must take
	// neither mu nor anything a device's Reset waits on.
	raise func(cause uint32)

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
	qregs              []queueRegs
	activated          bool // dev.Activate was called since the last reset
	closed             bool
	// onReset, when set, runs at the end of every reset with t.mu held:
	// the concrete transport clears its own driver-written registers.
	onReset func()
}

// queueRegs is what the driver wrote for one queue: nothing is checked
// until DRIVER_OK hands it to Queue.Setup.
type queueRegs struct {
	num                  uint32
	ready                bool
	desc, driver, device uint64
}

// queueField names a driver-written queue register, whatever the
// transport calls it.
type queueField int

const (
	qfNum queueField = iota
	qfReady
	qfDescLow
	qfDescHigh
	qfDriverLow
	qfDriverHigh
	qfDeviceLow
	qfDeviceHigh
)

// init checks dev against what the transports implement and sets t up
// for it; raise is the concrete transport's interrupt delivery.
func (t *transport) init(name string, dev Device, mem Memory, notifiers []Notifier, logf func(string, ...any), raise func(uint32)) error {
	if dev == nil || mem == nil {
		return fmt.Errorf("%s: nil device or memory", name)
	}
	typ := dev.Type()
	features := dev.Features()
	if features&(1<<FeatureVersion1) == 0 {
		return fmt.Errorf("%s type %d: device does not offer VIRTIO_F_VERSION_1 (features %#x); only modern devices are supported", name, typ, features)
	}
	if f := features & (1<<featureRingPacked | 1<<featureNotificationData | 1<<featureRingReset); f != 0 {
		return fmt.Errorf("%s type %d: device offers features %#x the transport does not implement", name, typ, f)
	}
	maxes := dev.QueueMax()
	if len(maxes) == 0 {
		return fmt.Errorf("%s type %d: device has no queues", name, typ)
	}
	if len(notifiers) != len(maxes) {
		return fmt.Errorf("%s type %d: %d notifiers for %d queues", name, typ, len(notifiers), len(maxes))
	}
	t.name, t.dev, t.mem = name, dev, mem
	t.notifiers = append([]Notifier(nil), notifiers...)
	t.queues = make([]*Queue, len(maxes))
	t.features = features
	t.logf = logf
	t.qregs = make([]queueRegs, len(maxes))
	for i, m := range maxes {
		// A split queue's size is a power of 2 up to 32768 (virtio v1.2
		// §2.7), and Linux sizes its rings at exactly the maximum.
		if m == 0 || m&(m-1) != 0 || m > 32768 {
			return fmt.Errorf("%s type %d: queue %d: maximum size %d is not a power of 2 up to 32768", name, typ, i, m)
		}
		if notifiers[i] == nil {
			return fmt.Errorf("%s type %d: queue %d: nil notifier", name, typ, i)
		}
		t.queues[i] = NewQueue(m)
		t.qregs[i].num = uint32(m)
	}
	if t.logf == nil {
		t.logf = func(string, ...any) {}
	}
	t.raise = raise
	t.interrupt = t.usedBuffer
	return nil
}

// Close resets the device, stopping its workers, and makes the transport
// ignore further register writes. It is idempotent.
func (t *transport) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.reset()
	t.closed = true
}

// notify is a queue notification that arrived as a register write
// rather than through the notifier's ioeventfd.
func (t *transport) notify(q uint32) {
	if q < uint32(len(t.notifiers)) {
		t.notifiers[q].Signal()
	} else {
		t.logOnce(logNoQueue, "notify of queue %d, device has %d", q, len(t.notifiers))
	}
}

// deviceFeatureWord is word DeviceFeaturesSel of the offered features;
// t.mu is held.
func (t *transport) deviceFeatureWord() uint32 {
	switch t.deviceFeaturesSel {
	case 0:
		return uint32(t.features)
	case 1:
		return uint32(t.features >> 32)
	}
	return 0
}

// readStatus is the device status with DEVICE_NEEDS_RESET; t.mu is held.
func (t *transport) readStatus() uint32 {
	st := t.status
	if t.needsReset.Load() {
		st |= StatusDeviceNeedsReset
	}
	return st
}

// writeDriverFeatures stores a word of accepted features. Once
// FEATURES_OK is set the negotiated set is final (virtio v1.2 §3.1.1), so
// later writes are ignored rather than changing features under a
// running device.
func (t *transport) writeDriverFeatures(v uint32) {
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
// v1.2 §4.2.3.2, §4.1.4.3.2); anything else is ignored, so a running
// device's rings never move under it.
func (t *transport) writeQueue(f queueField, v uint32) {
	if t.queueSel >= uint32(len(t.qregs)) {
		t.logOnce(logNoQueue, "write to queue register %d for queue %d, device has %d", f, t.queueSel, len(t.qregs))
		return
	}
	q := &t.qregs[t.queueSel]
	if t.status&StatusDriverOK != 0 || (q.ready && f != qfReady) {
		t.logOnce(logQueueLocked, "write to queue register %d of queue %d while it is in use ignored", f, t.queueSel)
		return
	}
	switch f {
	case qfNum:
		q.num = v
	case qfReady:
		q.ready = v&1 != 0
	case qfDescLow:
		q.desc = setLow(q.desc, v)
	case qfDescHigh:
		q.desc = setHigh(q.desc, v)
	case qfDriverLow:
		q.driver = setLow(q.driver, v)
	case qfDriverHigh:
		q.driver = setHigh(q.driver, v)
	case qfDeviceLow:
		q.device = setLow(q.device, v)
	case qfDeviceHigh:
		q.device = setHigh(q.device, v)
	}
}

func setLow(x uint64, v uint32) uint64  { return x&^0xffffffff | uint64(v) }
func setHigh(x uint64, v uint32) uint64 { return x&0xffffffff | uint64(v)<<32 }

// writeStatus follows the driver through device initialization (virtio
// v1.2 §3.1.1). A driver never clears a bit except by writing 0 (§2.1.2),
// so status only accumulates bits until then.
func (t *transport) writeStatus(v uint32) {
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
// the driver accepts only offered features, and these transports only
// modern drivers (§6.1: VERSION_1).
func (t *transport) checkFeatures() error {
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
func (t *transport) activate() { t.activateAt(nil) }

// activateAt is activate with the queues' indices set from rings (one per
// queue, or nil for fresh queues) before the device starts: a restored
// device's workers must never see the indices at 0.
func (t *transport) activateAt(rings []QueueState) {
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

// reset returns the transport to its state after it was made (virtio
// v1.2 §2.4: the interrupt status and every queue's readiness clear);
// t.mu is held.
func (t *transport) reset() {
	t.activation.Add(1)
	if t.activated {
		t.dev.Reset()
		t.activated = false
	}
	for i, q := range t.queues {
		q.Reset()
		t.qregs[i] = queueRegs{num: uint32(q.Max())}
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
	if t.onReset != nil {
		t.onReset()
	}
}

// usedBuffer is Env.Interrupt.
func (t *transport) usedBuffer() { t.raise(InterruptUsedBuffer) }

// fail is Env.Fail for activation gen.
func (t *transport) fail(gen uint64, err error) {
	if t.activation.Load() != gen {
		return
	}
	t.raiseNeedsReset(logFail, "device failed: %v", err)
}

// raiseNeedsReset tells the driver the device needs a reset: the status
// bit, then a configuration change interrupt, which virtio v1.2 §2.1.2
// requires once DRIVER_OK is set (it always is when this runs).
func (t *transport) raiseNeedsReset(kind uint32, format string, args ...any) {
	t.needsReset.Store(true)
	t.raise(InterruptConfigChange)
	t.logOnce(kind, format, args...)
}

func (t *transport) logOnce(kind uint32, format string, args ...any) {
	if t.logged.Or(kind)&kind == 0 {
		t.logf(t.name+": "+format, args...)
	}
}
