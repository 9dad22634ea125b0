// Package unpack decompresses the payload of a bzImage, the kernel
// compressed in one of the formats package kernelimage names, with
// third-party decoders: Go's compress/gzip, github.com/therootcompany/xz,
// github.com/pierrec/lz4 (whose reader takes the legacy frames the
// kernel's Makefile writes) and github.com/klauspost/compress/zstd (the
// zstd decoder most Go programs use). Writing decoders for these formats
// would only add bugs.
//
// The xz decoder is the exception to "maintained": a Go translation of XZ
// Embedded (the decoder Linux decompresses its own xz payloads with),
// xi2/xz relicensed, unchanged since 2020, without the filters xz has
// gained since (ARM64, RISC-V). It is here because it has the BCJ
// filters, which github.com/ulikunitz/xz, the maintained Go xz package
// this package used before, lacks: every x86 kernel's xz payload runs
// its code through x86's BCJ filter before LZMA2 (scripts/xz_wrap.sh),
// Debian's generic and RT kernels among them, so without it the cache
// never held one. What keeps it safe to run on any kernel file: it runs
// in the helper, a process of its own with no guest memory and no KVM
// descriptor; its version is pinned; the dictionary it allocates is
// bounded before allocation (dictBudget); the helper's data segment is
// capped (HelperMainCapped), since it keeps a filter's state for every
// block of a stream until the stream ends, which a crafted stream of
// many small blocks turns into gigabytes; and the fuzz target covers it
// with the other decoders.
//
// It runs in the vmm-unpack helper (cmd/vmm-unpack, HelperMain), which vmm
// starts when its kernel cache lacks a kernel (package kernelcache), not
// in vmm: the decoders are 0.44 MB of vmm's 4.8 MB of code, read-only
// data and pclntab, which every boot mapped (their initializers run at
// each start, and the kernel maps code around every page touched) though
// only a boot that fills the cache uses them; and a decoder fed a
// hostile or broken kernel file then runs in a process that holds no
// guest memory and no KVM descriptor, whose memory is its own to lose.
package unpack

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/therootcompany/xz"

	"github.com/vmm-dev/vmm/kernelimage"
)

// Decoders' history bounds.
const (
	// zstdMinWindow is the window an encoder may declare however small
	// its input: 8 MiB, the decoder's minimum support recommended by
	// RFC 8878, 3.1.1.1.2.
	zstdMinWindow = 8 << 20
)

