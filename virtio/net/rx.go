package net

import (
	"encoding/binary"

	"github.com/vmm-dev/vmm/virtio"
)

// rxState is the RX worker's, preallocated by New.
//
// A frame that does not fit in the buffers the driver has posted stays
// pending, and so do the chains already popped and filled for it: the
// worker waits for more rather than returning them with Queue.Unpop.
// Holding them keeps the queue's next index past them, which is what
// EnableNotify publishes as avail_event under EVENT_IDX; after an Unpop
// avail_event would point at chains the driver posted long ago, its next
// buffer would not cross it, and no notification would come.
type rxState struct {
	buf     []byte // staging: header and frame, bufSize+1 bytes
	frame   []byte // the pending frame, a prefix of buf
	pending bool   // frame was read and is not placed yet
	off     int    // bytes of frame already copied into held chains
	count   int    // chains held for frame
	heads   []uint16
	lens    []uint32
	// numBuffers is where le16 num_buffers lives in the first held
	// chain's buffers, filled in once the frame is placed and the count
	// known: one piece, or two when the driver split the field across
	// descriptors. numBuffersStore backs it, so finding it allocates
	// nothing.
	numBuffers      virtio.Buffers
	numBuffersStore [2][]byte
	mergeable       bool
	csum            bool // GUEST_CSUM negotiated: the header's flags go to the driver
	burst           int  // frames read without waiting since the driver was last told
	chain           virtio.Chain
	log             limiter
}

// runRX is the RX worker: read a frame from the backend, place it in the
// driver's buffers, repeat. When the driver has posted too few buffers it
// stops reading (the frame waits in staging, the next ones in the host
// kernel) and sleeps until the driver notifies the RX queue; driver
// notifications are off the rest of the time, since buffers posted while
// frames flow are found by Pop anyway.
//
// The driver hears about placed frames when the worker is about to wait,
// for frames or for buffers, or after maxRXBurst frames: with a
// TryReader backend a burst of frames queued in the host costs one
// interrupt (and one eventfd write) rather than one per frame, and a lone
// frame is signalled right after it is placed, as without one.
// NeedInterrupt covers everything published since its previous call, so
// EVENT_IDX's used_event is honoured across the burst.
func (d *Device) runRX() {
	defer d.wg.Done()
	r := &d.rx
	q, n := d.rxq, d.env.Notifiers[QueueRX]
	// Frames placed in a burst that a reset or pause cut short are told
	// about too, as they were when every frame was signalled at once.
	defer d.signalRX(q)
	q.DisableNotify()
	for !d.stop.Load() {
		if !r.pending {
			m, err := d.readRX(q)
			if err != nil {
				if !d.stop.Load() {
					d.logf("net: rx: %v; receiving stopped until the device is reset", err)
				}
				return
			}
			if m < HeaderSize || m > bufSize {
				// Shorter than a header, or truncated by the read.
				d.rxDropped.Add(1)
				if r.log.allow() {
					d.logf("net: rx: dropped a %d-byte frame from the backend (header %d, maximum %d)", m, HeaderSize, bufSize)
				}
				continue
			}
			r.frame = r.buf[:m]
			r.pending, r.off, r.count = true, 0, 0
			if !r.mergeable {
				// The device MUST set num_buffers to 1 when MRG_RXBUF is
				// off (virtio v1.2 §5.1.6.4.1).
				binary.LittleEndian.PutUint16(r.frame[hdrNumBuffers:], 1)
			}
			if !r.csum {
				// Without GUEST_CSUM the device MUST set flags to 0
				// (§5.1.6.4.1); Linux's TAP marks frames whose checksum
				// it knows good (DATA_VALID) whatever the offloads.
				r.frame[hdrFlags] = 0
			}
		}
		placed, err := d.placeRX(q)
		if err != nil {
			d.env.Fail(err)
			return
		}
		if placed {
			continue
		}
		// Out of buffers: the driver must hear about what it has before
		// it can post more. Ask for a notification, then look once more:
		// buffers posted before the request took effect bring none.
		d.signalRX(q)
		if q.EnableNotify() {
			q.DisableNotify()
			continue
		}
		if err := n.Wait(); err != nil {
			return
		}
		q.DisableNotify()
	}
}

// maxRXBurst bounds the frames placed between two signals, so that a
// host that keeps the queue full does not keep the driver waiting: at
// most 1 MiB of 64 KiB GSO frames, a quarter of the 64 frames a Linux
// NAPI poll takes by default.
const maxRXBurst = 16

