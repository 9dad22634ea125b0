// Package blk is the virtio block device (virtio v1.2 §5.2) backed by a
// raw disk image: a regular file or a host block device.
//
// One request queue. VIRTIO_BLK_F_MQ would let each vCPU submit on its
// own queue, which pays off only when the backend can run requests in
// parallel; here every request is a synchronous pread/pwrite on one file
// descriptor, so a second queue would add a second goroutine contending
// for the same file and nothing else. One worker goroutine per device
// also keeps completions in submission order, which makes the device easy
// to reason about and to test.
//
// I/O goes through the host page cache with preadv/pwritev straight
// between the file and the guest's buffers (no bounce buffer, no
// O_DIRECT), like QEMU's default cache=writeback. The device therefore
// offers VIRTIO_BLK_F_FLUSH, so the guest knows it has a volatile write
// cache, and VIRTIO_BLK_T_FLUSH maps to fdatasync: whatever the guest
// flushed is durable on the host, which is all virtio v1.2 §5.2.6.2 asks
// of a writeback cache. O_DIRECT would need sector-aligned guest buffers
// (which virtio does not promise) and would make every request wait for
// the host disk.
//
// Guest mistakes never stop the device: a request it cannot make sense
// of completes with VIRTIO_BLK_S_IOERR, or, when there is not even a
// status byte to report it in, with a used length of 0; both are logged,
// at most once a second. Only a malformed queue (what Queue.Pop rejects)
// fails the device, through Env.Fail, until the driver resets it.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/inputfile"
	"github.com/vmm-dev/vmm/internal/rawsys"
	"github.com/vmm-dev/vmm/virtio"
)

// Feature bits (virtio v1.2 §5.2.3), as bit numbers.
const (
	FeatureSegMax      = 2  // VIRTIO_BLK_F_SEG_MAX: seg_max is valid
	FeatureRO          = 5  // VIRTIO_BLK_F_RO: the disk is read-only
	FeatureBlkSize     = 6  // VIRTIO_BLK_F_BLK_SIZE: blk_size is valid
	FeatureFlush       = 9  // VIRTIO_BLK_F_FLUSH: VIRTIO_BLK_T_FLUSH works
	FeatureDiscard     = 13 // VIRTIO_BLK_F_DISCARD
	FeatureWriteZeroes = 14 // VIRTIO_BLK_F_WRITE_ZEROES
)

// SectorSize is the unit of capacity and of every sector number in the
// protocol, whatever blk_size says (virtio v1.2 §5.2.4).
const SectorSize = 512

// SerialLen is the size of the VIRTIO_BLK_T_GET_ID answer: a NUL-padded
// ASCII string without a terminator when it is this long (virtio v1.2
// §5.2.6, VIRTIO_BLK_ID_BYTES in linux/virtio_blk.h).
const SerialLen = 20

// Offsets in struct virtio_blk_config (virtio v1.2 §5.2.4), all
// little-endian.
const (
	cfgCapacity               = 0  // le64
	cfgSizeMax                = 8  // le32
	cfgSegMax                 = 12 // le32
	cfgGeometry               = 16 // le16 cylinders, u8 heads, u8 sectors
	cfgBlkSize                = 20 // le32
	cfgTopology               = 24 // u8, u8, le16, le32
	cfgWriteback              = 32 // u8
	cfgNumQueues              = 34 // le16
	cfgMaxDiscardSectors      = 36 // le32
	cfgMaxDiscardSeg          = 40 // le32
	cfgDiscardSectorAlignment = 44 // le32
	cfgMaxWriteZeroesSectors  = 48 // le32
	cfgMaxWriteZeroesSeg      = 52 // le32
	cfgWriteZeroesMayUnmap    = 56 // u8, then 3 bytes of padding
	// configSize ends after write_zeroes_may_unmap's padding: the
	// secure-erase and zoned fields that follow are only meaningful with
	// features this device does not offer, and read as zero anyway.
	configSize = 60
)

