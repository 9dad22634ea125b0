package iotool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment of O_DIRECT offsets and lengths that works
// everywhere: logical block sizes are 512 or 4096 bytes. Buffers are
// page-aligned because they come from mmap.
const directAlign = 4096

// BlkOptions configures the sequential block tools.
type BlkOptions struct {
	Dev       string // block device or file
	Bytes     int64  // a multiple of 4096
	BlockSize int    // bytes per request, a multiple of 4096; 0 means 1 MiB
	// SHA256 adds the checksum of the bytes written or read to the
	// result (sha256=), so that a reader, or the host reading the image
	// afterwards, can prove the data made the round trip. It costs CPU,
	// so throughput figures are taken without it.
	SHA256 bool
	Seed   uint64 // of the Stream written; 0 means DefaultSeed
}

func (o *BlkOptions) check(op string) error {
	if o.BlockSize == 0 {
		o.BlockSize = 1 << 20
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.BlockSize < 0 || o.BlockSize%directAlign != 0 || o.BlockSize > 1<<30 {
		return fmt.Errorf("%s: block size %d is not a multiple of %d up to 1 GiB", op, o.BlockSize, directAlign)
	}
	if o.Bytes <= 0 || o.Bytes%directAlign != 0 {
		return fmt.Errorf("%s: byte count %d is not a positive multiple of %d", op, o.Bytes, directAlign)
	}
	return nil
}

// openDirect opens path with O_DIRECT, so that the figures are the
// device's and not the page cache's, falling back to buffered I/O where
// the file system refuses O_DIRECT (tmpfs before Linux 6.6 does, with
// EINVAL).
func openDirect(path string, flags int) (*os.File, bool, error) {
	f, err := os.OpenFile(path, flags|unix.O_DIRECT, 0)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, false, err
	}
	f, err = os.OpenFile(path, flags, 0)
	return f, false, err
}

// alignedBuffer is memory from mmap, page-aligned as O_DIRECT needs,
// without unsafe address arithmetic.
func alignedBuffer(size int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap %d-byte buffer: %w", size, err)
	}
	return b, func() { unix.Munmap(b) }, nil
}

// BlkSeqWrite writes o.Bytes of the Stream from offset 0 in o.BlockSize
// requests with O_DIRECT, then fdatasync; the clock includes the sync.
func BlkSeqWrite(ctx context.Context, o BlkOptions) (Result, error) {
	const op = "blk-seq-write"
	if err := o.check(op); err != nil {
		return Result{}, err
	}
	f, direct, err := openDirect(o.Dev, os.O_WRONLY)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	buf, free, err := alignedBuffer(o.BlockSize)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer free()

	s := NewStream(o.Seed)
	h := sha256.New()
	start := time.Now()
	var off int64
	for off < o.Bytes {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("%s: %s at offset %d: %w", op, o.Dev, off, err)
		}
		chunk := buf[:min(o.Bytes-off, int64(len(buf)))]
		s.Read(chunk)
		if o.SHA256 {
			h.Write(chunk)
		}
		if err := pwriteFull(f, chunk, off); err != nil {
			return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
		}
		off += int64(len(chunk))
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return Result{}, fmt.Errorf("%s: %s: fdatasync: %w", op, o.Dev, err)
	}
	secs := time.Since(start).Seconds()
	r := Result{Op: op}
	r.add("bytes", "%d", off)
	if o.SHA256 {
		r.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	}
	addRate(&r, off, secs)
	r.add("direct", "%v", direct)
	return r, nil
}

// BlkSeqRead reads o.Bytes from offset 0 in o.BlockSize requests with
// O_DIRECT.
func BlkSeqRead(ctx context.Context, o BlkOptions) (Result, error) {
	const op = "blk-seq-read"
	if err := o.check(op); err != nil {
		return Result{}, err
	}
	f, direct, err := openDirect(o.Dev, os.O_RDONLY)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	buf, free, err := alignedBuffer(o.BlockSize)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer free()

	h := sha256.New()
	start := time.Now()
	var off int64
	for off < o.Bytes {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("%s: %s at offset %d: %w", op, o.Dev, off, err)
		}
		chunk := buf[:min(o.Bytes-off, int64(len(buf)))]
		if err := preadFull(f, chunk, off); err != nil {
			return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
		}
		if o.SHA256 {
			h.Write(chunk)
		}
		off += int64(len(chunk))
	}
	secs := time.Since(start).Seconds()
	r := Result{Op: op}
	r.add("bytes", "%d", off)
	if o.SHA256 {
		r.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	}
	addRate(&r, off, secs)
	r.add("direct", "%v", direct)
	return r, nil
}

