//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"time"
)

// virtio-net (virtio v1.2 §5.1) as this program drives it: queue 0
// receives, queue 1 transmits, every buffer starts with the 12-byte
// struct virtio_net_hdr (num_buffers included, as VERSION_1 has it).
const (
	netRXQueue = 0
	netTXQueue = 1
	netQueues  = 2

	netHdrSize       = 12
	netHdrNumBuffers = 10
	// netRXBufSize is what §5.1.6.3.1 asks of a receive buffer without
	// MRG_RXBUF or guest offloads: 1526 bytes, header included.
	netRXBufSize = 1526

	featNetMAC   = 1 << 5
	featMrgRxbuf = 1 << 15
)

// The user-mode network vmm's -nic user gives the guest (package usernet):
// the gateway answers ARP, and drops frames for other unicast addresses.
var (
	netGuestIP   = [4]byte{10, 0, 2, 15}
	netGatewayIP = [4]byte{10, 0, 2, 2}
	// netNowhere is a locally administered unicast address nobody has:
	// usernet drops frames sent to it without an answer, so a TX case
	// leaves nothing for the next case's RX queue.
	netNowhere = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

// Offsets in bufs.misc that only the net cases use.
const (
	// canaryOff is a small buffer the cases offer in the wrong direction
	// or too short, filled with canaryByte: what the device must not
	// write past (or at all) stays canaryByte.
	canaryOff  = 0x100
	canaryLen  = 64
	canaryByte = 0xa5
)

// arpRequest is a broadcast ARP request (RFC 826) from mac at
// netGuestIP for netGatewayIP, after a zero virtio-net header.
func arpRequest(mac net.HardwareAddr) []byte {
	f := make([]byte, netHdrSize+42)
	e := f[netHdrSize:]
	copy(e[0:6], bytes.Repeat([]byte{0xff}, 6))
	copy(e[6:12], mac)
	binary.BigEndian.PutUint16(e[12:], 0x0806)
	a := e[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], mac)
	copy(a[14:18], netGuestIP[:])
	copy(a[24:28], netGatewayIP[:])
	return f
}

// checkARPReply checks frame (Ethernet, no virtio-net header) is the
// gateway's answer to arpRequest(mac), and returns the gateway's MAC.
func checkARPReply(frame []byte, mac net.HardwareAddr) (net.HardwareAddr, error) {
	if len(frame) < 42 {
		return nil, fmt.Errorf("a %d-byte frame, want an ARP reply (42 bytes or more)", len(frame))
	}
	a := frame[14:]
	switch {
	case !bytes.Equal(frame[0:6], mac):
		return nil, fmt.Errorf("a frame for %v, want one for %v", net.HardwareAddr(frame[0:6]), mac)
	case binary.BigEndian.Uint16(frame[12:]) != 0x0806:
		return nil, fmt.Errorf("a frame of ethertype %#04x, want ARP", binary.BigEndian.Uint16(frame[12:]))
	case binary.BigEndian.Uint16(a[6:]) != 2:
		return nil, fmt.Errorf("ARP operation %d, want a reply", binary.BigEndian.Uint16(a[6:]))
	case !bytes.Equal(a[14:18], netGatewayIP[:]) || !bytes.Equal(a[24:28], netGuestIP[:]):
		return nil, fmt.Errorf("ARP reply from %v to %v, want %v to %v",
			net.IP(a[14:18]), net.IP(a[24:28]), net.IP(netGatewayIP[:]), net.IP(netGuestIP[:]))
	}
	return net.HardwareAddr(bytes.Clone(a[8:14])), nil
}

// silentFrame is a 60-byte Ethernet frame from mac to netNowhere, which
// the user network swallows, after a zero virtio-net header.
func silentFrame(mac net.HardwareAddr) []byte {
	f := make([]byte, netHdrSize+60)
	e := f[netHdrSize:]
	copy(e[0:6], netNowhere)
	copy(e[6:12], mac)
	binary.BigEndian.PutUint16(e[12:], 0x88b5) // IEEE 802 local experimental
	copy(e[14:], "hostile guest frame for nobody")
	return f
}