const (
	// queueSize is the request queue's maximum size, Linux's default
	// virtio-blk queue depth.
	queueSize = 256
	// segMax bounds the data segments of one request so that a driver
	// without indirect descriptors still fits header, data and status in
	// the queue (seg_max + 2 descriptors), as QEMU does.
	segMax = queueSize - 2
	// maxZeroSectors bounds num_sectors of a discard or write-zeroes
	// segment (max_discard_sectors, max_write_zeroes_sectors): 1 GiB, so
	// one request cannot keep the worker busy for long when write zeroes
	// falls back to writing.
	maxZeroSectors = 1 << 21
	// discardAlignment (discard_sector_alignment) is 4 KiB, the block
	// size of common host file systems: a punch that is not block-aligned
	// still reads back as zeros but frees nothing at its edges.
	discardAlignment = 4096 / SectorSize
	// zeroBufSize is the buffer written repeatedly when the host cannot
	// zero a range with fallocate.
	zeroBufSize = 64 << 10
)

// Options configure Open.
type Options struct {
	// Path is the disk image: a regular file or a block device.
	Path string
	// ReadOnly opens it O_RDONLY and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// Serial is the GET_ID string, at most SerialLen printable ASCII
	// bytes; empty means derived from the file name (see Open).
	Serial string
	// Logf reports guest and host I/O errors, at most once a second;
	// nil means log.Printf.
	Logf func(format string, args ...any)
}

// Device is a virtio-blk device. Its configuration is fixed at Open: a
// disk that changes size under a running guest is not noticed.
type Device struct {
	path     string
	f        *os.File
	fd       int
	sys      rawsys.Calls // how data moves: raw for an image on a local file system
	readOnly bool
	capacity uint64 // in sectors
	serial   [SerialLen]byte
	features uint64
	config   [configSize]byte
	// punch says fallocate(PUNCH_HOLE) works: DISCARD is offered and
	// WRITE_ZEROES with the unmap flag deallocates.
	punch bool

	// mu serializes Activate, Reset and Close; the worker never takes it.
	mu       sync.Mutex
	active   bool
	stop     atomic.Bool
	wg       sync.WaitGroup
	notifier virtio.Notifier

	// req is the worker's scratch state, owned by the worker goroutine
	// while active and by tests otherwise.
	req request
	log limiter
}

// Open opens the disk image o.Path and locks it the way QEMU does (see
// lockImage), so that no other vmm or QEMU writes an image this one
// uses, nor reads one this one writes. Its size must be a non-zero multiple
// of 512 bytes: a raw image with a partial last sector was most likely
// not meant as a disk, and silently hiding its tail from the guest would
// lose data the user put there, so Open rejects it instead of rounding
// down (truncate -s can fix the file).
//
// The default serial is the file name with every byte outside printable
// ASCII replaced by '_', cut to SerialLen bytes, which is what
// /dev/disk/by-id shows in the guest.
func Open(o Options) (*Device, error) {
	d, err := open(o)
	var named namedError
	switch {
	case errors.As(err, &named):
		return nil, fmt.Errorf("disk: %w", named.err)
	case err != nil:
		return nil, fmt.Errorf("disk %s: %w", o.Path, err)
	}
	return d, nil
}

// namedError is an error that names the disk's path already (package
// inputfile's, os.PathError), which Open does not name again.
type namedError struct{ err error }

func (e namedError) Error() string { return e.err.Error() }
func (e namedError) Unwrap() error { return e.err }

func open(o Options) (*Device, error) {
	if o.Path == "" {
		return nil, errors.New("no path")
	}
	serial := o.Serial
	if serial == "" {
		serial = defaultSerial(o.Path)
	} else if err := checkSerial(serial); err != nil {
		return nil, err
	}
	f, err := inputfile.OpenDisk(o.Path, !o.ReadOnly)
	if err != nil {
		return nil, namedError{err}
	}
	d := &Device{path: o.Path, f: f, readOnly: o.ReadOnly}
	if err := d.init(); err != nil {
		f.Close()
		return nil, err
	}
	copy(d.serial[:], serial)
	d.log.logf = o.Logf
	if d.log.logf == nil {
		d.log.logf = log.Printf
	}
	d.req.init(!o.ReadOnly)
	return d, nil
}

