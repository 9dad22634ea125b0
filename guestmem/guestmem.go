// Package guestmem is the guest's physical RAM as seen from the host.
//
// It is its own package so that everything that touches guest memory
// (boot setup in machine, virtqueues in virtio, tests) goes through one
// type whose accessors check every guest-physical address and length: a
// guest-supplied address can only ever reach bytes inside guest RAM, and
// no code outside this package does pointer arithmetic on it. It imports
// nothing from kvm; machine hands the regions to KVM.
package guestmem

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Region is one contiguous block of guest-physical RAM backed by one host
// mapping.
type Region struct {
	GPA uint64
	Mem []byte
}

// End is the first guest-physical address after the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.Mem)) }

// Memory is the set of RAM regions, sorted and non-overlapping. It is
// immutable after New, so concurrent accessors need no lock.
type Memory struct {
	regions []Region
	mapped  bool // regions came from mmap and are unmapped by Close
}

// Range asks for size bytes of RAM at gpa.
type Range struct {
	GPA, Size uint64
}

// ErrOutOfRange reports an access that is not entirely inside one RAM
// region.
var ErrOutOfRange = errors.New("guest address outside RAM")

// pageSize is the unit guest RAM ranges come in: mmap maps, and KVM's
// memory slots take, whole 4 KiB pages (KVM_SET_USER_MEMORY_REGION in
// Documentation/virt/kvm/api.rst); mapRAM's huge-page alignment assumes
// it too.
const pageSize = 4 << 10

// New maps anonymous memory for each range. Pages are reserved lazily
// (MAP_NORESERVE) and never touched here, so a VM's RSS grows only with
// what the guest uses; each range's host address agrees with its
// guest-physical one modulo 2 MiB, so KVM can map it with huge pages.
func New(ranges []Range) (*Memory, error) {
	m := &Memory{mapped: true}
	for _, r := range ranges {
		if r.Size == 0 {
			continue
		}
		if r.GPA+r.Size < r.GPA {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x: size %#x wraps around", r.GPA, r.Size)
		}
		if n := len(m.regions); n > 0 && m.regions[n-1].End() > r.GPA {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x overlaps or precedes the previous range", r.GPA)
		}
		if r.Size > uint64(int(^uint(0)>>1)) {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x: size %#x too large for this host", r.GPA, r.Size)
		}
		if (r.GPA|r.Size)%pageSize != 0 {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x: size %#x: not whole 4 KiB pages", r.GPA, r.Size)
		}
		mem, err := mapRAM(-1, 0, r.GPA, int(r.Size), unix.MAP_PRIVATE|unix.MAP_NORESERVE)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("map %d MiB of guest RAM at %#x: %w", r.Size>>20, r.GPA, err)
		}
		m.regions = append(m.regions, Region{GPA: r.GPA, Mem: mem})
	}
	if len(m.regions) == 0 {
		return nil, errors.New("guest RAM: no memory")
	}
	return m, nil
}

// FromRegions wraps caller-owned byte slices as guest memory: tests and
// fuzzers use it to run guest-facing code on plain []byte.
func FromRegions(regions ...Region) (*Memory, error) {
	m := &Memory{}
	for _, r := range regions {
		if n := len(m.regions); n > 0 && m.regions[n-1].End() > r.GPA {
			return nil, fmt.Errorf("guest RAM at %#x overlaps or precedes the previous region", r.GPA)
		}
		if r.End() < r.GPA {
			return nil, fmt.Errorf("guest RAM at %#x wraps around", r.GPA)
		}
		m.regions = append(m.regions, r)
	}
	return m, nil
}

// Close unmaps memory that New mapped. Slices obtained earlier must not be
// used afterwards.
func (m *Memory) Close() error {
	var err error
	if m.mapped {
		for _, r := range m.regions {
			if e := unmapRAM(r.Mem); e != nil && err == nil {
				err = e
			}
		}
	}
	m.regions = nil
	return err
}

// Regions lists the RAM regions (for registering them with KVM and for
// the e820 map). The slice must not be modified.
func (m *Memory) Regions() []Region { return m.regions }

// Size is the total RAM in bytes.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Mem))
	}
	return n
}

// Slice returns the n bytes at gpa as a slice aliasing guest RAM, or
// ErrOutOfRange unless all of them lie in one region. It does not
// allocate, so it is fit for hot paths.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if gpa < r.GPA {
			break
		}
		off := gpa - r.GPA
		if off < uint64(len(r.Mem)) {
			if n > uint64(len(r.Mem))-off {
				break
			}
			return r.Mem[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: %#x+%#x", ErrOutOfRange, gpa, n)
}

// ReadAt copies len(p) bytes at gpa into p.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	b, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, b)
	return nil
}

// WriteAt copies p to guest RAM at gpa.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	b, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(b, p)
	return nil
}

// NewFromFile maps each range from file f, the ranges laid one after the
// other in the file (a snapshot's memory file), private and
// copy-on-write (MAP_PRIVATE): pages the guest only reads stay shared
// with every other mapping of the file through the page cache, and the
// guest's writes go to its own anonymous copies, never to the file. The
// file must hold at least the ranges' total size; what follows them (a
// snapshot's trailer) is not mapped.
func NewFromFile(ranges []Range, f *os.File) (*Memory, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("guest RAM file: %w", err)
	}
	var total uint64
	for _, r := range ranges {
		total += r.Size
	}
	if uint64(st.Size()) < total {
		return nil, fmt.Errorf("guest RAM file %s: %d bytes for %d of RAM", f.Name(), st.Size(), total)
	}
	m := &Memory{mapped: true}
	var off uint64
	for _, r := range ranges {
		if r.Size == 0 {
			continue
		}
		if n := len(m.regions); n > 0 && m.regions[n-1].End() > r.GPA {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x overlaps or precedes the previous range", r.GPA)
		}
		if r.Size > uint64(int(^uint(0)>>1)) || off > uint64(int64(^uint64(0)>>1)) {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x: size %#x too large for this host", r.GPA, r.Size)
		}
		if (r.GPA|r.Size)%pageSize != 0 {
			m.Close()
			return nil, fmt.Errorf("guest RAM at %#x: size %#x: not whole 4 KiB pages", r.GPA, r.Size)
		}
		mem, err := mapRAM(int(f.Fd()), int64(off), r.GPA, int(r.Size), unix.MAP_PRIVATE|unix.MAP_NORESERVE)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("map %d MiB of guest RAM at %#x from %s: %w", r.Size>>20, r.GPA, f.Name(), err)
		}
		m.regions = append(m.regions, Region{GPA: r.GPA, Mem: mem})
		off += r.Size
	}
	if len(m.regions) == 0 {
		return nil, errors.New("guest RAM: no memory")
	}
	return m, nil
}
