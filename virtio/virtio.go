// Package virtio implements the device side of virtio 1.x (OASIS virtio
// v1.2): split virtqueues, the two transports vmm offers (virtio-mmio,
// mmio.go, for kernels without PCI; virtio-pci, pci.go, where an
// interrupt costs the guest no register accesses) and the contract
// between a transport and a device (Device, Env).
//
// It never imports kvm: guest RAM is a Memory, the interrupt line an
// Interrupt and queue notifications a Notifier, so every path a guest can
// drive is unit-tested and fuzzed on plain byte slices. In vmm the
// machine package backs them with guestmem, an irqfd and an ioeventfd.
package virtio

// Memory is guest RAM as a device sees it. Slice returns the n bytes at
// guest-physical address addr, aliasing RAM, or an error unless all of
// them are RAM; it must not allocate. guestmem.Memory satisfies it.
type Memory interface {
	Slice(addr, n uint64) ([]byte, error)
}

// Interrupt is the device's interrupt line to the guest; in vmm an irqfd,
// so Trigger never blocks on a vCPU. Edge semantics: each Trigger is one
// interrupt, and the transport's interrupt status register says why.
type Interrupt interface {
	Trigger()
}

// Notifier carries the driver's "available buffers" notifications for one
// queue; in vmm an ioeventfd. Notifications coalesce: Wait returns once
// after any number of them.
type Notifier interface {
	// Wait blocks until the queue was notified (or Signal was called)
	// since the previous Wait returned. An error means the notifier is
	// closed and the worker should exit.
	Wait() error
	// Signal wakes Wait: the transport uses it for a notification that
	// arrived as a register write, and to wake a worker it stops.
	Signal()
}

// DeviceType is a virtio device ID (virtio v1.2 §5).
type DeviceType uint32

// Device IDs vmm implements (virtio v1.2 §5).
const (
	TypeNet     DeviceType = 1
	TypeBlock   DeviceType = 2
	TypeConsole DeviceType = 3
)

// Device status bits (virtio v1.2 §2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 64
	StatusFailed           = 128
)

// Reserved feature bits (virtio v1.2 §6). They are bit numbers: the
// feature word has 1<<F set.
const (
	FeatureIndirectDesc = 28 // VIRTIO_F_INDIRECT_DESC
	FeatureEventIdx     = 29 // VIRTIO_F_EVENT_IDX
	FeatureVersion1     = 32 // VIRTIO_F_VERSION_1
)

// Interrupt status bits (virtio v1.2 §4.2.2, InterruptStatus).
const (
	InterruptUsedBuffer   = 1
	InterruptConfigChange = 2
)

// Device is one virtio device, independent of its transport.
//
// The transport calls Type, Features, QueueMax and the config accessors
// from vCPU threads at any time; Activate once the driver sets DRIVER_OK;
// Reset when the driver writes status 0 (or the machine stops), after
// which Activate may be called again.
type Device interface {
	Type() DeviceType
	// Features is every feature bit the device offers, device-specific
	// and reserved ones (VERSION_1, EVENT_IDX, INDIRECT_DESC) alike.
	Features() uint64
	// QueueMax is the largest size of each queue; its length is the
	// number of queues.
	QueueMax() []uint16
	// ReadConfig and WriteConfig access the device-specific
	// configuration space at offset off; bytes beyond it read as zero
	// and writes there are ignored.
	ReadConfig(off uint64, data []byte)
	WriteConfig(off uint64, data []byte)
	// Activate starts the device's workers. It returns an error when the
	// driver's setup is unusable (the transport then sets
	// DEVICE_NEEDS_RESET).
	Activate(env Env) error
	// Reset stops the workers, waits for them to exit, and returns the
	// device to its state before Activate.
	Reset()
}

// ReadFixedConfig is Device.ReadConfig for a configuration space that
// never changes (config): the bytes at off, zeros past its end.
func ReadFixedConfig(config []byte, off uint64, data []byte) {
	n := 0
	if off < uint64(len(config)) {
		n = copy(data, config[off:])
	}
	clear(data[n:])
}

// Env is what a device works with once activated.
type Env struct {
	// Features is the negotiated feature set.
	Features uint64
	Mem      Memory
	// Queues and Notifiers have one entry per queue, in queue order.
	// Queues the driver did not enable have Ready() == false; the device
	// skips them.
	Queues    []*Queue
	Notifiers []Notifier
	// Interrupt reports used buffers: it sets the used-buffer bit in the
	// transport's interrupt status and triggers the line. It allocates
	// nothing and may be called from any goroutine.
	Interrupt func()
	// Fail reports a driver error the device cannot recover from (a
	// malformed chain, a queue out of RAM): the transport sets
	// DEVICE_NEEDS_RESET and raises a configuration-change interrupt, as
	// virtio v1.2 §2.1.2 asks. The device stops using the queue.
	Fail func(error)
}
