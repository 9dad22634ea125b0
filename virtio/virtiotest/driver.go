package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmm-dev/vmm/virtio"
)

// ErrNoSpace is returned by Add when the queue has too few free
// descriptors or the data area too little room: the test must consume
// used elements first (or give the driver more room).
var ErrNoSpace = errors.New("virtiotest: no room in the queue")

// Buf is one buffer of a chain the driver offers. With WriteLen > 0 it is
// a device-writable buffer of WriteLen zeroed bytes (Data is ignored);
// otherwise a device-readable buffer holding a copy of Data, which may be
// empty. A zero-length writable buffer needs SetDesc.
type Buf struct {
	Data     []byte
	WriteLen int
}

// R is a readable buffer holding data.
func R(data []byte) Buf { return Buf{Data: data} }

// W is a writable buffer of n bytes.
func W(n int) Buf { return Buf{WriteLen: n} }

// Driver is the driver side of one split virtqueue living in a Mem.
//
// NewDriver lays the queue out at an address: the descriptor table, the
// available ring and the used ring back to back with the alignment virtio
// v1.2 §2.7 asks for, then a data area of dataLen bytes from which Add
// takes each chain's buffers (and its indirect table). The data area is a
// ring: space and descriptors are recycled when Used consumes a chain's
// used element, in any order, so long sequences never run out.
//
// The driver never notifies: the test signals the device's Notifier
// itself. Driver and device share the rings as a real guest and device
// do, without locks; under the race detector the test must let the
// device's worker go idle (Notifier.Idle, Interrupt.Wait) before calling
// the driver again.
type Driver struct {
	m    *Mem
	size uint16

	desc, avail, used  uint64 // ring addresses
	dataStart, dataEnd uint64 // the data area
	cursor             uint64 // next allocation tries here
	free               []uint16
	chains             map[uint16]*chain // offered, not yet used
	done               map[uint16]*chain // used, until the head is reused
	lastUsed           uint16

	// DropWritten makes Add leave writable buffers as they were (not
	// zeroed) and Used recycle a chain without keeping what the device
	// wrote (Written is then nil), for benchmarks that would otherwise
	// time the driver's clearing and copying of every reply.
	DropWritten bool
}

type chain struct {
	descs    []uint16 // descriptors of the main table this chain holds
	lo, hi   uint64   // its data allocation
	writable []span   // the writable buffers, in order
	written  [][]byte // their contents when Used consumed the chain
}

type span struct{ addr, n uint64 }

func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// NewDriver lays out a queue of size entries at address at (rounded up to
// 16) with dataLen bytes of data area after the rings; End is the first
// address past it all. It fails unless everything is in m's RAM.
// Add(bufs...) needs the sum of the buffer lengths (each rounded up to
// 8), plus 16 per buffer for AddIndirect, in the data area.
func NewDriver(m *Mem, size uint16, at uint64, dataLen int) (*Driver, error) {
	if size == 0 || dataLen < 0 {
		return nil, fmt.Errorf("virtiotest: driver of size %d with %d data bytes", size, dataLen)
	}
	d := &Driver{m: m, size: size}
	d.desc = alignUp(at, 16)
	d.avail = d.desc + 16*uint64(size)
	d.used = alignUp(d.avail+6+2*uint64(size), 4)
	d.dataStart = alignUp(d.used+6+8*uint64(size), 16)
	d.dataEnd = d.dataStart + uint64(dataLen)
	if d.desc < at || d.dataEnd < d.dataStart {
		return nil, fmt.Errorf("virtiotest: queue at %#x wraps around", at)
	}
	if _, err := m.Slice(d.desc, d.dataEnd-d.desc); err != nil {
		return nil, fmt.Errorf("virtiotest: queue at %#x..%#x: %w", d.desc, d.dataEnd, err)
	}
	d.Reset()
	return d, nil
}

// Reset zeroes the rings and forgets every chain, as a driver does before
// (re)initialising a queue.
func (d *Driver) Reset() {
	clear(d.m.Bytes(d.desc, int(d.dataStart-d.desc)))
	d.free = d.free[:0]
	for i := range d.size {
		d.free = append(d.free, i)
	}
	d.chains = make(map[uint16]*chain)
	d.done = make(map[uint16]*chain)
	d.cursor = d.dataStart
	d.lastUsed = 0
}

// Config is what the driver would write to the transport.
func (d *Driver) Config() virtio.QueueConfig {
	return virtio.QueueConfig{Size: d.size, Desc: d.desc, Avail: d.avail, Used: d.used}
}

// End is the first guest-physical address after the driver's data area.
func (d *Driver) End() uint64 { return d.dataEnd }

// Size is the number of entries.
func (d *Driver) Size() uint16 { return d.size }

