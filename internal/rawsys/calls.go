package rawsys

import "golang.org/x/sys/unix"

// Calls makes a device's file system calls, raw or through the
// scheduler: raw only for files on a local file system (LocalFD), where
// every call ends in bounded time. Its zero value goes through the
// scheduler. The errors are unix.Errno values either way, so callers
// compare them with ==.
type Calls struct{ raw bool }

// Raw returns Calls that skip the scheduler.
func Raw() Calls { return Calls{raw: true} }

// IsRaw says whether c skips the scheduler.
func (c Calls) IsRaw() bool { return c.raw }

// Openat is openat(2).
func (c Calls) Openat(dirfd int, path string, flags int, mode uint32) (int, error) {
	if c.raw {
		return openat(dirfd, path, flags, mode)
	}
	return unix.Openat(dirfd, path, flags, mode)
}

// Fstat is fstat(2).
func (c Calls) Fstat(fd int, st *unix.Stat_t) error {
	if c.raw {
		return fstat(fd, st)
	}
	return unix.Fstat(fd, st)
}

// Fstatfs is fstatfs(2).
func (c Calls) Fstatfs(fd int, st *unix.Statfs_t) error {
	if c.raw {
		return fstatfs(fd, st)
	}
	return unix.Fstatfs(fd, st)
}

// Close is close(2). On a local file system it may do the inode's final
// release (the last descriptor of an unlinked file frees its blocks),
// bounded by the file's size.
func (c Calls) Close(fd int) error {
	if c.raw {
		return closeFD(fd)
	}
	return unix.Close(fd)
}

// Unlinkat is unlinkat(2).
func (c Calls) Unlinkat(dirfd int, path string, flags int) error {
	if c.raw {
		return unlinkat(dirfd, path, flags)
	}
	return unix.Unlinkat(dirfd, path, flags)
}

// Fchownat is fchownat(2).
func (c Calls) Fchownat(dirfd int, path string, uid, gid, flags int) error {
	if c.raw {
		return fchownat(dirfd, path, uid, gid, flags)
	}
	return unix.Fchownat(dirfd, path, uid, gid, flags)
}

// Preadv is preadv(2); raw only up to MaxIO bytes in maxIovecs buffers.
func (c Calls) Preadv(fd int, iov [][]byte, off int64) (int, error) {
	if c.raw {
		return preadv(fd, iov, off)
	}
	return unix.Preadv(fd, iov, off)
}

// Pwritev is pwritev(2); raw only up to MaxIO bytes in maxIovecs
// buffers.
func (c Calls) Pwritev(fd int, iov [][]byte, off int64) (int, error) {
	if c.raw {
		return pwritev(fd, iov, off)
	}
	return unix.Pwritev(fd, iov, off)
}
