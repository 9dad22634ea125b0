package rawsys

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// File reads and writes a non-blocking descriptor (an eventfd, a socket)
// with raw calls, waiting in Go's netpoller when the descriptor is not
// ready, as os.File does. It allocates nothing per call. It is safe for
// concurrent use: reads (Read, TryRead) take turns, as writes do (an
// interrupt's eventfd is signalled by every queue's worker), and a read
// and a write run side by side.
type File struct {
	name string // for errors
	rc   syscall.RawConn

	// The raw calls, bound once, and what they read from or write to
	// and return: rbuf, rn and rerr guarded by rmu, wbuf, wn and werr
	// by wmu.
	readFn, tryFn, writeFn func(fd uintptr) bool
	rmu, wmu               sync.Mutex
	rbuf, wbuf             []byte
	rn, wn                 int
	rerr, werr             error
}

// NewFile wraps f, which must be non-blocking (os.NewFile of such a
// descriptor, or an os.File from net's or os's own calls): a raw read of
// a blocking one could wait for ever, holding a P. f stays the caller's
// to close.
func NewFile(f *os.File) (*File, error) { return NewConn(f, f.Name()) }

// NewConn is NewFile for any descriptor with a syscall.RawConn, such as
// a *net.TCPConn (the net package's are non-blocking); name is what its
// errors call it. The descriptor stays the caller's to close.
func NewConn(c syscall.Conn, name string) (*File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nonblock bool
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		var fl int
		fl, cerr = unix.FcntlInt(fd, unix.F_GETFL, 0)
		nonblock = fl&unix.O_NONBLOCK != 0
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("%s: %w", name, cerr)
	}
	if !nonblock {
		return nil, fmt.Errorf("%s: not non-blocking", name)
	}
	x := &File{name: name, rc: rc}
	x.readFn = x.readOnce
	x.tryFn = x.tryOnce
	x.writeFn = x.writeOnce
	return x, nil
}

// Read reads once into p, waiting until the descriptor has something to
// read, its read deadline passes or it is closed. A read of nothing into
// a non-empty p is io.EOF, as os.File's is.
func (x *File) Read(p []byte) (int, error) {
	x.rmu.Lock()
	defer x.rmu.Unlock()
	x.rbuf, x.rn, x.rerr = p, 0, nil
	err := x.rc.Read(x.readFn)
	x.rbuf = nil
	return x.readResult(p, err)
}

// TryRead is Read without waiting: ok is false when there is nothing to
// read now.
func (x *File) TryRead(p []byte) (n int, ok bool, err error) {
	x.rmu.Lock()
	defer x.rmu.Unlock()
	x.rbuf, x.rn, x.rerr = p, 0, nil
	err = x.rc.Read(x.tryFn)
	x.rbuf = nil
	if err == nil && x.rerr == unix.EAGAIN {
		return 0, false, nil
	}
	n, err = x.readResult(p, err)
	return n, err == nil, err
}

func (x *File) readResult(p []byte, err error) (int, error) {
	switch {
	case err != nil:
		return 0, x.pollErr("read", err)
	case x.rerr != nil:
		return 0, &os.PathError{Op: "read", Path: x.name, Err: x.rerr}
	case x.rn == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return x.rn, nil
}

// Write writes all of p, waiting while the descriptor has no room for
// it: one call for an eventfd or a packet socket, as many as a stream
// socket needs. On an error it returns how much was written before.
func (x *File) Write(p []byte) (int, error) {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	x.wbuf, x.wn, x.werr = p, 0, nil
	err := x.rc.Write(x.writeFn)
	x.wbuf = nil
	switch {
	case err != nil:
		return x.wn, x.pollErr("write", err)
	case x.werr != nil:
		return x.wn, &os.PathError{Op: "write", Path: x.name, Err: x.werr}
	}
	return x.wn, nil
}

// pollErr is the error of a wait in the netpoller: its deadline passed
// (os.ErrDeadlineExceeded), or, the only other way it fails, the file
// was closed, which os.File reports as os.ErrClosed.
func (x *File) pollErr(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &os.PathError{Op: op, Path: x.name, Err: err}
	}
	return &os.PathError{Op: op, Path: x.name, Err: fmt.Errorf("%w (%v)", os.ErrClosed, err)}
}

// readOnce is Read's read(2); it asks to wait for readiness on EAGAIN.
func (x *File) readOnce(fd uintptr) bool {
	x.tryOnce(fd)
	return x.rerr != unix.EAGAIN
}

// tryOnce is TryRead's read(2), retried only when interrupted.
func (x *File) tryOnce(fd uintptr) bool {
	for {
		x.rn, x.rerr = Read(int(fd), x.rbuf)
		if x.rerr != unix.EINTR {
			return true
		}
	}
}

func (x *File) writeOnce(fd uintptr) bool {
	for {
		n, err := Write(int(fd), x.wbuf[x.wn:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			x.werr = err
			return true
		case n == 0 && x.wn < len(x.wbuf):
			x.werr = io.ErrShortWrite
			return true
		}
		x.wn += n
		if x.wn >= len(x.wbuf) {
			return true
		}
		// A stream socket took part of it: write the rest, waiting
		// for room if need be, as os.File's Write does.
	}
}
