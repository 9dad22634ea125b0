//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// bufs are the pages a request's buffers live in: headers, status bytes
// and indirect tables in one page, data in another.
type bufs struct {
	misc, data dmaPage
}

// Offsets in bufs.misc (and canaryOff, in net.go).
const (
	hdrOff    = 0x000 // struct virtio_blk_req or virtio_net_hdr header (16 or 12 bytes)
	segOff    = 0x020 // a discard/write-zeroes segment (16 bytes)
	tableOff  = 0x400 // an indirect descriptor table (up to 64 entries)
	statusOff = 0x800 // the status byte
)

func (b bufs) hdr(typ uint32, sector uint64) {
	h := b.misc.b[hdrOff : hdrOff+16]
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0)
	binary.LittleEndian.PutUint64(h[8:], sector)
}

func (b bufs) statusByte() byte { return b.misc.b[statusOff] }

// addresses of the pieces, guest-physical.
func (b bufs) hdrAddr() uint64    { return b.misc.phys + hdrOff }
func (b bufs) segAddr() uint64    { return b.misc.phys + segOff }
func (b bufs) tableAddr() uint64  { return b.misc.phys + tableOff }
func (b bufs) statusAddr() uint64 { return b.misc.phys + statusOff }

// request writes an honest three-descriptor request at descriptors
// 0-2: header, data (device-writable for reads), status.
func request(r *ring, b bufs, typ uint32, sector uint64, dataLen uint32) {
	b.hdr(typ, sector)
	dataFlags := uint16(descNext)
	if typ == blkIn {
		dataFlags |= descWrite
	}
	r.setDesc(0, b.hdrAddr(), 16, descNext, 1)
	r.setDesc(1, b.data.phys, dataLen, dataFlags, 2)
	r.setDesc(2, b.statusAddr(), 1, descWrite, 0)
}

// expect is how the device must answer a case.
type expect int

const (
	// rejected: the queue configuration itself is unusable, so DRIVER_OK
	// raises DEVICE_NEEDS_RESET before any request.
	rejected expect = iota
	// malformed: the kick finds a chain the device must not process; it
	// raises DEVICE_NEEDS_RESET and completes nothing.
	malformed
	// completes: the request completes with status and usedLen (the
	// device answers a bad request, it does not fail).
	completes
	// completesAnyReset is completes where the request also trashes the
	// rings, so a NEEDS_RESET afterwards is fine too.
	completesAnyReset
	// ignored: the device stays up for the whole of quietWait and
	// completes nothing (or what check allows: a net frame dropped on a
	// buffer too small for it may leave the buffer posted or return it
	// unused).
	ignored
)

// noStatus is a case's status when the chain has no status byte to
// write: the device completes it with used length 0.
const noStatus = -1

// craft is one corrupted (or, for contrast, honest) queue.
type craft struct {
	name     string
	features uint64 // beyond VERSION_1
	// queue changes the honest configuration; nil keeps it.
	queue func(q *queueConfig, r *ring)
	build func(r *ring, b bufs)
	want  expect
	// For completes: the status byte and used length of used entry 0.
	status  int
	usedLen uint32
	// used is the used index the device must reach; 0 means 1.
	used uint16
	// check, when set, replaces the status and usedLen check of a
	// completion (net answers have no status byte).
	check func(r *ring, b bufs) (string, error)
}

// target is what a craft attacks: one queue of a device, with the pages
// its rings and buffers live in, and what an honest chain on that queue
// looks like. The device's other queues get honest, empty rings.
type target struct {
	d      *device
	queue  uint32
	queues int
	// rings[i] is queue i's ring page.
	rings []dmaPage
	b     bufs
	// chain writes an honest three-descriptor chain at descriptors 0-2
	// (a request the device can serve), without offering it.
	chain func(r *ring, b bufs)
	// provoke, when set, runs after the kick with every queue's ring:
	// an RX queue is only looked at when a frame arrives, so it sends
	// one that the network answers.
	provoke func(d *device, rings []*ring)
}

func (t *target) String() string { return fmt.Sprintf("%s queue %d", t.d.name, t.queue) }