// Free is the number of free descriptors.
func (d *Driver) Free() int { return len(d.free) }

// Outstanding is the number of chains offered and not yet consumed by Used.
func (d *Driver) Outstanding() int { return len(d.chains) }

// StartAt sets the available and used indices (in the rings and in the
// driver) to idx, for tests of index wraparound; the device side must be
// told the same. Only valid with nothing outstanding.
func (d *Driver) StartAt(idx uint16) {
	d.SetAvailIdx(idx)
	d.put16(d.used+2, idx)
	d.lastUsed = idx
}

// Add offers a chain of bufs, in order, each in its own descriptor linked
// with NEXT, and makes it available. It returns the head descriptor.
func (d *Driver) Add(bufs ...Buf) (uint16, error) {
	return d.add(false, bufs)
}

// AddIndirect offers bufs through an indirect table in the data area,
// pointed to by a single descriptor.
func (d *Driver) AddIndirect(bufs ...Buf) (uint16, error) {
	return d.add(true, bufs)
}

func (d *Driver) add(indirect bool, bufs []Buf) (uint16, error) {
	if len(bufs) == 0 {
		return 0, errors.New("virtiotest: empty chain")
	}
	ndesc := len(bufs)
	if indirect {
		ndesc = 1
	}
	if ndesc > len(d.free) {
		return 0, fmt.Errorf("%w: %d descriptors wanted, %d free", ErrNoSpace, ndesc, len(d.free))
	}
	var need uint64
	if indirect {
		need = 16 * uint64(len(bufs))
	}
	for _, b := range bufs {
		need += alignUp(uint64(bufLen(b)), 8)
	}
	lo, err := d.alloc(need)
	if err != nil {
		return 0, err
	}
	c := &chain{lo: lo, hi: lo + need, descs: append([]uint16(nil), d.free[:ndesc]...)}
	d.free = d.free[ndesc:]

	// Entries of the table the buffers are described in: the main one,
	// or the indirect table at the start of the allocation.
	p := lo
	if indirect {
		p += 16 * uint64(len(bufs))
	}
	for i, b := range bufs {
		n := bufLen(b)
		var flags uint16
		if b.WriteLen > 0 {
			flags = virtio.DescFlagWrite
			if !d.DropWritten {
				clear(d.m.Bytes(p, n))
			}
			c.writable = append(c.writable, span{p, uint64(n)})
		} else {
			copy(d.m.Bytes(p, n), b.Data)
		}
		var next uint16
		if i+1 < len(bufs) {
			flags |= virtio.DescFlagNext
			next = uint16(i + 1)
			if !indirect {
				next = c.descs[i+1]
			}
		}
		if indirect {
			writeDesc(d.m.Bytes(lo+16*uint64(i), 16), p, uint32(n), flags, next)
		} else {
			d.SetDesc(c.descs[i], p, uint32(n), flags, next)
		}
		p += alignUp(uint64(n), 8)
	}
	head := c.descs[0]
	if indirect {
		d.SetDesc(head, lo, uint32(16*len(bufs)), virtio.DescFlagIndirect, 0)
	}
	delete(d.done, head)
	d.chains[head] = c
	idx := d.AvailIdx()
	d.SetAvailRing(idx, head)
	d.SetAvailIdx(idx + 1)
	return head, nil
}

func bufLen(b Buf) int {
	if b.WriteLen > 0 {
		return b.WriteLen
	}
	return len(b.Data)
}

