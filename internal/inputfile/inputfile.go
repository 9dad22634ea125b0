// Package inputfile opens the files a user names as vmm's inputs (the
// kernel, the initramfs, a snapshot's files, disk images) so that naming the wrong
// kind of file fails at once, in one line, instead of hanging vmm or
// filling its memory.
//
// It is a package of its own because several packages read such inputs
// (kernelcache, machine, snapshot, virtio/blk) and all need the same care, which
// os.Open does not take: open(2) of a FIFO that has no writer waits for
// one (fifo(7)) in a system call that neither -timeout nor a signal
// interrupts, and a character device such as /dev/zero never ends.
package inputfile

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Kind says which files besides regular ones Open accepts.
type Kind int

const (
	// Regular accepts only regular files (through symbolic links).
	Regular Kind = iota
	// RegularOrPipe also accepts a pipe or FIFO, read to its end, as
	// -kernel <(...) gives.
	RegularOrPipe
)

// ErrNotRegular is what Open's error wraps for a file of another kind.
var ErrNotRegular = errors.New("not a regular file")

// Open opens path read-only and returns it if it is a file of kind. The
// open does not wait for a FIFO's writer (O_NONBLOCK): a FIFO that Kind
// refuses is refused at once, and one it accepts is returned
// non-blocking, so reads wait in the Go runtime's poller (and see end of
// file while no writer has the FIFO open) rather than in read(2). A
// regular file is returned blocking, as os.Open returns it.
func Open(path string, kind Kind) (*os.File, error) {
	fd, mode, err := openNoWait(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	switch mode {
	case unix.S_IFREG:
		return blocking(fd, path)
	case unix.S_IFIFO:
		if kind == RegularOrPipe {
			return os.NewFile(uintptr(fd), path), nil
		}
	case unix.S_IFDIR:
		unix.Close(fd)
		return nil, fmt.Errorf("%s: is a directory, %w", path, ErrNotRegular)
	}
	unix.Close(fd)
	if kind == RegularOrPipe {
		return nil, fmt.Errorf("%s: %w or pipe", path, ErrNotRegular)
	}
	return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
}

// OpenDisk opens a disk image for reading, and for writing too if
// writable, and returns it (blocking) if it is a regular file or a block
// device. Like Open it does not wait for a FIFO's other end: -disk
// naming a FIFO is refused at once, where a read-only open(2) would wait
// for a writer that never comes.
func OpenDisk(path string, writable bool) (*os.File, error) {
	flags := unix.O_RDONLY
	if writable {
		flags = unix.O_RDWR
	}
	fd, mode, err := openNoWait(path, flags)
	if err != nil {
		return nil, err
	}
	if mode == unix.S_IFREG || mode == unix.S_IFBLK {
		return blocking(fd, path)
	}
	unix.Close(fd)
	return nil, fmt.Errorf("%s: %w or block device", path, ErrNotRegular)
}

// openNoWait opens path with flags (O_RDONLY or O_RDWR) without waiting
// for a FIFO's other end (O_NONBLOCK) and returns the descriptor, still
// non-blocking, and its file type (S_IFMT of its mode).
func openNoWait(path string, flags int) (int, uint32, error) {
	fd, err := openRetry(path, flags|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err == unix.EWOULDBLOCK {
		// Another process holds a write lease on it (fcntl(2),
		// F_SETLEASE): only a regular file can have one, and a
		// blocking open waits for the lease to break, as os.Open
		// would.
		fd, err = openRetry(path, flags|unix.O_CLOEXEC)
	}
	if err != nil {
		return -1, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fd, st.Mode & unix.S_IFMT, nil
}

// blocking returns fd as a blocking *os.File, as os.Open returns a
// regular file, or closes it.
func blocking(fd int, path string) (*os.File, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openRetry is open(2), again after EINTR: the Go runtime's preemption
// signals interrupt opens on some file systems (FUSE, CIFS), which
// os.Open retries too.
func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
