// Package virtiotest is the driver side of virtio for tests: guest RAM on
// a plain byte slice (Mem), a driver for one split virtqueue (Driver) and
// fake notifier and interrupt lines. It never imports kvm, so device
// tests and fuzz targets run anywhere.
package virtiotest

import (
	"bytes"
	"errors"
	"fmt"
)

// guardLen bytes on each side of a Mem's RAM hold guardByte, so a test can
// prove with CheckGuards that nothing wrote past the RAM a device was
// given (a slice that escaped Slice's bounds would reach them first).
const (
	guardLen  = 4096
	guardByte = 0xA5
)

// ErrOutOfRange is what Mem.Slice wraps for an access not wholly in RAM,
// as guestmem.ErrOutOfRange is for the real thing.
var ErrOutOfRange = errors.New("virtiotest: guest address outside RAM")

// Mem is guest RAM of one region at a base guest-physical address. It
// implements virtio.Memory with guestmem's semantics: every byte of the
// access must be RAM, and an access of length 0 still needs its address
// inside RAM.
type Mem struct {
	base  uint64
	ram   []byte // len == cap: nothing can append into the guard
	whole []byte // guard + ram + guard
}

// NewMem returns size zeroed bytes of RAM at guest-physical address base.
// It panics if base+size overflows, a bug in the test.
func NewMem(base uint64, size int) *Mem {
	if size < 0 || base+uint64(size) < base {
		panic(fmt.Sprintf("virtiotest: RAM %#x+%#x wraps around", base, size))
	}
	whole := make([]byte, guardLen+size+guardLen)
	for i := range guardLen {
		whole[i] = guardByte
		whole[guardLen+size+i] = guardByte
	}
	return &Mem{base: base, ram: whole[guardLen : guardLen+size : guardLen+size], whole: whole}
}

// Base is the guest-physical address of the first byte of RAM.
func (m *Mem) Base() uint64 { return m.base }

// Len is the size of RAM in bytes.
func (m *Mem) Len() int { return len(m.ram) }

// End is the first guest-physical address after RAM.
func (m *Mem) End() uint64 { return m.base + uint64(len(m.ram)) }

// RAM is the whole of RAM, for tests that inspect or snapshot it.
func (m *Mem) RAM() []byte { return m.ram }

// Slice implements virtio.Memory.
func (m *Mem) Slice(addr, n uint64) ([]byte, error) {
	if addr >= m.base {
		off := addr - m.base
		size := uint64(len(m.ram))
		if off < size && n <= size-off {
			return m.ram[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: %#x+%#x", ErrOutOfRange, addr, n)
}

// Bytes is Slice for test code: it panics when the range is not RAM,
// which is a bug in the test.
func (m *Mem) Bytes(addr uint64, n int) []byte {
	b, err := m.Slice(addr, uint64(n))
	if err != nil {
		panic(err)
	}
	return b
}

// CheckGuards reports an error if anything wrote to the bytes just below
// or just above RAM.
func (m *Mem) CheckGuards() error {
	want := bytes.Repeat([]byte{guardByte}, guardLen)
	if !bytes.Equal(m.whole[:guardLen], want) {
		return errors.New("virtiotest: bytes below RAM were modified")
	}
	if !bytes.Equal(m.whole[guardLen+len(m.ram):], want) {
		return errors.New("virtiotest: bytes above RAM were modified")
	}
	return nil
}

// Contains reports whether b aliases RAM (is a subslice of it), so a test
// can check that every buffer a device resolved lies in guest memory. Go
// cannot order pointers without unsafe, so this scans RAM for b's first
// byte: fine for the small RAM of unit tests; prefer IsAt when the
// address is known.
func (m *Mem) Contains(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	first := &b[0]
	for i := range m.ram {
		if &m.ram[i] == first {
			return len(b) <= len(m.ram)-i
		}
	}
	return false
}

// IsAt reports whether b is exactly the len(b) bytes of RAM at addr.
func (m *Mem) IsAt(b []byte, addr uint64) bool {
	r, err := m.Slice(addr, uint64(len(b)))
	if err != nil {
		return false
	}
	return len(b) == 0 || &r[0] == &b[0]
}
