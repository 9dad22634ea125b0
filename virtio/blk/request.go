package blk

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
)

// Request types (virtio v1.2 §5.2.6, VIRTIO_BLK_T_*). Every other type,
// GET_LIFETIME, SECURE_ERASE and the zoned ones included, is answered
// with statusUnsupp.
const (
	typeIn          = 0
	typeOut         = 1
	typeFlush       = 4
	typeGetID       = 8
	typeDiscard     = 11
	typeWriteZeroes = 13
)

// Request status (virtio v1.2 §5.2.6, VIRTIO_BLK_S_*).
const (
	statusOK     = 0
	statusIOErr  = 1
	statusUnsupp = 2
)

const (
	// headerSize is struct virtio_blk_req up to data: le32 type,
	// le32 reserved, le64 sector (virtio v1.2 §5.2.6).
	headerSize = 16
	// segmentSize is struct virtio_blk_discard_write_zeroes: le64
	// sector, le32 num_sectors, le32 flags (virtio v1.2 §5.2.6).
	segmentSize = 16
	// flagUnmap is the unmap bit of its flags; the other 31 are reserved.
	flagUnmap = 1
	// iovBatch is how many buffers one preadv/pwritev gets: x/sys/unix
	// builds the iovec array on the stack up to 8 entries and on the heap
	// beyond, so batches of 8 keep requests allocation-free without
	// unsafe. Linux merges physically contiguous pages into one segment,
	// so most requests take a single call.
	iovBatch = 8
)

// request is the worker's preallocated scratch space, so processing a
// request allocates nothing.
type request struct {
	hdr [headerSize]byte
	seg [segmentSize]byte
	// iov holds the data buffers of the current request: slices of guest
	// RAM (from the chain) trimmed of the header and the status byte.
	iov [][]byte
	// zeros is written when fallocate cannot zero a range; nil on a
	// read-only disk.
	zeros []byte
	// noZeroRange remembers that fallocate(ZERO_RANGE) is unsupported
	// by the host file, so write zeroes goes straight to writing.
	noZeroRange bool
}

func (r *request) init(writable bool) {
	r.iov = make([][]byte, 0, virtio.MaxChain)
	if writable {
		r.zeros = make([]byte, zeroBufSize)
	}
}

// process executes the request in c and writes its status. It returns
// the used length: the bytes written to the chain's writable buffers,
// status byte included, or 0 when there is no status byte to write.
func (d *Device) process(c *virtio.Chain) uint32 {
	si := statusBuffer(c.Writable)
	if si < 0 {
		d.log.printf("blk %s: request %d has no writable status byte; completed with used length 0", d.path, c.Head)
		return 0
	}
	status, n := d.execute(c, si)
	b := c.Writable[si]
	b[len(b)-1] = status
	return n + 1
}

// statusBuffer is the index of the writable buffer holding the status
// byte, the last writable byte of the chain, or -1 when there is none.
func statusBuffer(w [][]byte) int {
	for i := len(w) - 1; i >= 0; i-- {
		if len(w[i]) > 0 {
			return i
		}
	}
	return -1
}

