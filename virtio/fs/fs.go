// Package fs is the virtio file system device (virtio v1.2 §5.11): it
// shares a host directory with the guest, which mounts it with
// "mount -t virtiofs TAG DIR". The device carries FUSE requests between
// its virtqueues and the file server of package share, which is where
// every file is touched and where the share is kept confined; this
// package never looks inside a request.
//
// Queues: queue 0 is the high-priority queue, on which Linux sends
// FORGET (which has no reply), and queue 1 the one request queue
// (num_request_queues = 1). More request queues would only spread the
// same requests over more goroutines: Linux maps them to CPUs, but the
// server runs requests concurrently anyway, so one queue with several
// requests in flight gives the guest the same parallelism.
//
// Each request queue has a worker that pops chains and hands them to
// maxInFlight handler goroutines, which run the request (a FUSE request
// may wait on the host disk for long, so one slow request must not stall
// the others) and complete the chain. Replies therefore complete out of
// order, which virtio allows and Linux expects: it matches a reply to
// its request by the chain, not by position. The handlers share the
// queue under a per-queue mutex, taken only around Pop and Push.
//
// A request's chain is the readable fuse_in_header and arguments (and
// WRITE's data), then the writable space for fuse_out_header and the
// reply; the server reads and writes them in place as virtio.Buffers,
// so READ and WRITE data move between the host file and guest memory
// with one copy, in the kernel. The used length is the reply's length.
// Guest mistakes inside a request get a FUSE error reply; only a
// malformed queue (what Queue.Pop rejects) fails the device, through
// Env.Fail, until the driver resets it. A reset (and Close) also ends
// the FUSE session: every host file the guest had open or looked up is
// closed, and the guest's next mount starts with INIT.
//
// Wiring it into vmm is what machine does for virtio-blk: New, then
// virtio.NewMMIO(dev, ...) with one notifier per QueueMax entry, and
// Close after the transport is closed.
package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"sync"
	"unicode/utf8"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/share"
)

// TypeFS is the virtio device ID of a file system device (virtio v1.2
// §5.11.1).
const TypeFS virtio.DeviceType = 26

// TagLen is the size of the tag field in the configuration space: the
// tag is UTF-8, NUL-padded, and not NUL-terminated when it is this long
// (virtio v1.2 §5.11.4).
const TagLen = 36

// Offsets in struct virtio_fs_config (virtio v1.2 §5.11.4),
// little-endian. notify_buf_size follows only with
// VIRTIO_FS_F_NOTIFICATION, which is not offered.
const (
	cfgTag              = 0
	cfgNumRequestQueues = TagLen // le32
	configSize          = TagLen + 4
)

const (
	// hiprioQueue and requestQueue are the queue indices (virtio v1.2
	// §5.11.2).
	hiprioQueue  = 0
	requestQueue = 1
	numQueues    = 2

	// hiprioSize and requestSize are the queues' maximum sizes. Linux
	// caps a request's pages at the request queue's size less
	// FUSE_HEADER_OVERHEAD (4) descriptors (fs/fuse/virtio_fs.c,
	// virtio_fs_get_tree), indirect descriptors or not: with 256
	// entries a 1 MiB WRITE or READ (MaxWrite, 256 pages) was split in
	// two, as measured with Debian's 6.1. 512, the next power of two a
	// split queue's size must be (virtio v1.2 §2.7), lets it through
	// whole.
	hiprioSize  = 128
	requestSize = 512

	// maxInFlight is how many requests of the request queue run at
	// once: enough for a parallel build's file operations to overlap
	// on the host, few enough to bound the descriptors and memory a
	// guest can tie up (each holds a MaxChain-buffer chain of its own).
	maxInFlight = 16
)

// Config configures New.
type Config struct {
	// Tag is the name the guest mounts the share by: 1 to 36 bytes of
	// UTF-8 without NUL.
	Tag string
	// Dir is the host directory to share. It must exist, be a directory
	// and be readable.
	Dir string
	// ReadOnly refuses every change to Dir with EROFS, on the host side
	// whatever the guest mounts with.
	ReadOnly bool
	// Logf reports guest errors (malformed requests) at most once a
	// second; nil means log.Printf.
	Logf func(format string, args ...any)
	// Budget bounds the host descriptors the guest holds through every
	// share of one vmm (share.Options.Budget); nil: this share's own.
	Budget *share.Budget
}

// server answers FUSE requests: a *share.Server, or a fake in tests.
type server interface {
	// Handle answers the request in in with a reply in out and returns
	// the reply's length (0 for none); it may run concurrently.
	Handle(in, out virtio.Buffers) int
	// Reset ends the FUSE session.
	Reset()
	Close() error
}

