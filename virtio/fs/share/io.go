package share

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// iovMax is IOV_MAX (limits.h): the most buffers one preadv or pwritev
// takes.
const iovMax = 1024

// readResult is a READ's answer, read when go-fuse knows where the reply
// goes: Readv reads from the file straight into the reply buffers (guest
// memory), with no copy in between. go-fuse finds Readv by its method
// set; Bytes is the fallback it uses otherwise.
type readResult struct {
	sys  rawsys.Calls
	h    *handle
	off  int64
	size int
	pool *sync.Pool // fsys.reads, which Done gives it back to
}

// Size is the most the read returns: the size asked for, capped at
// MaxWrite.
func (r *readResult) Size() int { return r.size }

// Done gives r back to the pool it came from; go-fuse calls it once,
// after its last use of r (the handle is pinned only while reading, so
// there is nothing else to release).
func (r *readResult) Done() {
	p := r.pool
	*r = readResult{}
	if p != nil {
		p.Put(r)
	}
}

func (r *readResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:min(len(buf), r.size)]
	n, st := r.Readv([][]byte{buf})
	return buf[:n], st
}

// Readv reads into dst, which go-fuse cut to at most Size bytes.
func (r *readResult) Readv(dst [][]byte) (int, fuse.Status) {
	var n int
	err := r.h.do(func(fd int) (err error) {
		n, err = preadvFull(r.sys, fd, dst, r.off)
		return err
	})
	if n == 0 && err != nil {
		return 0, status(err)
	}
	return n, fuse.OK
}

// preadvFull reads into iov from offset off until it is full or the file
// ends, and returns the bytes read; an error after some bytes were read
// is dropped, as read(2) would report those bytes.
func preadvFull(sys rawsys.Calls, fd int, iov [][]byte, off int64) (int, error) {
	total := 0
	for len(iov) > 0 {
		n, err := sys.Preadv(fd, iov[:min(len(iov), iovMax)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, err
		}
		if n == 0 {
			break
		}
		total += n
		off += int64(n)
		iov = advance(iov, n)
	}
	return total, nil
}

// pwritevFull writes iov at offset off, all of it unless the host file
// system refuses more (a full disk), and returns the bytes written.
func pwritevFull(sys rawsys.Calls, fd int, iov [][]byte, off int64) (int, error) {
	total := 0
	for len(iov) > 0 {
		n, err := sys.Pwritev(fd, iov[:min(len(iov), iovMax)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, err
		}
		if n == 0 {
			break
		}
		total += n
		off += int64(n)
		iov = advance(iov, n)
	}
	return total, nil
}

// advance drops the first n bytes of iov, shortening its first
// remaining buffer in place: preadvFull and pwritevFull consume the iov
// they are given (its slice headers, never the bytes they point to),
// which is theirs to change. Their callers' iovs are each made for one
// call (go-fuse cuts a fresh one from the reply or request buffers for
// every READ and WRITE; Bytes and Write wrap one buffer), so a short
// read or write, as at every file's end, costs no copy.
func advance(iov [][]byte, n int) [][]byte {
	for len(iov) > 0 && n >= len(iov[0]) {
		n -= len(iov[0])
		iov = iov[1:]
	}
	if n > 0 && len(iov) > 0 {
		iov[0] = iov[0][n:]
	}
	return iov
}
