package pci

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vmm-dev/vmm/bus"
)

// mapping is one BAR's range inside the window, in offsets from the
// window's base so no arithmetic can wrap.
type mapping struct {
	key        int
	start, end uint64 // [start, end) relative to Window.base
	dev        bus.Device
}

// Window is the bus.Device for the root bridge's memory window
// [base, base+size): the guest-physical range BARs may be placed in. It
// routes each access to the BAR mapping that holds it.
//
// The MMIO bus is fixed before vCPUs start, but BARs move whenever the
// guest reprograms them, so the window keeps its own table. Map and Unmap
// run from config-space writes on one vCPU while others access the
// window, so lookups take no lock and allocate nothing: they load an
// immutable table sorted by address through an atomic pointer. Updates
// are serialized by mu and publish a fresh copy. A vCPU that loaded the
// old table may still complete one access to a BAR just moved, which is
// what a guest racing its own BAR reprogramming can expect of hardware.
type Window struct {
	base, size uint64

	table atomic.Pointer[[]mapping]
	mu    sync.Mutex // serializes Map and Unmap
}

// NewWindow returns an empty window over [base, base+size). A size that
// would run past the top of the address space is cut there.
func NewWindow(base, size uint64) *Window {
	if base != 0 && size > -base {
		size = -base
	}
	w := &Window{base: base, size: size}
	w.table.Store(&[]mapping{})
	return w
}

// Map routes [addr, addr+size) (guest-physical) to dev, which sees offsets
// from addr; it replaces key's previous mapping. It returns false, mapping
// nothing for key, when the range is empty or not wholly inside the
// window, dev is nil, or the range overlaps another key's mapping: a guest
// can program overlapping BARs, and the first one mapped keeps the
// addresses (the other stays unmapped until it is mapped again). Keys are
// the caller's; they must be unique across everything sharing the window.
func (w *Window) Map(key int, addr, size uint64, dev bus.Device) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := *w.table.Load()
	t := make([]mapping, 0, len(old)+1)
	for _, m := range old {
		if m.key != key {
			t = append(t, m)
		}
	}
	ok := dev != nil && size != 0 && addr >= w.base && addr-w.base < w.size && size <= w.size-(addr-w.base)
	if ok {
		n := mapping{key: key, start: addr - w.base, dev: dev}
		n.end = n.start + size
		i := sort.Search(len(t), func(i int) bool { return t[i].start >= n.start })
		if i > 0 && t[i-1].end > n.start || i < len(t) && t[i].start < n.end {
			ok = false
		} else {
			t = append(t, mapping{})
			copy(t[i+1:], t[i:])
			t[i] = n
		}
	}
	w.table.Store(&t)
	return ok
}

// Unmap removes key's mapping, if it has one.
func (w *Window) Unmap(key int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := *w.table.Load()
	for i, m := range old {
		if m.key == key {
			t := make([]mapping, 0, len(old)-1)
			t = append(t, old[:i]...)
			t = append(t, old[i+1:]...)
			w.table.Store(&t)
			return
		}
	}
}

// find returns the mapping that holds the whole access of n bytes at
// window offset off, or nil. An access straddling a mapping's end, or two
// mappings, belongs to none, as on the bus.
func (w *Window) find(off uint64, n int) *mapping {
	if off >= w.size || uint64(n) > w.size-off {
		return nil
	}
	t := *w.table.Load()
	lo, hi := 0, len(t)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t[m].start <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return nil
	}
	m := &t[lo-1]
	if off >= m.end || uint64(n) > m.end-off {
		return nil
	}
	return m
}

// Read dispatches a read at offset off from the window's base. An access
// no mapping holds wholly reads all ones, as a master abort does on PCI.
func (w *Window) Read(off uint64, data []byte) {
	if m := w.find(off, len(data)); m != nil {
		m.dev.Read(off-m.start, data)
		return
	}
	for i := range data {
		data[i] = 0xff
	}
}

// Write dispatches a write at offset off from the window's base; a write
// no mapping holds wholly is dropped.
func (w *Window) Write(off uint64, data []byte) {
	if m := w.find(off, len(data)); m != nil {
		m.dev.Write(off-m.start, data)
	}
}
