// Package net is the virtio network device (virtio v1.2 §5.1), backed by
// a host TAP interface (package tap) or anything else that moves one
// Ethernet frame per Read or Write with a virtio-net header in front,
// such as the user-mode network of package usernet.
//
// Two queues, receive (0) and transmit (1), each served by its own
// goroutine woken by the queue's Notifier. There is no control queue and
// no multiqueue: the guest gets a MAC address, a link that is always up,
// and checksum and segmentation offloads both ways, which is what makes a
// TAP fast (64 KiB GSO frames cross the boundary instead of 1500-byte
// ones).
//
// The header is the same 12-byte struct virtio_net_hdr_v1 on both sides
// (the TAP is opened with IFF_VNET_HDR and a header size of 12), so the
// device never interprets offload metadata: it forwards the guest's
// header to the TAP, whose kernel validates it, and the TAP's header to
// the guest, only filling in num_buffers.
//
// Transmit sends each chain as one frame, since a TAP takes exactly one
// frame per write: with a backend that has WriteVectors (the TAP) it
// hands over the chain's readable buffers in guest memory, one writev,
// no copy of ours; otherwise it gathers them into one preallocated
// buffer and writes that. Receive reads each frame into a preallocated staging
// buffer first and copies it into guest buffers from there: the frame's
// length is unknown until the read returns, and with mergeable receive
// buffers (VIRTIO_NET_F_MRG_RXBUF) the number of guest chains it needs,
// and so the num_buffers value in its header, depends on that length.
// Reading straight into guest memory would need a readv over buffers
// popped before knowing whether they are enough.
//
// The backend's Read and Write block in Go's netpoller (package tap opens
// the TAP non-blocking and wraps it with os.NewFile), so a worker waiting
// for a frame or for room to write parks without holding a thread and
// without tickers or SIGIO. A TAP's readiness is edge-like from the
// poller's point of view, so the receive worker keeps reading until it
// must stop for lack of guest buffers, and then does not read at all
// until the guest posts some: frames queue in the host kernel (and are
// dropped there once the TAP's queue is full) rather than here.
//
// A backend that can also read without waiting (TryReader: the TAP, the
// user network) lets the receive worker tell a burst from a lull: frames
// already queued are placed one after another and the driver is
// interrupted once for them (at most maxRXBurst to an interrupt), where
// an interrupt per frame cost the guest an exit or two each.
//
// Stopping a worker blocked in Read or Write is what Reset needs the
// backend's deadlines for: it sets a deadline in the past, which wakes
// the call with os.ErrDeadlineExceeded, waits for the workers, then
// clears the deadlines for the next Activate. Closing the backend
// instead would make a driver reset (rmmod and modprobe virtio_net, or
// kexec) lose the interface.
package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmm-dev/vmm/virtio"
)

// Device feature bits (virtio v1.2 §5.1.3), as bit numbers.
const (
	FeatureCsum      = 0  // VIRTIO_NET_F_CSUM: the driver may send partial checksums
	FeatureGuestCsum = 1  // VIRTIO_NET_F_GUEST_CSUM: the driver accepts partial checksums
	FeatureMAC       = 5  // VIRTIO_NET_F_MAC: mac in the config space is valid
	FeatureGuestTSO4 = 7  // VIRTIO_NET_F_GUEST_TSO4: the driver accepts TSOv4 frames
	FeatureGuestTSO6 = 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN  = 9  // VIRTIO_NET_F_GUEST_ECN: ... with ECN
	FeatureHostTSO4  = 11 // VIRTIO_NET_F_HOST_TSO4: the driver may send TSOv4 frames
	FeatureHostTSO6  = 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostECN   = 13 // VIRTIO_NET_F_HOST_ECN
	FeatureMrgRxbuf  = 15 // VIRTIO_NET_F_MRG_RXBUF: a frame may span RX chains
	FeatureStatus    = 16 // VIRTIO_NET_F_STATUS: status in the config space is valid
)

// StatusLinkUp is VIRTIO_NET_S_LINK_UP in the config space's status field
// (virtio v1.2 §5.1.4).
const StatusLinkUp = 1

// HeaderSize is the length of struct virtio_net_hdr (virtio v1.2 §5.1.6)
// with num_buffers, which VERSION_1 devices always use whether or not
// MRG_RXBUF is negotiated.
const HeaderSize = 12