// queueCrafts are the virtqueue-level attacks, the same on every queue
// of every device: queue configurations vmm must refuse at DRIVER_OK,
// and chains it must refuse when it pops them, each made from the
// target's honest chain with one thing broken. honest is the target's
// own honest case, run first for contrast.
func queueCrafts(t *target, honest craft) []craft {
	const far = 1 << 40 // far above any RAM the guest has
	offered := func(build func(r *ring, b bufs)) func(r *ring, b bufs) {
		return func(r *ring, b bufs) {
			t.chain(r, b)
			build(r, b)
			r.offer(0, 1)
		}
	}
	// patch changes one descriptor of the honest chain.
	patch := func(i int, f func(addr *uint64, length *uint32, flags, next *uint16)) func(r *ring, b bufs) {
		return offered(func(r *ring, b bufs) {
			addr, length, flags, next := r.descAt(i)
			f(&addr, &length, &flags, &next)
			r.setDesc(i, addr, length, flags, next)
		})
	}
	indirect := func(build func(r *ring, b bufs, table []byte)) func(r *ring, b bufs) {
		return func(r *ring, b bufs) {
			t.chain(r, b)
			build(r, b, b.misc.b[tableOff:statusOff])
			r.offer(0, 1)
		}
	}
	// honestIndirect moves the honest chain into an indirect table.
	honestIndirect := honest
	honestIndirect.name += "-indirect"
	honestIndirect.features |= featIndirect
	honestIndirect.build = indirect(func(r *ring, b bufs, tbl []byte) {
		for i := 0; i < 3; i++ {
			addr, length, flags, next := r.descAt(i)
			putDesc(tbl, i, addr, length, flags, next)
		}
		r.setDesc(0, b.tableAddr(), 3*16, descIndirect, 0)
	})
	return []craft{
		// For contrast: the honest path works, direct and indirect.
		honest,
		honestIndirect,

		// Queue configurations vmm must refuse at DRIVER_OK.
		{name: "queue-desc-in-mmio-hole", want: rejected, queue: func(q *queueConfig, r *ring) { q.desc = mmioBase }},
		{name: "queue-desc-on-local-apic", want: rejected, queue: func(q *queueConfig, r *ring) { q.desc = 0xfee00000 }},
		{name: "queue-used-above-ram", want: rejected, queue: func(q *queueConfig, r *ring) { q.used = far }},
		{name: "queue-avail-wraps-address-space", want: rejected, queue: func(q *queueConfig, r *ring) { q.avail = 1<<64 - 2 }},
		{name: "queue-desc-misaligned", want: rejected, queue: func(q *queueConfig, r *ring) { q.desc += 8 }},
		{name: "queue-used-misaligned", want: rejected, queue: func(q *queueConfig, r *ring) { q.used += 2 }},
		{name: "queue-size-0", want: rejected, queue: func(q *queueConfig, r *ring) { q.size = 0 }},
		{name: "queue-size-7", want: rejected, queue: func(q *queueConfig, r *ring) { q.size = 7 }},
		{name: "queue-size-512-over-max", want: rejected, queue: func(q *queueConfig, r *ring) { q.size = 512 }},
		{name: "queue-size-65535", want: rejected, queue: func(q *queueConfig, r *ring) { q.size = 65535 }},

		// Chains vmm must refuse when it pops them.
		{name: "desc-loop", want: malformed, build: patch(2, func(_ *uint64, _ *uint32, flags, next *uint16) {
			*flags |= descNext
			*next = 1
		})},
		{name: "desc-self-loop", want: malformed, build: patch(0, func(_ *uint64, _ *uint32, flags, next *uint16) {
			*flags |= descNext
			*next = 0
		})},
		{name: "head-out-of-range", want: malformed, build: func(r *ring, b bufs) {
			t.chain(r, b)
			r.offer(200, 1)
		}},
		{name: "next-out-of-range", want: malformed, build: patch(0, func(_ *uint64, _ *uint32, _, next *uint16) { *next = 9999 })},
		{name: "buffer-in-mmio-hole", want: malformed, build: patch(1, func(addr *uint64, _ *uint32, _, _ *uint16) { *addr = mmioBase })},
		{name: "buffer-above-ram", want: malformed, build: patch(1, func(addr *uint64, _ *uint32, _, _ *uint16) { *addr = far })},
		{name: "buffer-4GiB-long", want: malformed, build: patch(1, func(_ *uint64, length *uint32, _, _ *uint16) { *length = 0xffffffff })},
		{name: "buffer-wraps-address-space", want: malformed, build: patch(1, func(addr *uint64, length *uint32, _, _ *uint16) {
			*addr, *length = 1<<64-0x100, 0x1000
		})},
		{name: "readable-after-writable", want: malformed, build: func(r *ring, b bufs) {
			r.setDesc(0, b.statusAddr(), 1, descWrite|descNext, 1)
			r.setDesc(1, b.hdrAddr(), 16, 0, 0)
			r.offer(0, 1)
		}},
		{name: "avail-index-far-ahead", want: malformed, build: func(r *ring, b bufs) {
			t.chain(r, b)
			r.offer(0, 0x8000)
		}},
		{name: "avail-index-one-past-size", want: malformed, build: func(r *ring, b bufs) {
			t.chain(r, b)
			r.offer(0, r.size+1)
		}},
		{name: "indirect-not-negotiated", want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.hdrAddr(), 16, 0, 0)
			r.setDesc(0, b.tableAddr(), 16, descIndirect, 0)
		})},
		{name: "indirect-nested", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.tableAddr()+32, 32, descIndirect, 0)
			putDesc(tbl, 2, b.tableAddr(), 32, descIndirect, 0)
			r.setDesc(0, b.tableAddr(), 32, descIndirect, 0)
		})},
		{name: "indirect-loop", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.hdrAddr(), 16, descNext, 1)
			putDesc(tbl, 1, b.hdrAddr(), 16, descNext, 0)
			r.setDesc(0, b.tableAddr(), 32, descIndirect, 0)
		})},
		{name: "indirect-entry-out-of-range", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.hdrAddr(), 16, descNext, 5)
			r.setDesc(0, b.tableAddr(), 32, descIndirect, 0)
		})},
		{name: "indirect-with-next", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.hdrAddr(), 16, 0, 0)
			r.setDesc(0, b.tableAddr(), 16, descIndirect|descNext, 1)
			r.setDesc(1, b.statusAddr(), 1, descWrite, 0)
		})},
		{name: "indirect-length-17", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			putDesc(tbl, 0, b.hdrAddr(), 16, 0, 0)
			r.setDesc(0, b.tableAddr(), 17, descIndirect, 0)
		})},
		{name: "indirect-length-0", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			r.setDesc(0, b.tableAddr(), 0, descIndirect, 0)
		})},
		{name: "indirect-over-1024-entries", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			r.setDesc(0, b.tableAddr(), 1025*16, descIndirect, 0)
		})},
		{name: "indirect-table-above-ram", features: featIndirect, want: malformed, build: indirect(func(r *ring, b bufs, tbl []byte) {
			r.setDesc(0, far, 64, descIndirect, 0)
		})},
	}
}

