package kvm

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlVal issues an ioctl whose argument is a plain value, retrying on
// EINTR: Go's runtime preempts goroutines with signals, which interrupt
// blocking ioctls that were never meant to fail.
func ioctlVal(fd, req, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// ioctlPtr issues an ioctl whose argument points at a mirrored struct. The
// pointer conversion stays inside the Syscall expression so the object is
// kept alive and not moved for the duration of the call.
func ioctlPtr[T any](fd, req uintptr, p *T) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(p)))
		if e == unix.EINTR {
			continue
		}
		runtime.KeepAlive(p)
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// ioctlBuf issues an ioctl on a variable-length struct laid out in b
// (kvm_cpuid2 and kvm_msrs end in flexible arrays).
func ioctlBuf(fd, req uintptr, b []byte) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&b[0])))
		if e == unix.EINTR {
			continue
		}
		runtime.KeepAlive(b)
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// runIoctl issues KVM_RUN once. Unlike the others it does not retry on
// EINTR: an interrupted KVM_RUN is how another thread asks this vCPU to
// stop, and the caller must look at why.
func runIoctl(fd uintptr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, kvmRun, 0)
	if e != 0 {
		return e
	}
	return nil
}

// hostAddr is the host virtual address of guest memory, which is what
// kvm_userspace_memory_region.userspace_addr wants. The memory comes from
// mmap, outside the Go heap, so the address is stable.
func hostAddr(mem []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
}