// init checks the file, sizes the disk, probes what the host supports
// and builds the features and configuration space.
func (d *Device) init() error {
	st, err := d.f.Stat()
	if err != nil {
		return err
	}
	mode := st.Mode()
	regular := mode.IsRegular()
	if !regular && (mode&os.ModeDevice == 0 || mode&os.ModeCharDevice != 0) {
		return fmt.Errorf("not a regular file or block device (mode %v)", mode)
	}
	// Seek, not Stat: a block device's Stat size is 0.
	size, err := d.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size: %w", err)
	}
	switch {
	case size == 0:
		return errors.New("empty disk image")
	case size%SectorSize != 0:
		return fmt.Errorf("size %d is not a multiple of %d bytes", size, SectorSize)
	}
	d.fd = int(d.f.Fd())
	d.capacity = uint64(size) / SectorSize
	d.sys = callsFor(d.fd, regular)

	// Two writers on one image, or a reader caching what a writer
	// changes, corrupt the guest's file system, so the image is locked
	// with QEMU's byte-range locks (lock.go), which other vmm and QEMU
	// processes both respect. The locks go with the file, at Close.
	if err := lockImage(d.fd, d.readOnly); err != nil {
		return err
	}

	// Probe hole punching past the end of the file, where it changes
	// nothing. Block devices are not probed (offsets past their end are
	// an error): they get write zeroes, which falls back to writing, but
	// no discard.
	if !d.readOnly && regular {
		d.punch = fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, size, SectorSize) == nil
	}

	d.features = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc |
		1<<FeatureSegMax | 1<<FeatureBlkSize | 1<<FeatureFlush
	if d.readOnly {
		d.features |= 1 << FeatureRO
	} else {
		d.features |= 1 << FeatureWriteZeroes
		if d.punch {
			d.features |= 1 << FeatureDiscard
		}
	}

	c := d.config[:]
	le := binary.LittleEndian
	le.PutUint64(c[cfgCapacity:], d.capacity)
	le.PutUint32(c[cfgSegMax:], segMax)
	le.PutUint32(c[cfgBlkSize:], SectorSize)
	if d.features&(1<<FeatureDiscard) != 0 {
		le.PutUint32(c[cfgMaxDiscardSectors:], maxZeroSectors)
		le.PutUint32(c[cfgMaxDiscardSeg:], 1)
		le.PutUint32(c[cfgDiscardSectorAlignment:], discardAlignment)
	}
	if d.features&(1<<FeatureWriteZeroes) != 0 {
		le.PutUint32(c[cfgMaxWriteZeroesSectors:], maxZeroSectors)
		le.PutUint32(c[cfgMaxWriteZeroesSeg:], 1)
		if d.punch {
			c[cfgWriteZeroesMayUnmap] = 1
		}
	}
	return nil
}

func defaultSerial(path string) string {
	b := []byte(filepath.Base(path))
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '_'
		}
	}
	if len(b) > SerialLen {
		b = b[:SerialLen]
	}
	return string(b)
}

func checkSerial(s string) error {
	if len(s) > SerialLen {
		return fmt.Errorf("serial %q is longer than %d bytes", s, SerialLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return fmt.Errorf("serial %q is not printable ASCII", s)
		}
	}
	return nil
}

// Capacity is the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Close stops the device and closes the disk image.
//
// A writable image is synced first: a guest stopped by a signal or a
// timeout never sent its FLUSH, and what it wrote should survive a host
// crash as well as what it flushed.
func (d *Device) Close() error {
	d.Reset()
	if !d.readOnly {
		if err := unix.Fdatasync(int(d.f.Fd())); err != nil && !errors.Is(err, unix.EINVAL) {
			d.f.Close()
			return fmt.Errorf("disk %s: sync: %w", d.path, err)
		}
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("disk %s: %w", d.path, err)
	}
	return nil
}

