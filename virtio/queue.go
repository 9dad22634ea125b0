package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
)

// Split virtqueue layout (virtio v1.2 §2.7).
const (
	DescSize = 16 // struct virtq_desc

	DescFlagNext     = 1 // VIRTQ_DESC_F_NEXT
	DescFlagWrite    = 2 // VIRTQ_DESC_F_WRITE
	DescFlagIndirect = 4 // VIRTQ_DESC_F_INDIRECT

	AvailFlagNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	UsedFlagNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY

	// MaxChain bounds the descriptors one chain may have, indirect
	// tables included; longer chains are rejected as malformed.
	MaxChain = 1024
)

// Ring geometry (virtio v1.2 §2.7, struct virtq_avail and virtq_used):
// both rings start with le16 flags and le16 idx, then size entries, then
// one le16 event field (used_event in the avail ring, avail_event in the
// used ring), which is part of the layout whether or not EVENT_IDX is
// negotiated (§2.7 gives the ring sizes as 6+2*size and 6+8*size).
const (
	ringHeader    = 4 // flags, idx
	availElemSize = 2 // le16 ring[i]
	usedElemSize  = 8 // struct virtq_used_elem: le32 id, le32 len

	// Alignment of each part (virtio v1.2 §2.7, table "Virtqueue Part
	// Alignment").
	descAlign  = 16
	availAlign = 2
	usedAlign  = 4
)

func availRingSize(size uint16) uint64 { return ringHeader + availElemSize*uint64(size) + 2 }
func usedRingSize(size uint16) uint64  { return ringHeader + usedElemSize*uint64(size) + 2 }

// ErrMalformed wraps every error caused by what the driver put in a
// queue: the device must not process that queue any further.
var ErrMalformed = errors.New("malformed virtqueue")

// QueueConfig is what the driver writes to the transport for one queue.
type QueueConfig struct {
	Size  uint16 // number of entries, a power of 2 no larger than the max
	Desc  uint64 // guest-physical address of the descriptor table
	Avail uint64 // of the available (driver) ring
	Used  uint64 // of the used (device) ring
}

// Chain is one descriptor chain, resolved to guest memory. Its slices
// alias guest RAM and are reused by the next Pop.
//
// A zero Chain borrows storage preallocated in the Queue, so every zero
// Chain popped from one queue shares it and only the latest Pop is valid.
// A device that holds several popped chains at once gives each its own
// storage with NewChain.
//
// Zero-length descriptors are legal but carry nothing, so they are
// checked (index, flags, order) and left out of Readable and Writable;
// their address is not resolved.
type Chain struct {
	Head uint16
	// Readable are the device-readable buffers, in chain order, then
	// Writable the device-writable ones (virtio v1.2 §2.7.4.2: readable
	// descriptors come first). Devices address each as one stream with
	// Buffers' methods, wherever the driver split it.
	Readable Buffers
	Writable Buffers

	store [][]byte // from NewChain; nil borrows the queue's
}

// NewChain returns a Chain with storage of its own for MaxChain buffers,
// for a device that keeps several popped chains at once (virtio-net RX
// gathering buffers for one frame). Pop into it never allocates.
func NewChain() *Chain {
	return &Chain{store: make([][]byte, MaxChain)}
}

// ReadableLen and WritableLen are the total bytes of each kind.
func (c *Chain) ReadableLen() int { return c.Readable.Len() }
func (c *Chain) WritableLen() int { return c.Writable.Len() }

// Queue is the device side of one split virtqueue. Only one goroutine (the
// device's worker for this queue) may use it at a time.
type Queue struct {
	max   uint16
	store [][]byte // chain storage for zero Chains, MaxChain entries

	ready    bool
	eventIdx bool
	indirect bool
	size     uint16
	mem      Memory
	// The three parts of the ring, resolved once by Setup so the hot
	// path never calls Memory.Slice for them: their bounds were checked
	// then, and a guest cannot move them without a reset.
	desc  []byte
	avail []byte
	used  []byte

	lastAvail   uint16 // avail index of the next chain to pop
	shadowAvail uint16 // avail idx as last read from the driver
	usedIdx     uint16 // used index of the next element to Add
	published   uint16 // used idx last stored to the ring by Publish
	signalled   uint16 // published as of the previous NeedInterrupt

	// fence is the target of barrier's locked read-modify-write; its
	// value is meaningless.
	fence atomic.Uint64
}