// Offsets in the header (struct virtio_net_hdr, §5.1.6): u8 flags and
// le16 num_buffers.
const (
	hdrFlags      = 0
	hdrNumBuffers = 10
)

// Queue indices (virtio v1.2 §5.1.2): receiveq1, transmitq1. No controlq.
const (
	QueueRX = 0
	QueueTX = 1
)

// DefaultQueueSize is each queue's maximum size unless Options says
// otherwise: Linux's virtio-net default and QEMU's.
const DefaultQueueSize = 256

// maxFrame bounds a frame without its header: a 64 KiB GSO frame (the
// largest the TAP or Linux's virtio-net driver produces, GSO_MAX_SIZE)
// plus room for an Ethernet header with two VLAN tags. Frames that do
// not fit are dropped.
const maxFrame = 65536 + 64

// bufSize is the TX gather buffer and RX staging buffer size. The RX
// buffer is one byte larger than any acceptable read so that a read
// filling it is known to have been truncated.
const bufSize = HeaderSize + maxFrame

// Offsets in struct virtio_net_config (virtio v1.2 §5.1.4), little-endian.
const (
	cfgMAC        = 0 // u8 mac[6]
	cfgStatus     = 6 // le16 status
	cfgMaxVQPairs = 8 // le16 max_virtqueue_pairs, meaningful only with MQ
	// configSize ends after max_virtqueue_pairs; mtu and the fields after
	// it belong to features not offered and read as zero.
	configSize = 10
)

// TAP offload flags (include/uapi/linux/if_tun.h, TUN_F_*), which
// Backend.SetOffload takes. They are repeated here so this package does
// not depend on tap or on a platform.
const (
	TunCsum   = 0x01 // TUN_F_CSUM
	TunTSO4   = 0x02 // TUN_F_TSO4
	TunTSO6   = 0x04 // TUN_F_TSO6
	TunTSOECN = 0x08 // TUN_F_TSO_ECN
)

// Backend moves frames between the device and the host. Each Read
// returns one whole frame and each Write sends one, both with the
// HeaderSize-byte virtio-net header in front. *tap.Tap satisfies it.
//
// Read and Write are called from different goroutines and may block;
// the deadline setters must wake a blocked call (with an error), which
// is how Reset stops the workers without closing the backend.
type Backend interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	// SetOffload says which offloaded frames Read may return (TUN*
	// flags).
	SetOffload(flags uint32) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// TryReader is a Backend that can also read without waiting: TryRead
// returns the next frame if one is queued and ok false at once if none
// is. With it the receive worker tells the driver about a burst of frames
// once, when the burst ends, instead of after every frame (see runRX).
// *tap.Tap and *usernet.Network satisfy it.
type TryReader interface {
	TryRead(p []byte) (n int, ok bool, err error)
}

// VectorWriter is a Backend that can also send one frame gathered from
// several buffers, as writev(2) does. With it the transmit worker hands
// over the guest's TX buffers as they are, as QEMU's virtio-net does,
// instead of first copying each frame (up to 64 KiB) into its own
// buffer: one copy of every sent byte fewer in the VMM. WriteVectors
// must be done with bufs when it returns (the guest gets them back
// then), and takes at most MaxVectors() of them; longer chains go
// through Write. *tap.Tap satisfies it.
type VectorWriter interface {
	WriteVectors(bufs [][]byte) (int, error)
	MaxVectors() int
}

// Options configure New.
type Options struct {
	// MAC is the guest's address, offered with VIRTIO_NET_F_MAC. The
	// zero value means none is offered and the guest driver picks a
	// random one. See DefaultMAC.
	MAC [6]byte
	// QueueSize is the largest size of each queue; 0 means
	// DefaultQueueSize. Other values are rounded down to a power of 2 and
	// capped at 32768 (virtio v1.2 §2.7).
	QueueSize uint16
	// Logf reports host errors and guest mistakes, at most once a second
	// per worker; nil means log.Printf.
	Logf func(format string, args ...any)
	// NoOffload keeps checksum and segmentation offloads (CSUM,
	// GUEST_CSUM and the TSO and ECN bits) off the features, for a
	// backend that only moves whole, checksummed frames of at most the
	// link's MTU: the guest then checksums and segments everything
	// itself, and the backend's SetOffload is only ever asked for none.
	NoOffload bool
}