// blkChain is virtio-blk's honest chain: a read of sector 0.
func blkChain(r *ring, b bufs) { request(r, b, blkIn, 0, sectorSize) }

// blkHonest is the honest read queueCrafts runs first on a disk.
var blkHonest = craft{name: "honest-read", want: completes, status: blkStatusOK, usedLen: sectorSize + 1,
	build: func(r *ring, b bufs) {
		blkChain(r, b)
		r.offer(0, 1)
	}}

// blkCrafts are bad requests in well-formed chains on the writable disk,
// answered, not fatal. Nothing in them writes to the disk: their
// requests are reads or bad requests, so the disk image must come out
// unchanged except for what the recovery step writes.
func blkCrafts(capacity uint64) []craft {
	const far = 1 << 40
	return []craft{
		{name: "unsupported-type", want: completes, status: blkStatusUnsup, usedLen: 1, build: func(r *ring, b bufs) {
			request(r, b, 0xdeadbeef, 0, sectorSize)
			r.offer(0, 1)
		}},
		{name: "short-header", want: completes, status: blkStatusIOErr, usedLen: 1, build: func(r *ring, b bufs) {
			b.hdr(blkIn, 0)
			r.setDesc(0, b.hdrAddr(), 8, descNext, 1)
			r.setDesc(1, b.statusAddr(), 1, descWrite, 0)
			r.offer(0, 1)
		}},
		{name: "read-past-end", want: completes, status: blkStatusIOErr, usedLen: 1, build: func(r *ring, b bufs) {
			request(r, b, blkIn, capacity, sectorSize)
			r.offer(0, 1)
		}},
		{name: "read-sector-overflow", want: completes, status: blkStatusIOErr, usedLen: 1, build: func(r *ring, b bufs) {
			request(r, b, blkIn, 1<<64-1, sectorSize)
			r.offer(0, 1)
		}},
		{name: "read-half-sector", want: completes, status: blkStatusIOErr, usedLen: 1, build: func(r *ring, b bufs) {
			request(r, b, blkIn, 0, sectorSize/2)
			r.offer(0, 1)
		}},
		{name: "no-status-byte", want: completes, status: noStatus, usedLen: 0, build: func(r *ring, b bufs) {
			b.hdr(blkIn, 0)
			r.setDesc(0, b.hdrAddr(), 16, 0, 0)
			r.offer(0, 1)
		}},
		// A zero-length descriptor carries nothing, so its address,
		// however wild, must never be resolved.
		{name: "zero-length-desc-anywhere", want: completes, status: blkStatusOK, usedLen: 1, build: func(r *ring, b bufs) {
			request(r, b, blkIn, 0, 0)
			r.setDesc(1, far, 0, descNext|descWrite, 2)
			r.offer(0, 1)
		}},
		// The device reads a sector over the descriptor table and both
		// rings: the request itself completes; what the driver then
		// finds in its trashed avail ring may well be malformed.
		{name: "read-over-the-rings", want: completesAnyReset, status: blkStatusOK, usedLen: pageSize + 1, build: func(r *ring, b bufs) {
			request(r, b, blkIn, 0, pageSize)
			r.setDesc(1, r.desc.phys, pageSize, descNext|descWrite, 2)
			r.offer(0, 1)
		}},
	}
}