// NewQueue returns a queue of at most max entries with its chain storage
// preallocated, so Pop never allocates.
//
// The storage holds MaxChain buffers: a direct chain is bounded by the
// queue size but an indirect one only by MaxChain, and because readable
// descriptors precede writable ones both lists share one array.
func NewQueue(max uint16) *Queue {
	return &Queue{max: max, store: make([][]byte, MaxChain)}
}

// Max is the largest size the device supports.
func (q *Queue) Max() uint16 { return q.max }

// Size is the size the driver set up, at most Max (0 before Setup): the
// most chains the driver can have posted at once.
func (q *Queue) Size() uint16 { return q.size }

// Setup validates cfg against mem (size a power of 2 within Max, rings
// aligned as §2.7 requires and wholly in RAM) and makes the queue ready
// with its indices at 0. eventIdx says whether VIRTIO_F_EVENT_IDX was
// negotiated, indirect whether VIRTIO_F_INDIRECT_DESC was.
//
// Setup writes nothing to guest memory: the used ring stays as the driver
// initialised it until the device first publishes or changes a flag or
// event field.
func (q *Queue) Setup(mem Memory, cfg QueueConfig, eventIdx, indirect bool) error {
	q.Reset()
	if cfg.Size == 0 || cfg.Size&(cfg.Size-1) != 0 {
		return fmt.Errorf("virtqueue: size %d is not a power of 2", cfg.Size)
	}
	if cfg.Size > q.max {
		return fmt.Errorf("virtqueue: size %d exceeds the maximum %d", cfg.Size, q.max)
	}
	parts := [...]struct {
		name  string
		addr  uint64
		n     uint64
		align uint64
		dst   *[]byte
	}{
		{"descriptor table", cfg.Desc, DescSize * uint64(cfg.Size), descAlign, &q.desc},
		{"available ring", cfg.Avail, availRingSize(cfg.Size), availAlign, &q.avail},
		{"used ring", cfg.Used, usedRingSize(cfg.Size), usedAlign, &q.used},
	}
	for _, p := range parts {
		if p.addr%p.align != 0 {
			q.Reset()
			return fmt.Errorf("virtqueue: %s at %#x is not %d-byte aligned", p.name, p.addr, p.align)
		}
		b, err := mem.Slice(p.addr, p.n)
		if err != nil {
			q.Reset()
			return fmt.Errorf("virtqueue: %s at %#x+%#x: %w", p.name, p.addr, p.n, err)
		}
		*p.dst = b
	}
	q.mem = mem
	q.size = cfg.Size
	q.eventIdx = eventIdx
	q.indirect = indirect
	q.ready = true
	return nil
}

// Ready reports whether Setup succeeded since the last Reset.
func (q *Queue) Ready() bool { return q.ready }

// Reset forgets the configuration and indices.
func (q *Queue) Reset() {
	q.ready = false
	q.eventIdx = false
	q.indirect = false
	q.size = 0
	q.mem = nil
	q.desc, q.avail, q.used = nil, nil, nil
	q.lastAvail, q.shadowAvail = 0, 0
	q.usedIdx, q.published, q.signalled = 0, 0, 0
	clear(q.store) // drop references to guest RAM
}

// barrier is a full memory barrier for the accesses to guest RAM around
// it, against both the compiler and the CPU, without unsafe.
//
// The compiler: a sync/atomic operation takes and produces the memory
// state, so Go's SSA backend orders every load and store before it with
// every one after it. The CPU: amd64 is TSO and only lets a later load
// pass an earlier store; a LOCK-prefixed read-modify-write (Add compiles
// to LOCK XADD) drains the store buffer first, so it orders that case
// too. The driver on the other side issues its own barriers (virtio v1.2
// §2.7.13.3.1).
func (q *Queue) barrier() { q.fence.Add(0) }

// The ring fields are little-endian (virtio v1.2 §1.4) and naturally
// aligned by Setup's checks. encoding/binary's 16-bit accessors compile to
// single 16-bit moves on amd64, so the driver never sees an index half
// written and we never read one half updated.
func get16(b []byte, off uint64) uint16    { return binary.LittleEndian.Uint16(b[off:]) }
func put16(b []byte, off uint64, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }

// Offsets of the idx and event fields in the rings.
const (
	offFlags = 0
	offIdx   = 2
)

func (q *Queue) offUsedEvent() uint64  { return ringHeader + availElemSize*uint64(q.size) }
func (q *Queue) offAvailEvent() uint64 { return ringHeader + usedElemSize*uint64(q.size) }