// offloadFeatures are the features NoOffload withholds.
const offloadFeatures = 1<<FeatureCsum |
	1<<FeatureGuestCsum |
	1<<FeatureGuestTSO4 |
	1<<FeatureGuestTSO6 |
	1<<FeatureGuestECN |
	1<<FeatureHostTSO4 |
	1<<FeatureHostTSO6 |
	1<<FeatureHostECN

// Stats count frames since New. A frame is dropped when it is malformed
// or too large, when the guest's buffers cannot hold it, or when the
// backend fails it.
type Stats struct {
	TxFrames, TxDropped uint64
	RxFrames, RxDropped uint64
}

// Device is one virtio-net device. Create it with New.
type Device struct {
	b        Backend
	try      TryReader    // b, if it is one; nil otherwise
	vw       VectorWriter // b, if it is one; nil otherwise
	features uint64
	config   [configSize]byte
	qsize    uint16
	logf     func(format string, args ...any)

	txFrames, txDropped atomic.Uint64
	rxFrames, rxDropped atomic.Uint64

	mu      sync.Mutex // serialises Activate and Reset
	running bool
	stop    atomic.Bool
	wg      sync.WaitGroup
	env     virtio.Env
	rxq     *virtio.Queue
	txq     *virtio.Queue

	tx txState
	rx rxState
}

// New returns a device moving frames through b.
func New(b Backend, o Options) *Device {
	d := &Device{b: b, logf: o.Logf}
	d.try, _ = b.(TryReader)
	d.vw, _ = b.(VectorWriter)
	if d.logf == nil {
		d.logf = log.Printf
	}
	d.qsize = queueSize(o.QueueSize)
	d.features = 1<<virtio.FeatureVersion1 |
		1<<virtio.FeatureEventIdx |
		1<<virtio.FeatureIndirectDesc |
		1<<FeatureMrgRxbuf |
		1<<FeatureStatus
	if !o.NoOffload {
		d.features |= offloadFeatures
	}
	if o.MAC != ([6]byte{}) {
		d.features |= 1 << FeatureMAC
		copy(d.config[cfgMAC:], o.MAC[:])
	}
	binary.LittleEndian.PutUint16(d.config[cfgStatus:], StatusLinkUp)
	binary.LittleEndian.PutUint16(d.config[cfgMaxVQPairs:], 1)

	d.tx.buf = make([]byte, bufSize)
	d.rx.buf = make([]byte, bufSize+1)
	d.rx.heads = make([]uint16, d.qsize)
	d.rx.lens = make([]uint32, d.qsize)
	return d
}

func queueSize(n uint16) uint16 {
	switch {
	case n == 0:
		return DefaultQueueSize
	case n > 1<<15:
		return 1 << 15
	}
	for n&(n-1) != 0 {
		n &= n - 1
	}
	return n
}

// Type is virtio.TypeNet.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features is everything the device offers; the driver may take any
// subset (Linux drops the TSO bits when CSUM is missing, as §5.1.3.1
// requires).
func (d *Device) Features() uint64 { return d.features }

// QueueMax is the maximum size of the RX and TX queues.
func (d *Device) QueueMax() []uint16 { return []uint16{d.qsize, d.qsize} }

// ReadConfig reads struct virtio_net_config; it never changes after New,
// so vCPUs read it without a lock.
func (d *Device) ReadConfig(off uint64, data []byte) {
	virtio.ReadFixedConfig(d.config[:], off, data)
}

// WriteConfig ignores the write: no field of virtio_net_config is
// writable by a VERSION_1 driver (virtio v1.2 §5.1.4.2; the MAC is set
// through the control queue, which is not offered).
func (d *Device) WriteConfig(off uint64, data []byte) {}

// Stats returns the frame counters.
func (d *Device) Stats() Stats {
	return Stats{
		TxFrames:  d.txFrames.Load(),
		TxDropped: d.txDropped.Load(),
		RxFrames:  d.rxFrames.Load(),
		RxDropped: d.rxDropped.Load(),
	}
}

