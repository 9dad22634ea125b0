package virtio

import (
	"fmt"
)

// QueueState is what a snapshot keeps of one queue beyond what the driver
// wrote to the transport: the device's indices. The rings themselves are
// in guest RAM, which the snapshot saves whole.
type QueueState struct {
	LastAvail uint16
	UsedIdx   uint16
	Signalled uint16
}

// State returns the queue's indices for a snapshot, taken while no worker
// uses the queue (the device is paused). Chains the device popped but had
// not returned, and used elements it added but had not published, are
// given back to the available ring: a restored device processes them
// again, since the driver has not seen them completed. That is exact for
// devices that complete chains in order (blk and net do) and is why a
// snapshot is taken when the guest is idle.
func (q *Queue) State() QueueState {
	if !q.ready {
		return QueueState{}
	}
	return QueueState{LastAvail: q.published, UsedIdx: q.published, Signalled: q.signalled}
}

// restoreState sets the indices of a queue Setup just made ready.
func (q *Queue) restoreState(s QueueState) error {
	if !q.ready {
		return fmt.Errorf("virtqueue: state for a queue that is not set up")
	}
	if d := s.LastAvail - s.UsedIdx; d > q.size {
		return fmt.Errorf("virtqueue: %d chains in flight in a queue of %d", d, q.size)
	}
	q.lastAvail, q.shadowAvail = s.LastAvail, s.LastAvail
	q.usedIdx, q.published, q.signalled = s.UsedIdx, s.UsedIdx, s.Signalled
	return nil
}

// TransportQueueState is one queue of a TransportState: the queue
// registers the driver wrote and the device's indices.
type TransportQueueState struct {
	Num    uint32
	Ready  bool
	Desc   uint64
	Driver uint64
	Device uint64
	Ring   QueueState
}

// TransportState is what a snapshot keeps of the part every transport
// shares (virtio-mmio's registers; virtio-pci's common configuration): the
// registers, the negotiated features and every queue. The device behind
// it keeps nothing else that a guest idle at the snapshot depends on
// (blk and net are stateless between requests); its identity (type,
// offered features, queue count) is recorded so a restore onto another
// device is refused.
type TransportState struct {
	Type               DeviceType
	OfferedFeatures    uint64
	Status             uint32
	NeedsReset         bool
	ISR                uint32
	ConfigGen          uint32
	DeviceFeaturesSel  uint32
	DriverFeaturesSel  uint32
	DriverFeatures     uint64
	DriverFeaturesHigh bool
	QueueSel           uint32
	Queues             []TransportQueueState
}

// Pause stops the device's workers, keeping the negotiated state and the
// queues' indices, so State can be taken; the transport ignores register
// writes afterwards (it is as closed, without the reset). The machine
// pauses a transport only once its vCPUs are stopped.
func (t *transport) Pause() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if t.activated {
		t.dev.Reset()
		t.activated = false
	}
	t.closed = true
}

// State returns the transport's state; call it after Pause.
func (t *transport) State() TransportState {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := TransportState{
		Type:               t.dev.Type(),
		OfferedFeatures:    t.features,
		Status:             t.status,
		NeedsReset:         t.needsReset.Load(),
		ISR:                t.isr.Load(),
		ConfigGen:          t.configGen.Load(),
		DeviceFeaturesSel:  t.deviceFeaturesSel,
		DriverFeaturesSel:  t.driverFeaturesSel,
		DriverFeatures:     t.driverFeatures,
		DriverFeaturesHigh: t.driverFeaturesHigh,
		QueueSel:           t.queueSel,
	}
	for i, r := range t.qregs {
		s.Queues = append(s.Queues, TransportQueueState{
			Num: r.num, Ready: r.ready, Desc: r.desc, Driver: r.driver, Device: r.device,
			Ring: t.queues[i].State(),
		})
	}
	return s
}

// Restore puts a freshly made transport in state s and, if the driver
// had the device running (DRIVER_OK, neither FAILED nor needing a reset),
// sets its queues up at their saved indices and activates the device,
// then signals every ready queue once so requests the driver posted
// before the snapshot are seen, and interrupts the driver once so
// completions it was not told about are seen too. A state for another
// kind of device, or one whose queues do not fit guest memory, is an
// error and the transport stays reset.
func (t *transport) Restore(s TransportState) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.activated || t.status != 0 {
		return fmt.Errorf("%s: restore into a transport in use", t.name)
	}
	if s.Type != t.dev.Type() {
		return fmt.Errorf("%s: snapshot has device type %d, this is type %d", t.name, s.Type, t.dev.Type())
	}
	if s.OfferedFeatures != t.features {
		return fmt.Errorf("%s type %d: snapshot's device offered features %#x, this one offers %#x", t.name, s.Type, s.OfferedFeatures, t.features)
	}
	if len(s.Queues) != len(t.qregs) {
		return fmt.Errorf("%s type %d: snapshot has %d queues, device has %d", t.name, s.Type, len(s.Queues), len(t.qregs))
	}
	if s.DriverFeatures&^t.features != 0 {
		return fmt.Errorf("%s type %d: snapshot negotiated features %#x beyond the offered %#x", t.name, s.Type, s.DriverFeatures, t.features)
	}
	t.status = s.Status & statusDriverBits
	t.needsReset.Store(s.NeedsReset)
	t.isr.Store(s.ISR & (InterruptUsedBuffer | InterruptConfigChange))
	t.configGen.Store(s.ConfigGen)
	t.deviceFeaturesSel, t.driverFeaturesSel = s.DeviceFeaturesSel, s.DriverFeaturesSel
	t.driverFeatures, t.driverFeaturesHigh = s.DriverFeatures, s.DriverFeaturesHigh
	t.queueSel = s.QueueSel
	for i, q := range s.Queues {
		t.qregs[i] = queueRegs{num: q.Num, ready: q.Ready, desc: q.Desc, driver: q.Driver, device: q.Device}
	}
	running := t.status&StatusDriverOK != 0 && t.status&StatusFeaturesOK != 0 &&
		t.status&StatusFailed == 0 && !s.NeedsReset
	if !running {
		return nil
	}
	rings := make([]QueueState, len(s.Queues))
	for i, q := range s.Queues {
		rings[i] = q.Ring
	}
	t.activateAt(rings)
	if t.needsReset.Load() {
		t.reset()
		return fmt.Errorf("%s type %d: the restored queues could not be set up (see the log)", t.name, s.Type)
	}
	for i, q := range s.Queues {
		if q.Ready {
			t.notifiers[i].Signal()
		}
	}
	// And one used-buffer interrupt. A snapshot saves the vCPUs, whose
	// local APICs hold the interrupts delivered to them, as they stop,
	// and pauses the devices only afterwards: a completion in between is
	// in the saved used ring and counted as signalled, but its interrupt
	// is in no saved vCPU, and with EVENT_IDX nothing later would send
	// it (a receive queue would stall for good). A spurious one costs the
	// driver a look at its used rings.
	t.usedBuffer()
	return nil
}