// netTargets are the two queues of the NIC: pages[0] and pages[1] are
// the RX and TX rings, b the buffers of the attacked queue, arpPage
// where the RX target's provoking ARP request lives.
func netTargets(d *device, mac net.HardwareAddr, pages [2]dmaPage, b bufs, arpPage dmaPage) (rx, tx *target) {
	arp := arpRequest(mac)
	frame := silentFrame(mac)
	rx = &target{
		d: d, queue: netRXQueue, queues: netQueues, rings: pages[:], b: b,
		// Header, then the frame in two pieces: 1526 bytes in all.
		chain: func(r *ring, b bufs) {
			r.setDesc(0, b.hdrAddr(), netHdrSize, descWrite|descNext, 1)
			r.setDesc(1, b.data.phys, 1024, descWrite|descNext, 2)
			r.setDesc(2, b.data.phys+1024, netRXBufSize-netHdrSize-1024, descWrite, 0)
		},
		// An RX queue is only looked at when a frame comes: ask the
		// gateway for its address on the (honest) TX queue.
		provoke: func(d *device, rings []*ring) {
			copy(arpPage.b, arp)
			tx := rings[netTXQueue]
			tx.setDesc(0, arpPage.phys, uint32(len(arp)), 0, 0)
			tx.offer(0, 1)
			d.kick(netTXQueue)
		},
	}
	tx = &target{
		d: d, queue: netTXQueue, queues: netQueues, rings: pages[:], b: b,
		// Header, then a frame for nobody in two pieces.
		chain: func(r *ring, b bufs) {
			copy(b.misc.b[hdrOff:], frame[:netHdrSize])
			copy(b.data.b, frame[netHdrSize:])
			n := uint32(len(frame) - netHdrSize)
			r.setDesc(0, b.hdrAddr(), netHdrSize, descNext, 1)
			r.setDesc(1, b.data.phys, n/2, descNext, 2)
			r.setDesc(2, b.data.phys+uint64(n/2), n-n/2, 0, 0)
		},
	}
	return rx, tx
}

// txHonest is the honest transmit: the device consumes the chain and,
// having written nothing, uses it with length 0.
func txHonest(tx *target) craft {
	return craft{name: "tx-honest", want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
		tx.chain(r, b)
		r.offer(0, 1)
	}}
}

// usedZero checks that the device used each chain in heads, in order,
// with length 0 (a TX chain, or an RX chain it could not fill), and
// wrote nothing into the canary.
func usedZero(heads ...uint16) func(r *ring, b bufs) (string, error) {
	return func(r *ring, b bufs) (string, error) {
		for i, h := range heads {
			id, n := r.usedElem(uint16(i))
			if id != uint32(h) || n != 0 {
				return "", fmt.Errorf("used entry %d is id %d len %d, want id %d len 0", i, id, n, h)
			}
		}
		if err := canaryIntact(b, 0); err != nil {
			return "", err
		}
		if len(heads) == 1 {
			return fmt.Sprintf("chain %d used with length 0", heads[0]), nil
		}
		return fmt.Sprintf("chains %v used with length 0", heads), nil
	}
}

// fillCanary marks the canary buffer; canaryIntact checks it from byte
// from on.
func fillCanary(b bufs) {
	c := b.misc.b[canaryOff : canaryOff+canaryLen]
	for i := range c {
		c[i] = canaryByte
	}
}

func canaryIntact(b bufs, from int) error {
	c := b.misc.b[canaryOff : canaryOff+canaryLen]
	for i := from; i < len(c); i++ {
		if c[i] != canaryByte {
			return fmt.Errorf("the device wrote %#02x at byte %d of a buffer it must not write there (virtio v1.2 §2.7.4)", c[i], i)
		}
	}
	return nil
}

// txCrafts are transmit chains the spec says a driver must not send, or
// that no device can send: each must be consumed (used, length 0) and
// dropped, the device staying up (virtio v1.2 §5.1.6.2).
func txCrafts(tx *target) []craft {
	writeOnly := func(r *ring, b bufs) {
		r.setDesc(0, b.misc.phys+canaryOff, canaryLen, descWrite, 0)
		r.offer(0, 1)
	}
	return []craft{
		{name: "tx-shorter-than-header", want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
			tx.chain(r, b)
			r.setDesc(0, b.hdrAddr(), netHdrSize-4, 0, 0)
			r.offer(0, 1)
		}},
		{name: "tx-header-only", want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
			tx.chain(r, b)
			r.setDesc(0, b.hdrAddr(), netHdrSize, 0, 0)
			r.offer(0, 1)
		}},
		// 17 readable 4 KiB pieces through an indirect table: 68 KiB,
		// more than the 64 KiB GSO frame plus header the device takes.
		{name: "tx-frame-over-maximum", features: featIndirect, want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
			tx.chain(r, b)
			tbl := b.misc.b[tableOff:statusOff]
			const pieces = 17
			for i := 0; i < pieces; i++ {
				flags, next := uint16(descNext), uint16(i+1)
				if i == pieces-1 {
					flags, next = 0, 0
				}
				putDesc(tbl, i, b.data.phys, pageSize, flags, next)
			}
			r.setDesc(0, b.tableAddr(), pieces*16, descIndirect, 0)
			r.offer(0, 1)
		}},
		{name: "tx-writable-buffer-after-frame", want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
			tx.chain(r, b)
			addr, length, _, _ := r.descAt(2)
			r.setDesc(2, addr, length, descNext, 3)
			r.setDesc(3, b.misc.phys+canaryOff, canaryLen, descWrite, 0)
			r.offer(0, 1)
		}},
		{name: "tx-only-writable", want: completes, check: usedZero(0), build: writeOnly},
		// Every header field at its most absurd: the flags, a GSO type
		// and sizes not negotiated, num_buffers not zero (§5.1.6.2).
		{name: "tx-garbage-header", want: completes, check: usedZero(0), build: func(r *ring, b bufs) {
			tx.chain(r, b)
			copy(b.misc.b[hdrOff:hdrOff+netHdrSize], bytes.Repeat([]byte{0xff}, netHdrSize))
			r.offer(0, 1)
		}},
	}
}