// BlkRandOptions configures BlkRandRead.
type BlkRandOptions struct {
	Dev       string
	BlockSize int           // a multiple of 4096; 0 means 4096
	Duration  time.Duration // 0 means 5 s
	Seed      uint64        // of the offsets; 0 means DefaultSeed
}

// BlkRandRead reads o.BlockSize blocks at random aligned offsets across
// the whole device or file, one at a time, for o.Duration.
func BlkRandRead(ctx context.Context, o BlkRandOptions) (Result, error) {
	const op = "blk-rand-read"
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.BlockSize < 0 || o.BlockSize%directAlign != 0 || o.BlockSize > 1<<30 {
		return Result{}, fmt.Errorf("%s: block size %d is not a multiple of %d up to 1 GiB", op, o.BlockSize, directAlign)
	}
	if o.Duration < 0 {
		return Result{}, fmt.Errorf("%s: negative duration %v", op, o.Duration)
	}
	f, direct, err := openDirect(o.Dev, os.O_RDONLY)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	// Seeking to the end gives the size of block devices and files alike.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %s: size: %w", op, o.Dev, err)
	}
	blocks := size / int64(o.BlockSize)
	if blocks == 0 {
		return Result{}, fmt.Errorf("%s: %s holds %d bytes, less than one %d-byte block", op, o.Dev, size, o.BlockSize)
	}
	buf, free, err := alignedBuffer(o.BlockSize)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer free()

	x := o.Seed | 1
	var ops int64
	start := time.Now()
	end := start.Add(o.Duration)
	now := start
	for now.Before(end) {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
		}
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		off := int64(x%uint64(blocks)) * int64(o.BlockSize)
		if err := preadFull(f, buf, off); err != nil {
			return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
		}
		ops++
		now = time.Now()
	}
	secs := now.Sub(start).Seconds()
	r := Result{Op: op}
	r.add("ops", "%d", ops)
	r.add("seconds", "%.3f", secs)
	iops := 0.0
	if secs > 0 {
		iops = float64(ops) / secs
	}
	r.add("iops", "%.1f", iops)
	r.add("bs", "%d", o.BlockSize)
	r.add("direct", "%v", direct)
	return r, nil
}

func pwriteFull(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := f.WriteAt(b, off)
		if err != nil {
			return fmt.Errorf("write %d bytes at offset %d: %w", len(b), off, err)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func preadFull(f *os.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("read %d bytes at offset %d: the device ends at offset %d", len(b), off, off+int64(n))
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(b), off, err)
}

// SumOptions configures Sum.
type SumOptions struct {
	Path  string
	Bytes int64 // how much to hash from the start; 0 means all of it
}

// Sum hashes the start of a file or device with ordinary (cached) reads:
// it checks data, it does not measure anything.
func Sum(ctx context.Context, o SumOptions) (Result, error) {
	const op = "sum"
	if o.Bytes < 0 {
		return Result{}, fmt.Errorf("%s: negative byte count %d", op, o.Bytes)
	}
	f, err := os.Open(o.Path)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	defer f.Close()
	var r io.Reader = f
	if o.Bytes > 0 {
		r = io.LimitReader(f, o.Bytes)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, r}, make([]byte, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("%s: %s: %w", op, o.Path, err)
	}
	if o.Bytes > 0 && n != o.Bytes {
		return Result{}, fmt.Errorf("%s: %s ends after %d bytes, before %d", op, o.Path, n, o.Bytes)
	}
	res := Result{Op: op}
	res.add("bytes", "%d", n)
	res.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	return res, nil
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