// roCrafts are writes to the read-only disk: every one must fail without
// touching the image (the test hashes it).
func roCrafts() []craft {
	seg := func(b bufs, sector uint64, n uint32) {
		s := b.misc.b[segOff : segOff+16]
		binary.LittleEndian.PutUint64(s[0:], sector)
		binary.LittleEndian.PutUint32(s[8:], n)
		binary.LittleEndian.PutUint32(s[12:], 0)
	}
	zeroing := func(typ uint32) func(r *ring, b bufs) {
		return func(r *ring, b bufs) {
			b.hdr(typ, 0)
			seg(b, 0, 8)
			r.setDesc(0, b.hdrAddr(), 16, descNext, 1)
			r.setDesc(1, b.segAddr(), 16, descNext, 2)
			r.setDesc(2, b.statusAddr(), 1, descWrite, 0)
			r.offer(0, 1)
		}
	}
	return []craft{
		{name: "ro-write", want: completes, status: blkStatusIOErr, usedLen: 1, build: func(r *ring, b bufs) {
			for i := range b.data.b[:sectorSize] {
				b.data.b[i] = 0x55
			}
			request(r, b, blkOut, 0, sectorSize)
			r.offer(0, 1)
		}},
		{name: "ro-write-zeroes", want: completes, status: blkStatusIOErr, usedLen: 1, build: zeroing(blkWriteZeroes)},
		{name: "ro-discard", want: completes, status: blkStatusIOErr, usedLen: 1, build: zeroing(blkDiscard)},
	}
}

// caseTimeout bounds the wait for a device's answer to one kick: it
// answers within milliseconds; nested emulation and a shared CPU make
// that seconds at worst.
const caseTimeout = 10 * time.Second

// quietWait is how long an ignored case watches the device do nothing.
const quietWait = 500 * time.Millisecond