// rxFrame checks the frame the device put in the honest RX chain whose
// head is head, used as entry i: a header with flags and gso_type zero
// (GUEST_CSUM and the GSO features are never negotiated here, §5.1.6.4)
// and num_buffers 1, and the gateway's ARP reply.
func rxFrame(mac net.HardwareAddr, i uint16, head uint32) func(r *ring, b bufs) (string, error) {
	return func(r *ring, b bufs) (string, error) {
		id, n := r.usedElem(i)
		if id != head {
			return "", fmt.Errorf("used entry %d is chain %d, want %d", i, id, head)
		}
		if n < netHdrSize+42 || n > netRXBufSize {
			return "", fmt.Errorf("used entry %d has length %d, want a header and an ARP reply", i, n)
		}
		hdr := b.misc.b[hdrOff : hdrOff+netHdrSize]
		if hdr[0] != 0 || hdr[1] != 0 {
			return "", fmt.Errorf("header flags %#x gso_type %#x, want 0 0 (nothing negotiated)", hdr[0], hdr[1])
		}
		if nb := binary.LittleEndian.Uint16(hdr[netHdrNumBuffers:]); nb != 1 {
			return "", fmt.Errorf("num_buffers %d in a one-chain frame, want 1 (virtio v1.2 §5.1.6.4)", nb)
		}
		gw, err := checkARPReply(b.data.b[:n-netHdrSize], mac)
		if err != nil {
			return "", err
		}
		if err := canaryIntact(b, 0); err != nil {
			return "", err
		}
		return fmt.Sprintf("chain %d got the gateway's ARP reply (%v), %d bytes", head, gw, n), nil
	}
}

// rxHonest is the honest receive: one 1526-byte chain, its header
// prefilled with 0xff so that num_buffers must be written.
func rxHonest(rx *target, mac net.HardwareAddr) craft {
	return craft{name: "rx-honest", want: completes, check: rxFrame(mac, 0, 0), build: func(r *ring, b bufs) {
		copy(b.misc.b[hdrOff:hdrOff+netHdrSize], bytes.Repeat([]byte{0xff}, netHdrSize))
		rx.chain(r, b)
		r.offer(0, 1)
	}}
}

