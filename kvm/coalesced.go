package kvm

import (
	"encoding/binary"
	"fmt"
	"os"
)

// coalescedZone mirrors struct kvm_coalesced_mmio_zone.
type coalescedZone struct {
	Addr uint64
	Size uint32
	PIO  uint32 // the union of pad and pio: 1 for a port range
}

const sizeofCoalescedZone = 16

// Layout of the ring KVM writes coalesced accesses to (struct
// kvm_coalesced_mmio_ring and struct kvm_coalesced_mmio in
// include/uapi/linux/kvm.h): two u32 indices, then as many 24-byte
// entries as fill the page (KVM_COALESCED_MMIO_MAX).
const (
	ringFirst   = 0 // first: the next entry userspace consumes
	ringLast    = 4 // last: the next entry KVM fills
	ringEntries = 8 // coalesced_mmio[]
	entrySize   = 24
	entryAddr   = 0  // phys_addr (the port, for a port range)
	entryLen    = 8  // len
	entryPIO    = 12 // pio
	entryData   = 16 // data[8]
	entryMax    = 8  // sizeof(data)
)

// RegisterCoalescedPIO makes guest writes to ports [port, port+size)
// land in the VM's coalesced ring instead of exiting to userspace
// (KVM_REGISTER_COALESCED_MMIO with pio set; KVM_CAP_COALESCED_PIO).
// Reads still exit, and so does a write when the ring is full. Fit for
// an index register whose value only the next access to its data port
// uses (PCI's CONFIG_ADDRESS, the RTC's index): that access exits, and
// userspace drains the ring before serving it.
func (vm *VM) RegisterCoalescedPIO(port uint64, size uint32) error {
	z := coalescedZone{Addr: port, Size: size, PIO: 1}
	if _, err := ioctlPtr(vm.fd(), kvmRegisterCoalescedMMIO, &z); err != nil {
		return fmt.Errorf("KVM_REGISTER_COALESCED_MMIO for ports %#x+%d: %w", port, size, err)
	}
	return nil
}

// CoalescedRing is the VM's ring of coalesced writes, one page of every
// vCPU's kvm_run mapping (all vCPUs map the same page), at the page
// offset KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO) reports. KVM
// fills it under its own lock; Drain is the only consumer and must not
// run on two goroutines at once.
type CoalescedRing struct {
	page []byte
	max  uint32 // entries: KVM_COALESCED_MMIO_MAX
}

// CoalescedRing returns the ring within c's kvm_run mapping, pageOffset
// pages in.
func (c *VCPU) CoalescedRing(pageOffset int) (*CoalescedRing, error) {
	ps := os.Getpagesize()
	if pageOffset <= 0 || pageOffset > (len(c.run)-ps)/ps {
		return nil, fmt.Errorf("vCPU %d: coalesced ring at page %d lies outside the %d-byte kvm_run mapping", c.id, pageOffset, len(c.run))
	}
	return newCoalescedRing(c.run[pageOffset*ps:][:ps]), nil
}

func newCoalescedRing(page []byte) *CoalescedRing {
	return &CoalescedRing{page: page, max: uint32((len(page) - ringEntries) / entrySize)}
}

// Pending reports whether KVM has written entries Drain has not taken.
// It is two loads, cheap enough for every exit.
func (r *CoalescedRing) Pending() bool {
	return loadU32(r.page, ringFirst) != loadU32(r.page, ringLast)
}

// Drain hands each entry to f in the order KVM wrote them, oldest
// first, and gives its slot back. data aliases the ring and is valid
// only during the call. An index or length outside the ring is an error
// (the page is shared with the kernel, but checked all the same).
func (r *CoalescedRing) Drain(f func(addr uint64, data []byte, pio bool)) error {
	le := binary.LittleEndian
	// One lap at most: KVM cannot refill slots until they are given
	// back, so a ring whose last keeps moving still ends.
	for range r.max {
		first, last := loadU32(r.page, ringFirst), loadU32(r.page, ringLast)
		if first == last {
			return nil
		}
		if first >= r.max || last >= r.max {
			return fmt.Errorf("coalesced ring: indices %d and %d, want below %d", first, last, r.max)
		}
		e := r.page[ringEntries+int(first)*entrySize:][:entrySize]
		n := le.Uint32(e[entryLen:])
		if n > entryMax {
			return fmt.Errorf("coalesced ring: entry %d is %d bytes, want at most %d", first, n, entryMax)
		}
		f(le.Uint64(e[entryAddr:]), e[entryData:][:n], le.Uint32(e[entryPIO:]) != 0)
		storeU32(r.page, ringFirst, (first+1)%r.max)
	}
	return nil
}