// execute runs the request whose status byte ends c.Writable[si] and
// returns its status and the data bytes it wrote to the guest.
func (d *Device) execute(c *virtio.Chain, si int) (status byte, written uint32) {
	r := &d.req
	// The header is the first 16 readable bytes, however the driver
	// split them across descriptors or shared them with data.
	if gather(r.hdr[:], c.Readable, 0) < headerSize {
		d.log.printf("blk %s: request %d: header shorter than %d bytes", d.path, c.Head, headerSize)
		return statusIOErr, 0
	}
	le := binary.LittleEndian
	typ := le.Uint32(r.hdr[0:])
	sector := le.Uint64(r.hdr[8:])

	switch typ {
	case typeIn:
		n := r.writableData(c.Writable, si)
		if !d.inRange(sector, n, typ) {
			return statusIOErr, 0
		}
		if err := readFull(d.fd, r.iov, int64(sector)*SectorSize); err != nil {
			d.log.printf("blk %s: read %d bytes at sector %d: %v", d.path, n, sector, err)
			return statusIOErr, 0
		}
		return statusOK, uint32(n)

	case typeOut:
		if d.readOnly {
			return statusIOErr, 0
		}
		n := r.readableData(c.Readable, headerSize)
		if !d.inRange(sector, n, typ) {
			return statusIOErr, 0
		}
		if err := writeFull(d.fd, r.iov, int64(sector)*SectorSize); err != nil {
			d.log.printf("blk %s: write %d bytes at sector %d: %v", d.path, n, sector, err)
			return statusIOErr, 0
		}
		return statusOK, 0

	case typeFlush:
		// Nothing to make durable on a read-only disk.
		if d.readOnly {
			return statusOK, 0
		}
		if err := fdatasync(d.fd); err != nil {
			d.log.printf("blk %s: flush: %v", d.path, err)
			return statusIOErr, 0
		}
		return statusOK, 0

	case typeGetID:
		r.writableData(c.Writable, si)
		return statusOK, uint32(scatter(r.iov, d.serial[:]))

	case typeDiscard, typeWriteZeroes:
		return d.zero(c, typ == typeDiscard), 0
	}
	return statusUnsupp, 0
}

// inRange checks a read or write of n bytes at sector: whole sectors, all
// on the disk, and a used length that fits its 32 bits. It never
// overflows, whatever the guest put in sector.
func (d *Device) inRange(sector, n uint64, typ uint32) bool {
	count := n / SectorSize
	if n%SectorSize == 0 && n < math.MaxUint32 && count <= d.capacity && sector <= d.capacity-count {
		return true
	}
	d.log.printf("blk %s: request type %d of %d bytes at sector %d: not whole sectors within the %d-sector disk", d.path, typ, n, sector, d.capacity)
	return false
}

// zero runs a discard or write-zeroes request. Only one segment is
// accepted (max_discard_seg and max_write_zeroes_seg are 1).
func (d *Device) zero(c *virtio.Chain, discard bool) byte {
	if d.readOnly {
		// A write request on a VIRTIO_BLK_F_RO device (virtio v1.2
		// §5.2.6.2).
		return statusIOErr
	}
	if discard && !d.punch {
		return statusUnsupp
	}
	r := &d.req
	if n := r.readableData(c.Readable, headerSize); n != segmentSize {
		d.log.printf("blk %s: request %d: %d bytes of discard/write-zeroes segments, want one %d-byte segment", d.path, c.Head, n, segmentSize)
		return statusIOErr
	}
	gather(r.seg[:], c.Readable, headerSize)
	le := binary.LittleEndian
	sector := le.Uint64(r.seg[0:])
	count := uint64(le.Uint32(r.seg[8:]))
	flags := le.Uint32(r.seg[12:])
	// Unknown flags, or unmap on a discard, are UNSUPP (virtio v1.2
	// §5.2.6.2).
	if flags&^flagUnmap != 0 || discard && flags&flagUnmap != 0 {
		return statusUnsupp
	}
	if count > maxZeroSectors || count > d.capacity || sector > d.capacity-count {
		d.log.printf("blk %s: discard/write zeroes of %d sectors at sector %d: beyond the %d-sector disk or the %d-sector limit", d.path, count, sector, d.capacity, maxZeroSectors)
		return statusIOErr
	}
	if count == 0 {
		return statusOK
	}
	off, n := int64(sector)*SectorSize, int64(count)*SectorSize
	var err error
	if discard {
		err = fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	} else {
		err = d.writeZeroes(off, n, flags&flagUnmap != 0)
	}
	if err != nil {
		d.log.printf("blk %s: zero %d bytes at sector %d: %v", d.path, n, sector, err)
		return statusIOErr
	}
	return statusOK
}

// writeZeroes makes [off, off+n) read as zeros: by punching a hole when
// the driver allows unmapping, else by fallocate(ZERO_RANGE), else by
// writing zeros. KEEP_SIZE everywhere: the disk never grows.
func (d *Device) writeZeroes(off, n int64, unmap bool) error {
	r := &d.req
	if unmap && d.punch {
		if fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
			return nil
		}
	}
	if !r.noZeroRange {
		err := fallocate(d.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		r.noZeroRange = true
	}
	for n > 0 {
		chunk := r.zeros[:min(n, int64(len(r.zeros)))]
		w, err := unix.Pwrite(d.fd, chunk, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case w == 0:
			return io.ErrShortWrite
		}
		off += int64(w)
		n -= int64(w)
	}
	return nil
}