// rxCrafts are receive buffers the spec says a driver must not post, or
// should not: each is returned unused or skipped, never written past,
// and the frame lands in the honest chain posted after it; or, with
// mergeable buffers, frames spread over small chains as §5.1.6.4 says.
func rxCrafts(rx *target, mac net.HardwareAddr) []craft {
	// wrongFirst offers a bad chain at descriptor 3, then the honest
	// chain: the device must use the bad one with length 0 and put the
	// frame in the honest one.
	wrongFirst := func(flags uint16, length uint32) func(r *ring, b bufs) {
		return func(r *ring, b bufs) {
			copy(b.misc.b[hdrOff:hdrOff+netHdrSize], bytes.Repeat([]byte{0xff}, netHdrSize))
			r.setDesc(3, b.misc.phys+canaryOff, length, flags, 0)
			r.offer(3, 1)
			rx.chain(r, b)
			r.offer(0, 1)
		}
	}
	both := func(checks ...func(r *ring, b bufs) (string, error)) func(r *ring, b bufs) (string, error) {
		return func(r *ring, b bufs) (string, error) {
			var out []byte
			for _, c := range checks {
				s, err := c(r, b)
				if err != nil {
					return "", err
				}
				out = fmt.Appendf(out, "%s; ", s)
			}
			return string(out[:len(out)-2]), nil
		}
	}
	// mergeable offers the chains at descriptors 3... given by their
	// lengths (one slice a chain, one length a descriptor), laid end to
	// end in the data page.
	mergeable := func(chains ...[]uint32) func(r *ring, b bufs) {
		return func(r *ring, b bufs) {
			for i := range b.data.b[:1024] {
				b.data.b[i] = 0xff
			}
			idx, off := 3, uint64(0)
			for _, c := range chains {
				head := uint16(idx)
				for j, l := range c {
					flags, next := uint16(descWrite), uint16(0)
					if j < len(c)-1 {
						flags, next = descWrite|descNext, uint16(idx+1)
					}
					r.setDesc(idx, b.data.phys+off, l, flags, next)
					idx++
					off += uint64(l)
				}
				r.offer(head, 1)
			}
		}
	}
	return []craft{
		{name: "rx-readonly-buffer", want: completes, used: 2,
			build: wrongFirst(0, canaryLen), check: both(usedZero(3), rxFrame(mac, 1, 0))},
		{name: "rx-buffer-shorter-than-header", want: completes, used: 2,
			build: wrongFirst(descWrite, netHdrSize-4), check: both(usedZero(3), rxFrame(mac, 1, 0))},
		{name: "rx-mrg-buffer-shorter-than-header", features: featMrgRxbuf, want: completes, used: 2,
			build: wrongFirst(descWrite, netHdrSize-4), check: both(usedZero(3), rxFrame(mac, 1, 0))},
		// Without MRG_RXBUF a frame needs one chain that holds it all
		// (§5.1.6.3.2); a 32-byte one cannot: the frame is dropped and
		// the chain stays posted or comes back unused, with nothing
		// written past its 32 bytes.
		{name: "rx-buffer-smaller-than-frame", want: ignored,
			build: func(r *ring, b bufs) {
				r.setDesc(3, b.misc.phys+canaryOff, 32, descWrite, 0)
				r.offer(3, 1)
			},
			check: func(r *ring, b bufs) (string, error) {
				what := "frame dropped, buffer left posted"
				switch r.usedIdx() {
				case 0:
				case 1:
					if id, n := r.usedElem(0); id != 3 || n != 0 {
						return "", fmt.Errorf("used entry 0 is id %d len %d, want the buffer back unused (id 3 len 0) or left posted", id, n)
					}
					what = "frame dropped, buffer returned unused"
				default:
					return "", fmt.Errorf("used index %d for one posted buffer", r.usedIdx())
				}
				return what + ", nothing written past it", canaryIntact(b, 32)
			}},
		// With MRG_RXBUF the 54-byte answer spreads over 32-byte chains:
		// the first used whole, num_buffers 2 in its header (§5.1.6.4).
		{name: "rx-mrg-num-buffers", features: featMrgRxbuf, want: completes, used: 2,
			build: mergeable([]uint32{32}, []uint32{32}, []uint32{32}, []uint32{32}),
			check: mergedFrame(mac, []uint32{3, 4})},
		// The same with num_buffers split across the first chain's two
		// descriptors (bytes 10 and 11 of the header).
		{name: "rx-mrg-num-buffers-split", features: featMrgRxbuf, want: completes, used: 2,
			build: mergeable([]uint32{11, 21}, []uint32{32}, []uint32{32}),
			check: mergedFrame(mac, []uint32{3, 5})},
		// One chain large enough: num_buffers 1.
		{name: "rx-mrg-one-buffer", features: featMrgRxbuf, want: completes,
			build: mergeable([]uint32{netRXBufSize}), check: mergedFrame(mac, []uint32{3})},
	}
}

// mergedFrame checks a frame spread over the chains heads, laid end to
// end from the start of the data page: all but the last used whole (32
// bytes each, §5.1.6.4), num_buffers the number of chains, and the
// frame the gateway's ARP reply.
func mergedFrame(mac net.HardwareAddr, heads []uint32) func(r *ring, b bufs) (string, error) {
	return func(r *ring, b bufs) (string, error) {
		total := uint32(0)
		for i, h := range heads {
			id, n := r.usedElem(uint16(i))
			if id != h {
				return "", fmt.Errorf("used entry %d is chain %d, want %d", i, id, h)
			}
			if i < len(heads)-1 && n != 32 {
				return "", fmt.Errorf("used entry %d has length %d, want the whole 32-byte chain (all but the last buffer are used whole)", i, n)
			}
			total += n
		}
		if int(total) > 1024 || total < netHdrSize+42 {
			return "", fmt.Errorf("%d bytes in %d chains, want a header and an ARP reply", total, len(heads))
		}
		hdr := b.data.b[:netHdrSize]
		if nb := binary.LittleEndian.Uint16(hdr[netHdrNumBuffers:]); nb != uint16(len(heads)) {
			return "", fmt.Errorf("num_buffers %d, want %d (virtio v1.2 §5.1.6.4)", nb, len(heads))
		}
		if hdr[0] != 0 || hdr[1] != 0 {
			return "", fmt.Errorf("header flags %#x gso_type %#x, want 0 0", hdr[0], hdr[1])
		}
		if _, err := checkARPReply(b.data.b[netHdrSize:total], mac); err != nil {
			return "", err
		}
		if r.usedIdx() != uint16(len(heads)) {
			return "", fmt.Errorf("used index %d after the frame, want %d", r.usedIdx(), len(heads))
		}
		return fmt.Sprintf("%d bytes over chains %v, num_buffers %d", total, heads, len(heads)), nil
	}
}