// DecompressTo writes the decompressed kernel payload to w. It refuses to
// produce more than limit bytes: the payload's size trailer is checked
// against limit before anything is decoded (kernelimage.Plan), and
// decoding stops one byte past it, so a decompression bomb costs at most
// limit bytes of output. The decoded length must equal the size trailer,
// and each format's own checksum must match; what was written before a
// failure is to be discarded.
//
// gzip, xz (LZMA2 with or without a BCJ or delta filter in front), LZ4
// (legacy frames) and zstd are decoded; bzip2, LZMA and LZO, which vmm has
// no maintained decoder for, are refused, as is an xz stream with options
// the decoder does not support. Those errors wrap kernelimage.ErrNoDecoder;
// the caller then boots the bzImage, whose own decompressor handles all of
// them.
func DecompressTo(w io.Writer, payload []byte, limit int) error {
	format, size, err := kernelimage.Plan(payload, limit)
	if err != nil {
		return err
	}
	stream := payload[:len(payload)-kernelimage.SizeLen]
	var r io.Reader
	switch format { // the formats Plan accepts
	case kernelimage.Gzip:
		// ISIZE belongs to the gzip stream, which the reader checks.
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return fmt.Errorf("gzip kernel payload: %w", err)
		}
		// One stream, as the kernel's own decoder reads: what might
		// follow it is not read, so it cannot reach the vmlinux.
		zr.Multistream(false)
		r = zr
	case kernelimage.XZ:
		// The decoder refuses a block whose dictionary is larger than
		// dictMax before allocating it (xz.ErrMemlimit): a dictionary
		// is allocated whole, up to 4 GiB, whatever the output.
		dictMax := dictBudget(limit)
		zr, err := xz.NewReader(bytes.NewReader(stream), uint32(dictMax))
		if err != nil {
			return fmt.Errorf("xz kernel payload: %w", xzError(err, dictMax))
		}
		// One stream, as the kernel's own decoder reads: what might
		// follow it is not read, so it cannot reach the vmlinux.
		zr.Multistream(false)
		r = xzReader{zr, dictMax}
	case kernelimage.LZ4:
		// pierrec/lz4 reads legacy frames (8 MiB blocks, no checksums),
		// the format `lz4 -l` writes; the size trailer is already cut off.
		r = lz4.NewReader(bytes.NewReader(stream))
	case kernelimage.Zstd:
		// The window (history) the decoder keeps is bounded like the
		// output, but not below what encoders use for small inputs.
		window := min(max(uint64(limit), zstdMinWindow), zstd.MaxWindowSize)
		zr, err := zstd.NewReader(bytes.NewReader(stream),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(window),
			zstd.WithDecoderMaxWindow(window))
		if err != nil {
			return fmt.Errorf("zstd kernel payload: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return fmt.Errorf("%s kernel payload: %w", format, kernelimage.ErrNoDecoder)
	}
	return copyExactly(errWriter{w}, r, format, size)
}

// xzMaxPresetDict is the largest dictionary an xz preset uses (-9).
const xzMaxPresetDict = 64 << 20

// dictBudget is the largest xz dictionary or zstd window decoding to at
// most limit bytes is allowed: limit, but not below what encoders use
// for small inputs, and not past what xz can declare.
func dictBudget(limit int) uint64 {
	return min(max(uint64(max(limit, 0)), xzMaxPresetDict, zstdMinWindow), math.MaxUint32)
}

// xzError says what the xz decoder refused: options it does not support
// (a filter it lacks, a check type it does not know) wrap
// kernelimage.ErrNoDecoder, as a format vmm cannot decode does; a
// dictionary over dictMax is said with the limit.
func xzError(err error, dictMax uint64) error {
	switch {
	case errors.Is(err, xz.ErrOptions) || errors.Is(err, xz.ErrUnsupportedCheck):
		return fmt.Errorf("%w (%w)", kernelimage.ErrNoDecoder, err)
	case errors.Is(err, xz.ErrMemlimit):
		return fmt.Errorf("a block asks for a dictionary larger than vmm's limit of %d bytes (%w)", dictMax, err)
	}
	return err
}

// xzReader passes the decoder's errors through xzError, so that options
// it meets past the stream header (a block's filters) are told apart too;
// copyExactly adds the format.
type xzReader struct {
	r       io.Reader
	dictMax uint64
}

func (x xzReader) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	if err != nil && err != io.EOF {
		err = xzError(err, x.dictMax)
	}
	return n, err
}

// copyExactly copies the whole stream to w; it must hold exactly size
// bytes: the stream must end (and so pass its checksum) right after them.
func copyExactly(w io.Writer, r io.Reader, format kernelimage.Format, size uint64) error {
	n, err := io.Copy(w, io.LimitReader(r, int64(size)))
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s kernel payload decompresses to %d bytes, its size trailer says %d", format, n, size)
	case err != nil:
		var werr *writeError
		if errors.As(err, &werr) {
			return werr // said as it is, and told apart by HelperMain
		}
		return fmt.Errorf("%s kernel payload: %w", format, err)
	case uint64(n) < size:
		return fmt.Errorf("%s kernel payload decompresses to %d bytes, its size trailer says %d", format, n, size)
	}
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return fmt.Errorf("%s kernel payload decompresses to more than the %d bytes its size trailer says", format, size)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("%s kernel payload: %w", format, err)
	}
	return nil
}

// writeError marks an error of the writer copyExactly writes to (a full
// disk), which is not the payload's fault and is said as it is.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// errWriter wraps a writer's errors in writeError.
type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}