// offloadFlags is what the TAP may hand the driver given the negotiated
// features: every GSO type needs partial checksums too (virtio v1.2
// §5.1.3.1: GUEST_TSO* require GUEST_CSUM), and ECN only qualifies TSO.
// Without GUEST_CSUM the TAP must checksum and segment everything itself.
func offloadFlags(features uint64) uint32 {
	has := func(bit uint) bool { return features&(1<<bit) != 0 }
	if !has(FeatureGuestCsum) {
		return 0
	}
	flags := uint32(TunCsum)
	if has(FeatureGuestTSO4) {
		flags |= TunTSO4
	}
	if has(FeatureGuestTSO6) {
		flags |= TunTSO6
	}
	if flags&(TunTSO4|TunTSO6) != 0 && has(FeatureGuestECN) {
		flags |= TunTSOECN
	}
	return flags
}

// Activate starts the RX and TX workers.
func (d *Device) Activate(env virtio.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return errors.New("net: activated twice without a reset")
	}
	if len(env.Queues) < 2 || len(env.Notifiers) < 2 {
		return fmt.Errorf("net: need 2 queues and notifiers, got %d and %d", len(env.Queues), len(env.Notifiers))
	}
	if env.Queues[QueueRX] == nil || env.Queues[QueueTX] == nil ||
		env.Notifiers[QueueRX] == nil || env.Notifiers[QueueTX] == nil ||
		env.Interrupt == nil || env.Fail == nil {
		return errors.New("net: incomplete environment")
	}

	// The TAP keeps its offloads across activations, so they are always
	// set: to what this driver accepts, or to none.
	flags := offloadFlags(env.Features & d.features)
	if err := d.b.SetOffload(flags); err != nil {
		if flags == 0 {
			return fmt.Errorf("net: disable offloads: %w", err)
		}
		d.logf("net: offloads %#x: %v; continuing without offloads", flags, err)
		if err := d.b.SetOffload(0); err != nil {
			// The TAP could hand the driver frames it never agreed to.
			return fmt.Errorf("net: disable offloads: %w", err)
		}
	}
	// A deadline left by a reset that could not clear it would stop the
	// new workers at once.
	if err := d.b.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("net: clear read deadline: %w", err)
	}
	if err := d.b.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("net: clear write deadline: %w", err)
	}

	d.env = env
	d.rxq, d.txq = env.Queues[QueueRX], env.Queues[QueueTX]
	d.rx.mergeable = env.Features&(1<<FeatureMrgRxbuf) != 0
	d.rx.csum = env.Features&(1<<FeatureGuestCsum) != 0
	d.rx.count, d.rx.off, d.rx.pending, d.rx.burst = 0, 0, false, 0
	d.stop.Store(false)
	d.running = true
	d.wg.Add(2)
	go d.runRX()
	go d.runTX()
	return nil
}

// Reset stops the workers and waits for them. A frame the RX worker was
// holding for lack of guest buffers is dropped with the queues.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return
	}
	d.stop.Store(true)
	// Wake the workers wherever they block: in the backend, or waiting
	// for a notification.
	past := time.Unix(1, 0)
	rerr := d.b.SetReadDeadline(past)
	werr := d.b.SetWriteDeadline(past)
	d.env.Notifiers[QueueRX].Signal()
	d.env.Notifiers[QueueTX].Signal()
	d.wg.Wait()
	if rerr == nil {
		if err := d.b.SetReadDeadline(time.Time{}); err != nil {
			d.logf("net: clear read deadline: %v", err)
		}
	}
	if werr == nil {
		if err := d.b.SetWriteDeadline(time.Time{}); err != nil {
			d.logf("net: clear write deadline: %v", err)
		}
	}
	if d.rx.pending {
		d.rxDropped.Add(1)
	}
	d.rx.count, d.rx.off, d.rx.pending, d.rx.burst = 0, 0, false, 0
	d.env = virtio.Env{}
	d.rxq, d.txq = nil, nil
	d.running = false
}

// limiter lets a worker log at most once a second; each worker has its
// own, so it needs no lock. Callers check allow before formatting, so a
// suppressed message costs no allocation.
type limiter struct {
	last time.Time
}

func (l *limiter) allow() bool {
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < time.Second {
		return false
	}
	l.last = now
	return true
}