// missingQueue reads QueueNumMax of queues the NIC does not have, which
// must read 0 (virtio v1.2 §4.2.2), and notifies them, which must change
// nothing: the honest transmit that follows still completes.
func missingQueue(tx *target) (string, error) {
	d := tx.d
	for _, q := range []uint32{netQueues, 0xffff} {
		d.w32(regQueueSel, q)
		if n := d.r32(regQueueNumMax); n != 0 {
			return "", fmt.Errorf("QueueNumMax of queue %d reads %d, want 0", q, n)
		}
	}
	notify := tx.provoke
	defer func() { tx.provoke = notify }()
	tx.provoke = func(d *device, _ []*ring) {
		for _, q := range []uint32{netQueues, 3, 0xffff, 0xffffffff} {
			d.kick(q)
		}
	}
	detail, err := runCraft(tx, txHonest(tx))
	if err != nil {
		return "", err
	}
	return "QueueNumMax 0; notifications of queues 2, 3, 0xffff, 0xffffffff ignored, then " + detail, nil
}

// netRoundTrip is an honest driver's exchange on the NIC: it posts
// mergeable receive buffers, sends an ARP request for the gateway and
// waits for the answer, skipping frames that are not it (the user
// network may have queued some while the device was down). It proves
// both queues work after whatever came before.
func netRoundTrip(d *device, mac net.HardwareAddr, pages [2]dmaPage, b bufs, arpPage dmaPage) (string, error) {
	if err := d.reset(); err != nil {
		return "", err
	}
	if err := d.negotiate(featVersion1 | featNetMAC | featMrgRxbuf); err != nil {
		return "", err
	}
	rx, tx := newRing(pages[0], 8), newRing(pages[1], 8)
	d.setupQueue(netRXQueue, rx.config())
	d.setupQueue(netTXQueue, tx.config())
	d.driverOK()
	const chainLen = 512
	for i := 0; i < 7; i++ {
		rx.setDesc(i, b.data.phys+uint64(i*chainLen), chainLen, descWrite, 0)
		rx.offer(uint16(i), 1)
	}
	arp := arpRequest(mac)
	copy(arpPage.b, arp)
	tx.setDesc(0, arpPage.phys, uint32(len(arp)), 0, 0)
	tx.offer(0, 1)
	d.kick(netTXQueue)
	deadline := time.Now().Add(caseTimeout)
	stray := 0
	for next := uint16(0); ; {
		if next >= 7 {
			return "", fmt.Errorf("%d stray frames filled every buffer before the gateway answered", stray)
		}
		o := rx.wait(d, next+1, time.Until(deadline))
		if o.needsReset || (!o.used && rx.usedIdx() == next) {
			return "", fmt.Errorf("%s: RX: device %v after %d frames (TX used index %d)", d.name, o, stray, tx.usedIdx())
		}
		id, n := rx.usedElem(next)
		buf := b.data.b[int(id)*chainLen:]
		nb := binary.LittleEndian.Uint16(buf[netHdrNumBuffers:])
		if id >= 7 || n < netHdrSize || nb == 0 {
			return "", fmt.Errorf("used entry %d: id %d len %d num_buffers %d", next, id, n, nb)
		}
		if nb == 1 {
			if gw, err := checkARPReply(buf[netHdrSize:n], mac); err == nil {
				if tx.usedIdx() != 1 {
					return "", fmt.Errorf("the gateway answered, but the TX chain is not used (used index %d)", tx.usedIdx())
				}
				return fmt.Sprintf("the gateway (%v) answered ARP after %d stray frames", gw, stray), d.reset()
			}
		}
		stray++
		next += nb
		rx.lastUsedIdx = next
	}
}
