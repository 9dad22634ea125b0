package usernet

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// HeaderSize is the virtio-net header in front of every frame Read
// returns and Write takes: struct virtio_net_hdr_v1 (virtio v1.2 §5.1.6),
// the same as virtio/net.HeaderSize (this package does not import the
// device).
const HeaderSize = 12

// Read waits for a frame the stack sent to the guest and copies it into
// p after a zero virtio-net header (no checksum or segmentation offload
// to describe). A frame longer than p is cut short; the caller, which
// passes a buffer larger than any frame it accepts, sees a read that
// fills p and drops it. Read fails with os.ErrDeadlineExceeded when the
// read deadline passes and with net.ErrClosed after Close.
func (n *Network) Read(p []byte) (int, error) {
	if len(p) < HeaderSize {
		return 0, fmt.Errorf("user network: read buffer of %d bytes is shorter than the %d-byte header", len(p), HeaderSize)
	}
	select {
	case v := <-n.frames:
		return copyFrame(p, v), nil
	case <-n.rdl.wait():
		return 0, os.ErrDeadlineExceeded
	case <-n.done:
		return 0, net.ErrClosed
	}
}

// TryRead is Read without the wait (virtio/net's TryReader): it returns
// the next queued frame, or ok false at once if there is none, so that
// the device signals a burst of frames from the stack once.
func (n *Network) TryRead(p []byte) (int, bool, error) {
	if len(p) < HeaderSize {
		return 0, false, fmt.Errorf("user network: read buffer of %d bytes is shorter than the %d-byte header", len(p), HeaderSize)
	}
	select {
	case <-n.rdl.wait():
		return 0, false, os.ErrDeadlineExceeded
	case <-n.done:
		return 0, false, net.ErrClosed
	default:
	}
	select {
	case v := <-n.frames:
		return copyFrame(p, v), true, nil
	default:
		return 0, false, nil
	}
}

// copyFrame puts frame v into p after a zero virtio-net header, cutting
// it short if p is, and releases v.
func copyFrame(p []byte, v *buffer.View) int {
	clear(p[:HeaderSize])
	c := copy(p[HeaderSize:], v.AsSlice())
	v.Release()
	return HeaderSize + c
}

// Write hands the frame after p's virtio-net header to the stack, which
// processes it before Write returns (replies it makes at once, such as
// ARP's, are queued for Read). Frames for other Ethernet addresses than
// the gateway's and broadcast are dropped, as a switch port with only
// the gateway behind it would. The header is ignored: the guest offers no
// offloads here, so it asks for none. Write fails with
// os.ErrDeadlineExceeded once the write deadline has passed, with
// net.ErrClosed after Close, and for a frame too short to be Ethernet.
func (n *Network) Write(p []byte) (int, error) {
	select {
	case <-n.wdl.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	if len(p) < HeaderSize+header.EthernetMinimumSize {
		return 0, fmt.Errorf("user network: %d-byte frame from the guest is shorter than a virtio-net and an Ethernet header", len(p))
	}
	n.wmu.RLock()
	defer n.wmu.RUnlock()
	select {
	case <-n.done:
		return 0, net.ErrClosed
	default:
	}
	frame := p[HeaderSize:]
	eth := header.Ethernet(frame)
	n.received.Add(1)
	if dst := eth.DestinationAddress(); dst != n.gw.LinkAddress() && dst != header.EthernetBroadcastAddress {
		return len(p), nil
	}
	data := buffer.MakeWithData(frame)
	data.TrimFront(header.EthernetMinimumSize)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: data})
	n.gw.deliver(eth.Type(), pkt)
	pkt.DecRef()
	return len(p), nil
}

// SetOffload accepts only 0: the stack takes no partial checksums and
// no GSO frames, and the device offers none with this backend.
func (n *Network) SetOffload(flags uint32) error {
	if flags != 0 {
		return fmt.Errorf("user network: no offloads (asked for %#x)", flags)
	}
	return nil
}

// SetReadDeadline sets when a Read waiting for a frame gives up; a time
// in the past wakes one at once, the zero time means never.
func (n *Network) SetReadDeadline(t time.Time) error {
	n.rdl.set(t)
	return nil
}

// SetWriteDeadline sets when Write starts failing. Write never blocks,
// so a deadline only matters once it has passed.
func (n *Network) SetWriteDeadline(t time.Time) error {
	n.wdl.set(t)
	return nil
}

// toGuest queues a copy of a frame the gateway endpoint sends, its
// Ethernet header in front, for Read, or drops it when the queue is
// full. It never blocks: it runs on the stack's goroutines, which a guest
// that does not read must not stall.
func (n *Network) toGuest(pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	select {
	case n.frames <- v:
		n.sent.Add(1)
	default:
		v.Release()
		n.dropped.Add(1)
	}
}

// deadline is a settable deadline whose channel is closed while the
// deadline has passed, so a blocked select wakes when it does.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func (d *deadline) init() { d.cancel = make(chan struct{}) }

// set arms the deadline at t, which may be in the past (the channel is
// closed at once) or zero (never).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns the channel that is closed while the deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