// Pop takes the next available chain into c. It returns false with a nil
// error when the driver has made nothing new available, and an error
// wrapping ErrMalformed when the avail index runs more than Size ahead,
// or the chain has a loop, is longer than MaxChain or Size allows, has a
// writable descriptor before a readable one, an indirect descriptor
// inside an indirect table or with a length not a multiple of 16, a
// descriptor index out of range, or a buffer not wholly in RAM.
//
// An INDIRECT descriptor is also malformed when INDIRECT_DESC was not
// negotiated, when it has NEXT set as well (§2.7.5.3.1), or when its
// table is empty, larger than MaxChain entries or not wholly in RAM. An
// indirect descriptor may end a direct chain, not only start one, and its
// own WRITE flag is ignored (§2.7.5.3.2).
//
// On error c has no buffers and nothing is consumed, so a retry fails the
// same way. A queue that is not Ready has nothing available: Pop returns
// false, nil.
func (q *Queue) Pop(c *Chain) (bool, error) {
	if !q.ready {
		return false, nil
	}
	if q.lastAvail == q.shadowAvail {
		idx := get16(q.avail, offIdx)
		// The ring entries below must be read after the index that
		// covers them (virtio v1.2 §2.7.13.3.1, the driver's side).
		q.barrier()
		if ahead := idx - q.lastAvail; ahead > q.size {
			c.Readable, c.Writable = nil, nil
			return false, fmt.Errorf("%w: avail index %d ran ahead of %d by %d, more than the queue size %d",
				ErrMalformed, idx, q.lastAvail, ahead, q.size)
		}
		q.shadowAvail = idx
		if idx == q.lastAvail {
			return false, nil
		}
	}
	slot := q.lastAvail & (q.size - 1)
	head := get16(q.avail, ringHeader+availElemSize*uint64(slot))
	if err := q.walk(c, head); err != nil {
		c.Readable, c.Writable = nil, nil
		return false, err
	}
	q.lastAvail++
	return true, nil
}

// walk resolves the chain starting at head into c.
func (q *Queue) walk(c *Chain, head uint16) error {
	buf := c.store
	if buf == nil {
		buf = q.store
	}
	n, nr := 0, 0 // buffers resolved, of which readable
	writable := false
	table, count := q.desc, uint64(q.size)
	// A direct chain cannot visit more descriptors than the table has
	// without repeating one, so the bound also catches loops.
	limit := min(int(q.size), MaxChain)
	indirect := false
	kind := "descriptor" // what idx indexes, for errors
	idx := uint64(head)
	for visited := 1; ; visited++ {
		if idx >= count {
			return fmt.Errorf("%w: chain %d: %s %d outside its table of %d", ErrMalformed, head, kind, idx, count)
		}
		if visited > limit {
			return fmt.Errorf("%w: chain %d: more than %d descriptors (loop or over-long chain)", ErrMalformed, head, limit)
		}
		d := table[idx*DescSize : idx*DescSize+DescSize]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&DescFlagIndirect != 0 {
			switch {
			case !q.indirect:
				return fmt.Errorf("%w: chain %d: descriptor %d is indirect but INDIRECT_DESC was not negotiated", ErrMalformed, head, idx)
			case indirect:
				return fmt.Errorf("%w: chain %d: %s %d is itself indirect", ErrMalformed, head, kind, idx)
			case flags&DescFlagNext != 0:
				return fmt.Errorf("%w: chain %d: descriptor %d has both INDIRECT and NEXT", ErrMalformed, head, idx)
			case length == 0 || length%DescSize != 0:
				return fmt.Errorf("%w: chain %d: indirect table length %d is not a positive multiple of %d", ErrMalformed, head, length, DescSize)
			case length/DescSize > MaxChain:
				return fmt.Errorf("%w: chain %d: indirect table of %d entries exceeds %d", ErrMalformed, head, length/DescSize, MaxChain)
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return fmt.Errorf("%w: chain %d: indirect table at %#x+%#x: %w", ErrMalformed, head, addr, length, err)
			}
			table, count, idx = t, uint64(length/DescSize), 0
			indirect = true
			kind = "indirect table entry"
			// The table's entries count against MaxChain, the
			// descriptor pointing at it does not: a full table of
			// MaxChain entries is a legal chain.
			limit = MaxChain
			visited--
			continue
		}

		if flags&DescFlagWrite != 0 {
			writable = true
		} else if writable {
			return fmt.Errorf("%w: chain %d: readable %s %d after a writable one", ErrMalformed, head, kind, idx)
		}
		if length > 0 {
			b, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return fmt.Errorf("%w: chain %d: %s %d: buffer at %#x+%#x: %w", ErrMalformed, head, kind, idx, addr, length, err)
			}
			// n < visited <= limit <= MaxChain == len(buf).
			buf[n] = b
			n++
			if !writable {
				nr++
			}
		}
		if flags&DescFlagNext == 0 {
			break
		}
		idx = uint64(next)
	}
	c.Head = head
	c.Readable = buf[:nr:nr]
	c.Writable = buf[nr:n:n]
	return nil
}

