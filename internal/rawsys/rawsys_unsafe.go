package rawsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxIO is the largest transfer Preadv and Pwritev make without the
// scheduler; a larger one is made through it, so that no one call holds
// a P for long. 1 MiB is the share's largest READ and WRITE
// (share.MaxWrite, which its INIT reply offers), and make bench's block
// transfers are of that size too. A first measurement with 128 KiB left
// the share's 1 MiB READs on the scheduler: make bench's second
// sequential read then took 2.4x QEMU's context switches per MiB and
// 1.14x its CPU, where the small files had dropped to 0.85x and 0.79x.
const MaxIO = 1 << 20

// errno turns a raw call's result into the error unix's wrappers return:
// nil, or the unix.Errno itself (callers compare with ==).
func errno(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// openat is openat(2).
func openat(dirfd int, path string, flags int, mode uint32) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// fstat is fstat(2).
func fstat(fd int, st *unix.Stat_t) error {
	_, _, e := unix.RawSyscall(unix.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(st)), 0)
	return errno(e)
}

// fstatfs is fstatfs(2).
func fstatfs(fd int, st *unix.Statfs_t) error {
	_, _, e := unix.RawSyscall(unix.SYS_FSTATFS, uintptr(fd), uintptr(unsafe.Pointer(st)), 0)
	return errno(e)
}

// closeFD is close(2).
func closeFD(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// unlinkat is unlinkat(2).
func unlinkat(dirfd int, path string, flags int) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall(unix.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags))
	return errno(e)
}

// fchownat is fchownat(2).
func fchownat(dirfd int, path string, uid, gid, flags int) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	_, _, e := unix.RawSyscall6(unix.SYS_FCHOWNAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(uid), uintptr(gid), uintptr(flags), 0)
	return errno(e)
}

// Read is read(2) of at most len(b) bytes.
func Read(fd int, b []byte) (int, error) { return rw(unix.SYS_READ, fd, b) }

// Write is write(2) of b.
func Write(fd int, b []byte) (int, error) { return rw(unix.SYS_WRITE, fd, b) }

// rw is read(2) or write(2), as trap says.
func rw(trap uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// maxIovecs is how many buffers Preadv and Pwritev pass at once without
// allocating (its iovec array is on the stack); a longer list goes
// through unix's wrappers. 256 is a 1 MiB READ into page-sized buffers,
// how the guest's FUSE driver sends one.
const maxIovecs = 256

// preadv is preadv(2), through the scheduler when iov holds more than
// MaxIO bytes or more than maxIovecs buffers.
func preadv(fd int, iov [][]byte, off int64) (int, error) {
	return rwv(unix.SYS_PREADV, fd, iov, off, unix.Preadv)
}

// pwritev is pwritev(2), through the scheduler when iov holds more than
// MaxIO bytes or more than maxIovecs buffers.
func pwritev(fd int, iov [][]byte, off int64) (int, error) {
	return rwv(unix.SYS_PWRITEV, fd, iov, off, unix.Pwritev)
}

func rwv(trap uintptr, fd int, iov [][]byte, off int64, slow func(int, [][]byte, int64) (int, error)) (int, error) {
	if len(iov) > maxIovecs || size(iov) > MaxIO {
		return slow(fd, iov, off)
	}
	var vecs [maxIovecs]unix.Iovec
	n := 0
	for _, b := range iov {
		if len(b) == 0 {
			continue
		}
		vecs[n].Base = &b[0]
		vecs[n].SetLen(len(b))
		n++
	}
	// preadv and pwritev take the offset as two halves (low, high); on
	// amd64 the low half holds it all (fs/read_write.c, pos_from_hilo).
	r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&vecs[0])), uintptr(n), uintptr(off), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func size(iov [][]byte) int {
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	return n
}