// runCraft sets t's device up with c's queue on t's queue (honest, empty
// rings on its other queues), kicks it and checks its answer. It
// returns what happened, and an error when that was not what c expects.
func runCraft(t *target, c craft) (string, error) {
	d, b := t.d, t.b
	if err := d.reset(); err != nil {
		return "", err
	}
	rings := make([]*ring, t.queues)
	for i := range rings {
		rings[i] = newRing(t.rings[i], 8)
	}
	r := rings[t.queue]
	clear(b.misc.b)
	clear(b.data.b)
	b.misc.b[statusOff] = 0xff
	fillCanary(b)
	if err := d.negotiate(featVersion1 | c.features); err != nil {
		return "", err
	}
	q := r.config()
	if c.queue != nil {
		c.queue(&q, r)
	}
	for i, other := range rings {
		if uint32(i) == t.queue {
			d.setupQueue(t.queue, q)
		} else {
			d.setupQueue(uint32(i), other.config())
		}
	}
	d.driverOK()
	st := d.status()
	if c.want == rejected {
		if st&stNeedsReset == 0 {
			return "", fmt.Errorf("queue %+v accepted (status %#x), want NEEDS_RESET", q, st)
		}
		return "rejected at DRIVER_OK", d.reset()
	}
	if st&stNeedsReset != 0 {
		return "", fmt.Errorf("honest queue %+v rejected at DRIVER_OK (status %#x)", q, st)
	}
	// Buffers are made available after DRIVER_OK, as a driver does. The
	// device may look at them before the kick (a wake-up left over from
	// the previous activation does that), which changes nothing below.
	if c.build != nil {
		c.build(r, b)
	}
	d.kick(t.queue)
	if t.provoke != nil {
		t.provoke(d, rings)
	}
	used := c.used
	if used == 0 {
		used = 1
	}
	timeout := caseTimeout
	if c.want == ignored {
		timeout = quietWait
	}
	o := r.wait(d, used, timeout)
	detail := o.String()
	switch c.want {
	case malformed:
		if !o.needsReset || o.used {
			return "", fmt.Errorf("device %v, want NEEDS_RESET and nothing used", o)
		}
	case ignored:
		if o.needsReset {
			return "", fmt.Errorf("device %v, want it to stay up", o)
		}
		if c.check == nil && r.usedIdx() != 0 {
			return "", fmt.Errorf("used index %d, want nothing used", r.usedIdx())
		}
		if c.check != nil {
			more, err := c.check(r, b)
			if err != nil {
				return "", err
			}
			detail += ": " + more
		}
	case completes, completesAnyReset:
		if !o.used || (o.needsReset && c.want == completes) {
			return "", fmt.Errorf("device %v, want a completion", o)
		}
		if c.check != nil {
			more, err := c.check(r, b)
			if err != nil {
				return "", fmt.Errorf("%s: %w", detail, err)
			}
			detail += ": " + more
			break
		}
		id, n := r.usedElem(0)
		status := int(b.statusByte())
		if c.status == noStatus {
			status = noStatus
		}
		detail += fmt.Sprintf(": used id %d len %d status %d", id, n, status)
		if id != 0 || n != c.usedLen || status != c.status {
			return "", fmt.Errorf("%s, want id 0 len %d status %d", detail, c.usedLen, c.status)
		}
	}
	return detail, d.reset()
}

// roundTrip is the recovery check after the attacks: an honest driver
// resets the device and does real I/O. With pattern set, it writes
// sector 1 (the disk must be writable), flushes and reads it back; in
// every case it reads sector 0 and returns its first bytes in hex, which
// the test compares with the image it made.
func roundTrip(d *device, ringPage dmaPage, b bufs, pattern []byte) (string, error) {
	if err := d.reset(); err != nil {
		return "", err
	}
	if err := d.negotiate(featVersion1); err != nil {
		return "", err
	}
	r := newRing(ringPage, 8)
	d.setupQueue(0, r.config())
	d.driverOK()
	do := func(typ uint32, sector uint64, dataLen uint32) error {
		b.misc.b[statusOff] = 0xff
		request(r, b, typ, sector, dataLen)
		if typ == blkFlush {
			r.setDesc(0, b.hdrAddr(), 16, descNext, 2) // no data
		}
		r.offer(0, 1)
		d.kick(0)
		o := r.wait(d, r.lastUsedIdx+1, caseTimeout)
		if !o.used || o.needsReset {
			return fmt.Errorf("request type %d sector %d: device %v", typ, sector, o)
		}
		r.lastUsedIdx = r.usedIdx()
		if s := b.statusByte(); s != blkStatusOK {
			return fmt.Errorf("request type %d sector %d: status %d", typ, sector, s)
		}
		return nil
	}
	if pattern != nil {
		copy(b.data.b[:sectorSize], pattern)
		if err := do(blkOut, 1, sectorSize); err != nil {
			return "", err
		}
		if err := do(blkFlush, 0, 0); err != nil {
			return "", err
		}
		clear(b.data.b)
		if err := do(blkIn, 1, sectorSize); err != nil {
			return "", err
		}
		if !bytes.Equal(b.data.b[:sectorSize], pattern) {
			return "", fmt.Errorf("sector 1 reads back %q, want the pattern written", b.data.b[:32])
		}
	}
	if err := do(blkIn, 0, sectorSize); err != nil {
		return "", err
	}
	head := hex.EncodeToString(b.data.b[:16])
	return head, d.reset()
}