// alloc finds n bytes of the data area not used by an outstanding chain:
// after the previous allocation, at the start, or after any outstanding
// chain.
func (d *Driver) alloc(n uint64) (uint64, error) {
	fits := func(p uint64) bool {
		if p < d.dataStart || p > d.dataEnd || n > d.dataEnd-p {
			return false
		}
		for _, c := range d.chains {
			if p < c.hi && c.lo < p+n {
				return false
			}
		}
		return true
	}
	try := func(p uint64) (uint64, bool) {
		if fits(p) {
			d.cursor = p + n
			return p, true
		}
		return 0, false
	}
	if p, ok := try(d.cursor); ok {
		return p, nil
	}
	if p, ok := try(d.dataStart); ok {
		return p, nil
	}
	for _, c := range d.chains {
		if p, ok := try(c.hi); ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: %d data bytes wanted of %d", ErrNoSpace, n, d.dataEnd-d.dataStart)
}

// Used consumes the next used element the device published, if any. When
// head is an outstanding chain, its descriptors and data are recycled and
// its writable buffers' contents kept for Written.
func (d *Driver) Used() (head uint16, n uint32, ok bool) {
	if d.UsedIdx() == d.lastUsed {
		return 0, 0, false
	}
	e := d.m.Bytes(d.used+4+8*uint64(d.lastUsed%d.size), 8)
	id := binary.LittleEndian.Uint32(e)
	n = binary.LittleEndian.Uint32(e[4:])
	d.lastUsed++
	head = uint16(id)
	if c, live := d.chains[head]; live && id <= 0xffff {
		for _, s := range c.writable {
			if d.DropWritten {
				break
			}
			c.written = append(c.written, append([]byte(nil), d.m.Bytes(s.addr, int(s.n))...))
		}
		d.free = append(d.free, c.descs...)
		delete(d.chains, head)
		d.done[head] = c
	}
	return head, n, true
}

// Written is the contents of the writable buffers of the chain at head as
// Used consumed it, in chain order; nil if head was not consumed (or was
// offered again since).
func (d *Driver) Written(head uint16) [][]byte {
	if c := d.done[head]; c != nil {
		return c.written
	}
	return nil
}

// WrittenBytes is Written concatenated and cut to n bytes (what the
// device reported), for devices that write one stream across buffers.
func (d *Driver) WrittenBytes(head uint16, n uint32) []byte {
	var out []byte
	for _, b := range d.Written(head) {
		out = append(out, b...)
	}
	if uint64(n) < uint64(len(out)) {
		out = out[:n]
	}
	return out
}

// Raw access to the rings, for tests that build malformed queues.

// DescAddr, AvailAddr and UsedAddr are where the rings are.
func (d *Driver) DescAddr() uint64  { return d.desc }
func (d *Driver) AvailAddr() uint64 { return d.avail }
func (d *Driver) UsedAddr() uint64  { return d.used }

// DataAddr and DataEnd bound the data area.
func (d *Driver) DataAddr() uint64 { return d.dataStart }
func (d *Driver) DataEnd() uint64  { return d.dataEnd }

// SetDesc writes descriptor i of the main table; i is taken modulo size.
func (d *Driver) SetDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	writeDesc(d.m.Bytes(d.desc+16*uint64(i%d.size), 16), addr, length, flags, next)
}

// Desc reads descriptor i of the main table; i is taken modulo size.
func (d *Driver) Desc(i uint16) (addr uint64, length uint32, flags, next uint16) {
	b := d.m.Bytes(d.desc+16*uint64(i%d.size), 16)
	return binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint32(b[8:]),
		binary.LittleEndian.Uint16(b[12:]), binary.LittleEndian.Uint16(b[14:])
}

// WriteDesc encodes a descriptor into b (16 bytes), for indirect tables
// a test builds itself.
func WriteDesc(b []byte, addr uint64, length uint32, flags, next uint16) {
	writeDesc(b, addr, length, flags, next)
}

func writeDesc(b []byte, addr uint64, length uint32, flags, next uint16) {
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func (d *Driver) put16(addr uint64, v uint16) {
	binary.LittleEndian.PutUint16(d.m.Bytes(addr, 2), v)
}

func (d *Driver) get16(addr uint64) uint16 {
	return binary.LittleEndian.Uint16(d.m.Bytes(addr, 2))
}

// SetAvailFlags writes the avail ring's flags (virtio.AvailFlagNoInterrupt).
func (d *Driver) SetAvailFlags(f uint16) { d.put16(d.avail, f) }

// SetAvailIdx writes the avail ring's idx.
func (d *Driver) SetAvailIdx(idx uint16) { d.put16(d.avail+2, idx) }

// AvailIdx reads the avail ring's idx.
func (d *Driver) AvailIdx() uint16 { return d.get16(d.avail + 2) }

// SetAvailRing writes head into the avail ring at index slot (modulo size).
func (d *Driver) SetAvailRing(slot, head uint16) {
	d.put16(d.avail+4+2*uint64(slot%d.size), head)
}

// AvailRing reads the avail ring at index slot (modulo size).
func (d *Driver) AvailRing(slot uint16) uint16 {
	return d.get16(d.avail + 4 + 2*uint64(slot%d.size))
}

// SetUsedEvent writes used_event, the avail ring's trailing field.
func (d *Driver) SetUsedEvent(v uint16) { d.put16(d.avail+4+2*uint64(d.size), v) }

// AvailEvent reads avail_event, the used ring's trailing field.
func (d *Driver) AvailEvent() uint16 { return d.get16(d.used + 4 + 8*uint64(d.size)) }

// UsedFlags reads the used ring's flags (virtio.UsedFlagNoNotify).
func (d *Driver) UsedFlags() uint16 { return d.get16(d.used) }

// UsedIdx reads the used ring's idx.
func (d *Driver) UsedIdx() uint16 { return d.get16(d.used + 2) }

// UsedElem reads used ring entry slot (modulo size).
func (d *Driver) UsedElem(slot uint16) (id, length uint32) {
	e := d.m.Bytes(d.used+4+8*uint64(slot%d.size), 8)
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
}
