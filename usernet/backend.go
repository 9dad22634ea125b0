package usernet

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vmm-dev/vmm/usernet/vnethdr"
)

// HeaderSize is the virtio-net header in front of every frame Read
// returns and Write takes (package vnethdr), the same as
// virtio/net.HeaderSize (this package does not import the device).
const HeaderSize = vnethdr.Len

// gsoMaxSize is the largest segment the stack builds for the guest, its
// headers included: 64 KiB, the most an IPv4 packet's length field and
// Linux's receive path (GSO_MAX_SIZE) take, as gVisor's own limit for
// its link endpoints (stack.GVisorGSOMaxSize). The TCP sender keeps
// header.TCPTotalHeaderMaximumSize below it.
const gsoMaxSize = 1 << 16

// frame is one frame the stack sent the guest, its Ethernet header in
// front, with the virtio-net header that describes its offloads (all
// zero for a whole, checksummed frame; num_buffers is the device's).
type frame struct {
	v   *buffer.View
	hdr [HeaderSize]byte
}

// Read waits for a frame the stack sent to the guest and copies it into
// p after its virtio-net header. A frame longer than p is cut short; the
// caller, which passes a buffer larger than any frame it accepts, sees a
// read that fills p and drops it. Read fails with os.ErrDeadlineExceeded
// when the read deadline passes and with net.ErrClosed after Close.
func (n *Network) Read(p []byte) (int, error) {
	if len(p) < HeaderSize {
		return 0, fmt.Errorf("user network: read buffer of %d bytes is shorter than the %d-byte header", len(p), HeaderSize)
	}
	for {
		select {
		case f := <-n.frames:
			if m, ok := n.copyFrame(p, f); ok {
				return m, nil
			}
		case <-n.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		case <-n.done:
			return 0, net.ErrClosed
		}
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
	for {
		select {
		case f := <-n.frames:
			if m, ok := n.copyFrame(p, f); ok {
				return m, true, nil
			}
		default:
			return 0, false, nil
		}
	}
}

// copyFrame puts f into p after its virtio-net header, cutting it short
// if p is, and releases f. The header is fitted to the offloads the
// driver takes now (SetOffload), which may not be those of the driver
// the frame was made for (a reset in between): a partial checksum is
// finished here for a driver that takes none, and a segment larger than
// the MTU is dropped for one that takes no TSO (ok false), since a
// driver must never see what it did not negotiate (virtio v1.2
// §5.1.6.4.1). That is a connection made under the earlier driver, gone
// with it.
func (n *Network) copyFrame(p []byte, f frame) (m int, ok bool) {
	defer f.v.Release()
	n.queued.Add(-int64(f.v.Size()))
	flags := n.offload.Load()
	if f.hdr[vnethdr.OffGSOType] != 0 && flags&vnethdr.TunTSO4 == 0 {
		n.dropped.Add(1)
		return 0, false
	}
	copy(p, f.hdr[:])
	c := copy(p[HeaderSize:], f.v.AsSlice())
	if f.hdr[vnethdr.OffFlags]&vnethdr.FNeedsCsum != 0 && flags&vnethdr.TunCsum == 0 {
		if !vnethdr.FinishChecksum(p[HeaderSize:HeaderSize+c], f.hdr[:]) {
			n.dropped.Add(1)
			return 0, false
		}
		clear(p[:HeaderSize])
	}
	return HeaderSize + c, true
}

// Write hands the frame after p's virtio-net header to the stack, which
// processes it before Write returns (replies it makes at once, such as
// ARP's, are queued for Read). Frames for other Ethernet addresses than
// the gateway's and broadcast are dropped, as a switch port with only
// the gateway behind it would. The header is ignored: a TSO frame goes
// to the stack as the one large segment it is, and a partial checksum
// is never checked (see the package doc). Write fails with
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
	if echoElsewhere(eth) {
		n.dropped.Add(1)
		return len(p), nil
	}
	data := buffer.MakeWithData(frame)
	data.TrimFront(header.EthernetMinimumSize)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: data})
	n.gw.deliver(eth.Type(), pkt)
	pkt.DecRef()
	return len(p), nil
}