// garbageRegisters are the writable registers and a few configuration
// offsets: where garbage can change what a running device does.
var garbageRegisters = []uintptr{
	regDevFeatSel, regDrvFeatures, regDrvFeatSel, regQueueSel, regQueueNum, regQueueReady,
	regQueueNotify, regIntACK, regStatus, regQueueDescLo, regQueueDescHi, regQueueDriverLo,
	regQueueDriverHi, regQueueDeviceLo, regQueueDeviceHi, regSHMSel, regQueueReset,
	regConfig, regConfig + 4, regConfig + 0x20,
}

// garbageValue is half the time a value drivers use (0, a single bit, a
// small power of 2, all ones) and otherwise random with bit 31 set. No
// value, in any address register, points into guest RAM above 1 MiB (the
// guest has 512 MiB; Linux leaves the first 1 MiB alone), so a device
// activated on garbage cannot scribble over the guest kernel: that
// would crash the guest and lose this report without testing vmm.
func garbageValue(rng *rand.Rand) uint32 {
	if rng.IntN(2) == 0 {
		small := []uint32{0, 1, 2, 4, 8, 16, 0xffffffff}
		return small[rng.IntN(len(small))]
	}
	return rng.Uint32() | 1<<31
}

// garbageWhileRunning has an honest driver stream reads on one thread
// while another writes garbage to the device's registers: resets,
// feature and queue changes and spurious notifications race the device's
// worker inside vmm. The honest side re-initializes the device whenever
// the garbage reset it.
func garbageWhileRunning(d *device, ringPage dmaPage, b bufs, writes int, rng *rand.Rand) (string, error) {
	capacity := d.capacity()
	if capacity == 0 {
		return "", fmt.Errorf("%s: capacity 0", d.name)
	}
	var stop atomic.Bool
	var completed, unanswered, reinits atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r *ring
		for i := uint64(0); !stop.Load(); i++ {
			if r == nil || d.status()&stDriverOK == 0 {
				reinits.Add(1)
				d.reset() // garbage may undo it at once: fine
				if d.negotiate(featVersion1) != nil {
					continue
				}
				r = newRing(ringPage, 8)
				d.setupQueue(0, r.config())
				d.driverOK()
			}
			b.misc.b[statusOff] = 0xff
			request(r, b, blkIn, i%capacity, sectorSize)
			r.offer(0, 1)
			d.kick(0)
			if o := r.wait(d, r.lastUsedIdx+1, 100*time.Millisecond); o.used {
				completed.Add(1)
			} else {
				unanswered.Add(1)
			}
			// A late answer must not count for the next request.
			r.lastUsedIdx = r.usedIdx()
		}
	}()
	start := time.Now()
	for i := 0; i < writes; i++ {
		d.w32(garbageRegisters[rng.IntN(len(garbageRegisters))], garbageValue(rng))
		if i%64 == 0 {
			runtime.Gosched() // let the honest driver in on a single vCPU too
		}
	}
	stop.Store(true)
	wg.Wait()
	return fmt.Sprintf("%d garbage register writes in %.1fs while an honest driver completed %d reads (%d unanswered, %d re-inits)",
		writes, time.Since(start).Seconds(), completed.Load(), unanswered.Load(), reinits.Load()), d.reset()
}
