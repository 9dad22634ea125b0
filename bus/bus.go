// Package bus routes guest port-I/O and MMIO accesses to devices.
//
// It has its own home because both address spaces (x86 I/O ports and guest
// physical MMIO) need the same thing: a set of non-overlapping ranges that is
// fixed before the first vCPU runs, so the exit path can look a device up
// without locks or allocation. A device only ever sees an offset into its own
// range, never an absolute address, so it cannot depend on where the machine
// layout put it.
package bus

import (
	"fmt"
	"sort"
)

// Device is anything that answers guest reads and writes.
//
// offset is relative to the start of the range the device was inserted at;
// len(data) is the access width (1, 2, 4 or 8 bytes for a vCPU exit). Read
// fills data; Write consumes it. Both are called from vCPU threads, possibly
// several at once, so a device guards its own state.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

type entry struct {
	base, size uint64
	dev        Device
	name       string
}

// Bus is an ordered set of device ranges. Insert everything before the
// machine starts; after that the bus is read-only and safe for concurrent
// Read and Write calls.
type Bus struct {
	entries []entry // sorted by base, non-overlapping
}

// Insert adds dev at [base, base+size). It refuses empty ranges, ranges that
// wrap around the address space and ranges that overlap an existing device,
// naming both devices so a layout mistake explains itself.
func (b *Bus) Insert(name string, base, size uint64, dev Device) error {
	if size == 0 {
		return fmt.Errorf("bus: %s: empty range at %#x", name, base)
	}
	end := base + size
	if end < base {
		return fmt.Errorf("bus: %s: range %#x+%#x wraps around", name, base, size)
	}
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		prev := b.entries[i-1]
		if prev.base+prev.size > base {
			return fmt.Errorf("bus: %s [%#x-%#x) overlaps %s [%#x-%#x)", name, base, end, prev.name, prev.base, prev.base+prev.size)
		}
	}
	if i < len(b.entries) {
		next := b.entries[i]
		if next.base < end {
			return fmt.Errorf("bus: %s [%#x-%#x) overlaps %s [%#x-%#x)", name, base, end, next.name, next.base, next.base+next.size)
		}
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base: base, size: size, dev: dev, name: name}
	return nil
}

// find returns the device whose range holds the whole access, or nil.
// An access that straddles the end of a range belongs to no device.
func (b *Bus) find(addr uint64, n int) (Device, uint64) {
	es := b.entries
	lo, hi := 0, len(es)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if es[m].base <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return nil, 0
	}
	e := &es[lo-1]
	off := addr - e.base
	if off >= e.size || uint64(n) > e.size-off {
		return nil, 0
	}
	return e.dev, off
}

// Read dispatches a guest read. It reports false when no device claims the
// access; the caller decides what unclaimed reads return (on a PC, all ones).
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off := b.find(addr, len(data))
	if dev == nil {
		return false
	}
	dev.Read(off, data)
	return true
}

// Write dispatches a guest write, reporting false when no device claims it.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off := b.find(addr, len(data))
	if dev == nil {
		return false
	}
	dev.Write(off, data)
	return true
}