// readRX reads the next frame into the staging buffer: from a TryReader
// without waiting while a burst lasts, and otherwise, once the driver has
// been told about the frames placed so far, waiting for the backend.
func (d *Device) readRX(q *virtio.Queue) (int, error) {
	r := &d.rx
	if d.try != nil && r.burst < maxRXBurst {
		m, ok, err := d.try.TryRead(r.buf)
		if err != nil {
			return 0, err
		}
		if ok {
			r.burst++
			return m, nil
		}
	}
	d.signalRX(q)
	m, err := d.b.Read(r.buf)
	if d.try != nil {
		r.burst = 1 // this frame starts the next burst
	}
	return m, err
}

// signalRX interrupts the driver if what was placed since the last call
// calls for it, and starts a new burst.
func (d *Device) signalRX(q *virtio.Queue) {
	d.rx.burst = 0
	if q.NeedInterrupt() {
		d.env.Interrupt()
	}
}

// placeRX copies the pending frame into the driver's RX buffers, popping
// chains until it fits, and completes them all at once. It returns false
// when the queue ran dry first; the chains popped so far stay held and
// the next call continues with them.
//
// With MRG_RXBUF the frame spans as many chains as it needs and the first
// one's header says how many (num_buffers, virtio v1.2 §5.1.6.4). Without
// it a chain must hold the whole frame; when the next chain is too small
// the frame is dropped and the chain left in the ring for the next frame
// (Unpop), so oversized frames from the host cannot eat buffers the
// driver posted for ordinary ones. A chain too small even for the header
// can never be used: it is completed with length 0 and skipped. A frame
// larger than all the buffers the queue can hold is dropped and the
// chains returned.
func (d *Device) placeRX(q *virtio.Queue) (bool, error) {
	r := &d.rx
	for r.off < len(r.frame) {
		// The driver's ring may be smaller than the device's maximum
		// (Linux shrinks it under memory pressure): once every chain it
		// can post is held, no notification will bring another.
		if r.count == len(r.heads) || r.count >= int(q.Size()) {
			q.Unpop(uint16(r.count))
			d.dropRX("larger than every buffer the queue can hold")
			return true, nil
		}
		ok, err := q.Pop(&r.chain)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, nil
		}
		w := r.chain.WritableLen()
		if r.count == 0 && w < HeaderSize {
			q.Push(r.chain.Head, 0)
			if q.NeedInterrupt() {
				d.env.Interrupt()
			}
			if r.log.allow() {
				d.logf("net: rx: chain %d has %d writable bytes, less than the %d-byte header; returned unused", r.chain.Head, w, HeaderSize)
			}
			continue
		}
		if !r.mergeable && w < len(r.frame) {
			q.Unpop(1)
			d.dropRX("larger than the receive buffer, and mergeable buffers were not negotiated")
			return true, nil
		}
		if r.count == 0 && r.mergeable {
			// w >= HeaderSize, so the field is all there.
			r.numBuffers = r.chain.Writable.AppendRange(r.numBuffersStore[:0], hdrNumBuffers, 2)
		}
		// A short write is expected: the rest goes to the next chain.
		c, _ := r.chain.Writable.WriteAt(r.frame[r.off:], 0)
		r.heads[r.count] = r.chain.Head
		r.lens[r.count] = uint32(c)
		r.count++
		r.off += c
	}
	if r.mergeable {
		// count <= len(heads) <= 32768.
		var n [2]byte
		binary.LittleEndian.PutUint16(n[:], uint16(r.count))
		r.numBuffers.WriteAt(n[:], 0)
	}
	for i := range r.count {
		q.Add(r.heads[i], r.lens[i])
	}
	// One Publish: the driver must not see the first buffers of a frame
	// before the last.
	q.Publish()
	r.pending, r.count, r.off = false, 0, 0
	d.rxFrames.Add(1)
	// The interrupt is runRX's to send (signalRX), once per burst.
	return true, nil
}

// dropRX forgets the pending frame.
func (d *Device) dropRX(why string) {
	r := &d.rx
	d.rxDropped.Add(1)
	if r.log.allow() {
		d.logf("net: rx: dropped a %d-byte frame: %s", len(r.frame)-HeaderSize, why)
	}
	r.pending, r.count, r.off = false, 0, 0
}
