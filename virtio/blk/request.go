package blk

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
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
	// unsafe (rawsys's raw calls, for an image on a local file system,
	// would take more, but a block device's go through x/sys). Linux merges physically contiguous pages into one segment,
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
	// The status byte is the last writable byte, the data before it.
	data := c.Writable.Len() - 1
	if data < 0 {
		d.log.printf("blk %s: request %d has no writable status byte; completed with used length 0", d.path, c.Head)
		return 0
	}
	status, n := d.execute(c, data)
	st := [1]byte{status}
	c.Writable.WriteAt(st[:], int64(data))
	return n + 1
}

// execute runs the request in c, whose writable buffers hold data bytes
// before the status byte, and returns its status and the data bytes it
// wrote to the guest.
func (d *Device) execute(c *virtio.Chain, data int) (status byte, written uint32) {
	r := &d.req
	// The header is the first 16 readable bytes, however the driver
	// split them across descriptors or shared them with data.
	if n, _ := c.Readable.ReadAt(r.hdr[:], 0); n < headerSize {
		d.log.printf("blk %s: request %d: header shorter than %d bytes", d.path, c.Head, headerSize)
		return statusIOErr, 0
	}
	le := binary.LittleEndian
	typ := le.Uint32(r.hdr[0:])
	sector := le.Uint64(r.hdr[8:])

	switch typ {
	case typeIn:
		n := r.setIOV(c.Writable, 0, data)
		if !d.inRange(sector, n, typ) {
			return statusIOErr, 0
		}
		if err := readFull(d.sys, d.fd, r.iov, int64(sector)*SectorSize); err != nil {
			d.log.printf("blk %s: read %d bytes at sector %d: %v", d.path, n, sector, err)
			return statusIOErr, 0
		}
		return statusOK, uint32(n)

	case typeOut:
		if d.readOnly {
			return statusIOErr, 0
		}
		n := r.setIOV(c.Readable, headerSize, c.Readable.Len()-headerSize)
		if !d.inRange(sector, n, typ) {
			return statusIOErr, 0
		}
		if err := writeFull(d.sys, d.fd, r.iov, int64(sector)*SectorSize); err != nil {
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
		// As much of the serial as fits before the status byte.
		n, _ := c.Writable.WriteAt(d.serial[:min(data, SerialLen)], 0)
		return statusOK, uint32(n)

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
	if n := c.Readable.Len() - headerSize; n != segmentSize {
		d.log.printf("blk %s: request %d: %d bytes of discard/write-zeroes segments, want one %d-byte segment", d.path, c.Head, n, segmentSize)
		return statusIOErr
	}
	c.Readable.ReadAt(r.seg[:], headerSize)
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

// setIOV points r.iov at the n bytes from offset off of bufs, which
// holds them all, and returns n.
func (r *request) setIOV(bufs virtio.Buffers, off, n int) uint64 {
	r.iov = bufs.AppendRange(r.iov[:0], off, n)
	return uint64(n)
}

// readFull fills every buffer of iov (none empty) from the file at off.
// It consumes iov.
func readFull(sys rawsys.Calls, fd int, iov [][]byte, off int64) error {
	// io.ErrUnexpectedEOF: the file shrank below the capacity read at
	// Open.
	return transferFull(sys, false, io.ErrUnexpectedEOF, fd, iov, off)
}

// writeFull writes every buffer of iov (none empty) to the file at off.
// It consumes iov.
func writeFull(sys rawsys.Calls, fd int, iov [][]byte, off int64) error {
	return transferFull(sys, true, io.ErrShortWrite, fd, iov, off)
}

// transferFull repeats preadv (or pwritev when write) until all of iov
// is done, at most iovBatch buffers a call (beyond that x/sys
// allocates), retrying EINTR; a call that moves nothing fails with
// short.
func transferFull(sys rawsys.Calls, write bool, short error, fd int, iov [][]byte, off int64) error {
	for len(iov) > 0 {
		batch := iov[:min(len(iov), iovBatch)]
		var n int
		var err error
		if write {
			n, err = sys.Pwritev(fd, batch, off)
		} else {
			n, err = sys.Preadv(fd, batch, off)
		}
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