// SetOffload says which offloaded frames Read may return, as TUN_F_*
// flags: partial checksums (vnethdr.TunCsum) and, with them, TSOv4
// segments (vnethdr.TunTSO4; TunTSO6 and TunTSOECN are accepted and
// never used, as the stack has no IPv6 and sets no CWR). With both,
// the gateway tells the stack it takes large segments
// (gateway.SupportedGSO), which TCP connections look up when they are
// made. Anything else (UFO, USO) is refused.
func (n *Network) SetOffload(flags uint32) error {
	const tso = vnethdr.TunTSO4 | vnethdr.TunTSO6 | vnethdr.TunTSOECN
	if flags&^(vnethdr.TunCsum|tso) != 0 || (flags&tso != 0 && flags&vnethdr.TunCsum == 0) {
		return fmt.Errorf("user network: unsupported offloads %#x", flags)
	}
	n.offload.Store(flags)
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
//
// A TCP segment of a connection made while the driver took offloads
// carries only its pseudo-header's sum, and may be larger than the MTU;
// its virtio-net header says so, and Read fits it to the driver that
// takes it (copyFrame).
func (n *Network) toGuest(pkt *stack.PacketBuffer) {
	var hdr [HeaderSize]byte
	if o := pkt.GSOOptions; o.Type != stack.GSONone && o.NeedsCsum {
		hdr[vnethdr.OffFlags] = vnethdr.FNeedsCsum
		binary.LittleEndian.PutUint16(hdr[vnethdr.OffHdrLen:], uint16(pkt.HeaderSize()))
		binary.LittleEndian.PutUint16(hdr[vnethdr.OffCsumStart:], header.EthernetMinimumSize+o.L3HdrLen)
		binary.LittleEndian.PutUint16(hdr[vnethdr.OffCsumOffset:], o.CsumOffset)
		if pkt.Data().Size() > int(o.MSS) {
			if o.Type != stack.GSOTCPv4 {
				n.dropped.Add(1) // the stack has no IPv6: cannot happen
				return
			}
			hdr[vnethdr.OffGSOType] = vnethdr.GSOTCPv4
			binary.LittleEndian.PutUint16(hdr[vnethdr.OffGSOSize:], o.MSS)
		}
	}
	v := pkt.ToView()
	size := int64(v.Size())
	if n.queued.Add(size) > queueBytes {
		n.queued.Add(-size)
		v.Release()
		n.dropped.Add(1)
		return
	}
	select {
	case n.frames <- frame{v: v, hdr: hdr}:
		n.sent.Add(1)
	default:
		n.queued.Add(-size)
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

// echoElsewhere says whether frame is an ICMP echo request for another
// address than the gateway's or the DNS server's. The stack, which takes
// every address (it stands for the whole outside world), would answer
// it, so ping 8.8.8.8 would pass on a host with no network; vmm-net has
// no ICMP socket to send it on, and slirp without one drops it too.
func echoElsewhere(eth header.Ethernet) bool {
	if eth.Type() != header.IPv4ProtocolNumber {
		return false
	}
	// Every frame of the guest's comes here: the protocol byte first,
	// which rules out TCP and UDP at the cost of one load.
	ip := header.IPv4(eth[header.EthernetMinimumSize:])
	if len(ip) < header.IPv4MinimumSize || ip.TransportProtocol() != header.ICMPv4ProtocolNumber || !ip.IsValid(len(ip)) || ip.FragmentOffset() != 0 {
		return false
	}
	if dst := ip.DestinationAddress(); dst == tcpip.AddrFrom4(gatewayIP.As4()) || dst == tcpip.AddrFrom4(dnsIP.As4()) {
		return false
	}
	icmp := header.ICMPv4(ip.Payload())
	return len(icmp) >= header.ICMPv4MinimumSize && icmp.Type() == header.ICMPv4Echo
}
