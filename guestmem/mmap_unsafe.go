package guestmem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is x86-64's 2 MiB page (Intel SDM vol. 3A, 4.5 "4-Level
// Paging"; AMD APM vol. 2, 5.3.4): KVM maps guest RAM into the guest
// with pages that large only where the host backs it with a huge page
// (transparent or not) and the host address and the guest-physical one
// agree modulo its size (arch/x86/kvm/mmu: the host mapping level is
// taken from the host page table at the same offset).
const hugePage = 2 << 20

// mapRAM maps size bytes of guest RAM for the range at gpa: anonymous
// memory when fd < 0, else the file's bytes from off, privately. The
// host address is congruent to gpa modulo hugePage, which plain mmap
// does not promise (before Linux 6.7 it aligns nothing): the nested
// benchmark's guest took 189 of KVM's 4 KiB page faults per MiB it read
// into fresh memory where QEMU, which aligns its RAM, took none.
// Anonymous RAM is also advised MADV_HUGEPAGE, for hosts whose
// transparent huge pages are "madvise" only.
func mapRAM(fd int, off int64, gpa uint64, size int, flags int) ([]byte, error) {
	// Reserve a window a huge page larger, inaccessible and backed by
	// nothing, then map the RAM over the part of it that is aligned.
	window := uintptr(size) + hugePage
	base, err := unix.MmapPtr(-1, 0, nil, window, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	skip := (uintptr(gpa) - uintptr(base)) & (hugePage - 1)
	addr := unsafe.Add(base, skip)
	if fd < 0 {
		flags |= unix.MAP_ANONYMOUS
	}
	p, err := unix.MmapPtr(fd, off, addr, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, flags|unix.MAP_FIXED)
	if err != nil {
		unix.MunmapPtr(base, window)
		return nil, err
	}
	if p != addr {
		unix.MunmapPtr(base, window)
		return nil, fmt.Errorf("mmap placed RAM at %p, not at %p", p, addr)
	}
	// Give back the window's unused head and tail.
	if skip > 0 {
		unix.MunmapPtr(base, skip)
	}
	if tail := window - skip - uintptr(size); tail > 0 {
		unix.MunmapPtr(unsafe.Add(addr, size), tail)
	}
	mem := unsafe.Slice((*byte)(addr), size)
	if fd < 0 {
		// Only advice: a host without transparent huge pages says
		// EINVAL, and RAM works as before.
		_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	}
	return mem, nil
}

// unmapRAM unmaps what mapRAM mapped.
func unmapRAM(mem []byte) error {
	if len(mem) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(mem)), uintptr(len(mem)))
}

// hostAddr is where mem starts in vmm's address space, for tests of the
// alignment.
func hostAddr(mem []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(mem))) }