// Unpop returns the last n popped chains to the available ring, for a
// device that could not use them yet (virtio-net RX without enough
// buffers for a frame).
//
// n is capped at the chains popped and not yet Added, so the queue never
// hands out again a chain it has already returned to the driver.
func (q *Queue) Unpop(n uint16) {
	if !q.ready {
		return
	}
	if pending := q.lastAvail - q.usedIdx; pending <= q.size && n > pending {
		n = pending
	}
	n = min(n, q.size)
	q.lastAvail -= n
}

// Add puts a used element (the chain's head and the bytes written to its
// writable buffers) in the used ring without making it visible.
func (q *Queue) Add(head uint16, written uint32) {
	if !q.ready {
		return
	}
	off := ringHeader + usedElemSize*uint64(q.usedIdx&(q.size-1))
	e := q.used[off : off+usedElemSize]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.usedIdx++
}

// Publish makes every element added since the last Publish visible to
// the driver: a store barrier, then the used index.
func (q *Queue) Publish() {
	if !q.ready || q.published == q.usedIdx {
		return
	}
	// The elements must be visible before the index that covers them
	// (virtio v1.2 §2.7.8). amd64 keeps stores in order; the barrier
	// keeps the compiler from reordering them.
	q.barrier()
	put16(q.used, offIdx, q.usedIdx)
	q.published = q.usedIdx
}

// Push is Add then Publish.
func (q *Queue) Push(head uint16, written uint32) {
	q.Add(head, written)
	q.Publish()
}

// NeedInterrupt says whether the driver wants an interrupt for what was
// published since the previous call: with EVENT_IDX, whether used_event
// (read after a full barrier) was crossed (vring_need_event); without,
// whether VIRTQ_AVAIL_F_NO_INTERRUPT is clear. It is false when nothing
// was published since the previous call.
func (q *Queue) NeedInterrupt() bool {
	if !q.ready || q.signalled == q.published {
		return false
	}
	old, cur := q.signalled, q.published
	q.signalled = cur
	// The used index store in Publish must be visible before we read the
	// driver's wishes, or a driver that re-enabled interrupts and then
	// checked the used index in between would wait forever.
	q.barrier()
	if q.eventIdx {
		// vring_need_event (virtio v1.2 §2.7.7): interrupt when
		// used_event lies in [old, cur), in modulo-2^16 arithmetic.
		ev := get16(q.avail, q.offUsedEvent())
		return cur-ev-1 < cur-old
	}
	return get16(q.avail, offFlags)&AvailFlagNoInterrupt == 0
}

// DisableNotify asks the driver not to notify while the device is
// already processing: VIRTQ_USED_F_NO_NOTIFY without EVENT_IDX, and
// nothing with it (avail_event is simply left behind).
func (q *Queue) DisableNotify() {
	if !q.ready || q.eventIdx {
		return
	}
	put16(q.used, offFlags, UsedFlagNoNotify)
}

// EnableNotify asks for notifications again (clears NO_NOTIFY, or sets
// avail_event to the next index to pop, only when EVENT_IDX was
// negotiated), then after a full barrier re-reads the avail index and
// reports whether chains arrived meanwhile, which the caller must
// process because no notification will come for them.
func (q *Queue) EnableNotify() bool {
	if !q.ready {
		return false
	}
	if q.eventIdx {
		put16(q.used, q.offAvailEvent(), q.lastAvail)
	} else {
		put16(q.used, offFlags, 0)
	}
	// The store above must reach the driver before we sample its index:
	// the one hardware reordering amd64 allows (virtio v1.2 §2.7.10).
	q.barrier()
	return get16(q.avail, offIdx) != q.lastAvail
}