// Type is virtio.TypeBlock.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features is fixed at Open.
func (d *Device) Features() uint64 { return d.features }

// QueueMax is one request queue (see the package comment).
func (d *Device) QueueMax() []uint16 { return []uint16{queueSize} }

// ReadConfig reads struct virtio_blk_config, which never changes after
// Open, so it needs no lock.
func (d *Device) ReadConfig(off uint64, data []byte) {
	virtio.ReadFixedConfig(d.config[:], off, data)
}

// WriteConfig ignores the write: writeback is the only writable field and
// only with VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
func (d *Device) WriteConfig(off uint64, data []byte) {}

// Activate starts the worker for the request queue.
func (d *Device) Activate(env virtio.Env) error {
	if len(env.Queues) != 1 || len(env.Notifiers) != 1 {
		return fmt.Errorf("blk %s: %d queues and %d notifiers, want 1", d.path, len(env.Queues), len(env.Notifiers))
	}
	if env.Queues[0] == nil || env.Notifiers[0] == nil || env.Interrupt == nil || env.Fail == nil {
		return fmt.Errorf("blk %s: incomplete environment", d.path)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return fmt.Errorf("blk %s: already active", d.path)
	}
	d.active = true
	d.stop.Store(false)
	d.notifier = env.Notifiers[0]
	d.wg.Add(1)
	go d.run(env.Queues[0], env.Notifiers[0], env.Interrupt, env.Fail)
	return nil
}

// Reset stops the worker and waits for it. Requests it had not reached
// stay in the available ring; the transport resets the queue.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return
	}
	d.stop.Store(true)
	d.notifier.Signal()
	d.wg.Wait()
	d.notifier = nil
	d.active = false
}

// run is the worker: it sleeps on the notifier and drains the queue on
// every wake-up, until Reset, a closed notifier or a malformed queue.
func (d *Device) run(q *virtio.Queue, n virtio.Notifier, interrupt func(), fail func(error)) {
	defer d.wg.Done()
	var c virtio.Chain
	for {
		if err := n.Wait(); err != nil || d.stop.Load() {
			return
		}
		if err := d.drain(q, &c, interrupt); err != nil {
			fail(err)
			return
		}
		if d.stop.Load() {
			return
		}
	}
}

// drain processes every available request with notifications off, then
// turns them back on and goes round again if requests slipped in
// meanwhile (virtio v1.2 §2.7.10). It returns early, with nil, on Reset.
func (d *Device) drain(q *virtio.Queue, c *virtio.Chain, interrupt func()) error {
	for {
		q.DisableNotify()
		for !d.stop.Load() {
			ok, err := q.Pop(c)
			if err != nil {
				// Completions already pushed still deserve their
				// interrupt before the device goes quiet.
				if q.NeedInterrupt() {
					interrupt()
				}
				return fmt.Errorf("blk %s: request queue: %w", d.path, err)
			}
			if !ok {
				break
			}
			q.Push(c.Head, d.process(c))
		}
		if q.NeedInterrupt() {
			interrupt()
		}
		if d.stop.Load() || !q.EnableNotify() {
			return nil
		}
	}
}

// callsFor says how a disk's data moves: raw (package rawsys) for an
// image file on a local file system (rawsys.LocalFD), through Go's
// scheduler for a block device given as the disk itself (an NBD or iSCSI
// disk can leave a read waiting for a server for ever; rawsys can tell
// that only of the devices under a file system) and for an image on a
// network file system or remote storage, so that a stalled disk holds
// one thread rather than the whole of vmm.
func callsFor(fd int, regular bool) rawsys.Calls {
	if !regular {
		return rawsys.Calls{}
	}
	if local, err := rawsys.LocalFD(fd); err != nil || !local {
		return rawsys.Calls{}
	}
	return rawsys.Raw()
}