// Device is a virtio-fs device sharing one directory.
type Device struct {
	tag      string
	srv      server
	features uint64
	config   [configSize]byte

	// mu serializes Activate, Reset and Close; workers never take it.
	mu      sync.Mutex
	active  bool
	stop    chan struct{} // closed by Reset to stop the workers
	wg      sync.WaitGroup
	workers []*worker
}

// New checks the configuration and opens the directory. Errors are one
// line naming the tag or the directory.
func New(c Config) (*Device, error) {
	if err := checkTag(c.Tag); err != nil {
		return nil, fmt.Errorf("virtio-fs tag %q: %w", c.Tag, err)
	}
	logf := c.Logf
	if logf == nil {
		logf = log.Printf
	}
	srv, err := share.New(share.Options{Dir: c.Dir, ReadOnly: c.ReadOnly, Logf: logf, Budget: c.Budget})
	if err != nil {
		return nil, fmt.Errorf("virtio-fs %s: %w", c.Tag, err)
	}
	return newDevice(c.Tag, srv), nil
}

func newDevice(tag string, srv server) *Device {
	d := &Device{
		tag:      tag,
		srv:      srv,
		features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc,
	}
	copy(d.config[cfgTag:], tag)
	binary.LittleEndian.PutUint32(d.config[cfgNumRequestQueues:], numQueues-1)
	return d
}

func checkTag(tag string) error {
	switch {
	case tag == "":
		return errors.New("empty")
	case len(tag) > TagLen:
		return fmt.Errorf("longer than %d bytes", TagLen)
	case !utf8.ValidString(tag):
		return errors.New("not UTF-8")
	}
	for _, r := range tag {
		if r == 0 {
			return errors.New("contains NUL")
		}
	}
	return nil
}

// Tag is the tag the guest mounts the share by.
func (d *Device) Tag() string { return d.tag }

// Close stops the device and closes the shared directory.
func (d *Device) Close() error {
	d.Reset()
	if err := d.srv.Close(); err != nil {
		return fmt.Errorf("virtio-fs %s: %w", d.tag, err)
	}
	return nil
}

// Type is TypeFS.
func (d *Device) Type() virtio.DeviceType { return TypeFS }

// Features is VERSION_1, EVENT_IDX and INDIRECT_DESC: the device has no
// feature bits of its own that it offers (virtio v1.2 §5.11.3).
func (d *Device) Features() uint64 { return d.features }

// QueueMax is the high-priority queue and one request queue.
func (d *Device) QueueMax() []uint16 { return []uint16{hiprioSize, requestSize} }

// ReadConfig reads struct virtio_fs_config, which never changes.
func (d *Device) ReadConfig(off uint64, data []byte) {
	virtio.ReadFixedConfig(d.config[:], off, data)
}

// WriteConfig ignores the write: every field is read-only (virtio v1.2
// §5.11.4.1).
func (d *Device) WriteConfig(off uint64, data []byte) {}

// Activate starts a worker for each queue the driver enabled.
func (d *Device) Activate(env virtio.Env) error {
	if len(env.Queues) != numQueues || len(env.Notifiers) != numQueues {
		return fmt.Errorf("virtio-fs %s: %d queues and %d notifiers, want %d", d.tag, len(env.Queues), len(env.Notifiers), numQueues)
	}
	if env.Interrupt == nil || env.Fail == nil {
		return fmt.Errorf("virtio-fs %s: incomplete environment", d.tag)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return fmt.Errorf("virtio-fs %s: already active", d.tag)
	}
	d.active = true
	d.stop = make(chan struct{})
	d.workers = d.workers[:0]
	for i, q := range env.Queues {
		if q == nil || !q.Ready() || env.Notifiers[i] == nil {
			continue
		}
		inFlight := maxInFlight
		if i == hiprioQueue {
			// FORGETs take no time; one at a time keeps them in
			// the order the guest sent them.
			inFlight = 1
		}
		w := newWorker(d, i, q, env.Notifiers[i], env.Interrupt, env.Fail, inFlight)
		d.workers = append(d.workers, w)
		d.wg.Add(1)
		go w.run()
	}
	return nil
}

// Reset stops the workers, waits for the requests in flight to complete,
// and ends the FUSE session. Requests the workers had not reached stay
// in the available ring; the transport resets the queues.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return
	}
	close(d.stop)
	for _, w := range d.workers {
		w.n.Signal()
	}
	d.wg.Wait()
	d.workers = d.workers[:0]
	d.srv.Reset()
	d.active = false
}
