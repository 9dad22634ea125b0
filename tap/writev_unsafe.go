package tap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writev is writev(2) over iov, which the caller filled: unlike
// unix.Writev it builds no iovec array per call, and it is a raw call
// (package rawsys says why; the descriptor is non-blocking).
func writev(fd uintptr, iov []unix.Iovec) (int, unix.Errno) {
	if len(iov) == 0 {
		return 0, 0
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return int(n), errno
}