// readableData points r.iov at the readable bytes after the first skip
// and returns their total.
func (r *request) readableData(bufs [][]byte, skip int) uint64 {
	r.iov = r.iov[:0]
	var n uint64
	for _, b := range bufs {
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		b = b[skip:]
		skip = 0
		r.iov = append(r.iov, b)
		n += uint64(len(b))
	}
	return n
}

// writableData points r.iov at the writable bytes before the status byte
// (the last byte of bufs[si]) and returns their total.
func (r *request) writableData(bufs [][]byte, si int) uint64 {
	r.iov = r.iov[:0]
	var n uint64
	for i, b := range bufs[:si+1] {
		if i == si {
			b = b[:len(b)-1]
		}
		if len(b) > 0 {
			r.iov = append(r.iov, b)
			n += uint64(len(b))
		}
	}
	return n
}

// gather copies into dst the bytes of bufs, seen as one stream, from
// offset skip on, and returns how many it copied.
func gather(dst []byte, bufs [][]byte, skip int) int {
	n := 0
	for _, b := range bufs {
		if n == len(dst) {
			break
		}
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}

// scatter copies src across bufs and returns how many bytes it copied.
func scatter(bufs [][]byte, src []byte) int {
	n := 0
	for _, b := range bufs {
		if n == len(src) {
			break
		}
		n += copy(b, src[n:])
	}
	return n
}

// readFull fills every buffer of iov (none empty) from the file at off.
// It consumes iov.
func readFull(fd int, iov [][]byte, off int64) error {
	// io.ErrUnexpectedEOF: the file shrank below the capacity read at
	// Open.
	return transferFull(unix.Preadv, io.ErrUnexpectedEOF, fd, iov, off)
}

// writeFull writes every buffer of iov (none empty) to the file at off.
// It consumes iov.
func writeFull(fd int, iov [][]byte, off int64) error {
	return transferFull(unix.Pwritev, io.ErrShortWrite, fd, iov, off)
}

// transferFull repeats op (preadv or pwritev) until all of iov is done,
// at most iovBatch buffers a call (beyond that x/sys allocates), retrying
// EINTR; a call that moves nothing fails with short.
func transferFull(op func(int, [][]byte, int64) (int, error), short error, fd int, iov [][]byte, off int64) error {
	for len(iov) > 0 {
		n, err := op(fd, iov[:min(len(iov), iovBatch)], off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return short
		}
		off += int64(n)
		iov = advance(iov, n)
	}
	return nil
}

// advance drops the first n bytes from iov, which holds at least n.
func advance(iov [][]byte, n int) [][]byte {
	for n > 0 {
		if n < len(iov[0]) {
			iov[0] = iov[0][n:]
			return iov
		}
		n -= len(iov[0])
		iov = iov[1:]
	}
	return iov
}

func fallocate(fd int, mode uint32, off, n int64) error {
	for {
		if err := unix.Fallocate(fd, mode, off, n); err != unix.EINTR {
			return err
		}
	}
}

func fdatasync(fd int) error {
	for {
		if err := unix.Fdatasync(fd); err != unix.EINTR {
			return err
		}
	}
}

// limiter passes at most one message a second to logf, so a guest
// hammering the device with bad requests cannot flood the host's log. It
// is used by the worker goroutine only.
type limiter struct {
	logf       func(format string, args ...any)
	next       time.Time
	suppressed int
}

func (l *limiter) printf(format string, args ...any) {
	now := time.Now()
	if now.Before(l.next) {
		l.suppressed++
		return
	}
	l.next = now.Add(time.Second)
	if l.suppressed > 0 {
		format += " (%d more suppressed)"
		args = append(args, l.suppressed)
		l.suppressed = 0
	}
	l.logf(format, args...)
}
