// Package kernelimage turns a compressed Linux kernel into what a loader
// can put in guest memory without running the kernel's own decompressor:
// it decompresses the payload of a bzImage (the bytes
// bootparam.Kernel.CompressedKernel locates) and parses the resulting
// vmlinux ELF into the segments to load at their physical addresses.
//
// Why: a bzImage spends its first second or more decompressing itself
// inside the guest, before it makes a single exit. A CI runner booting the
// same kernel thousands of times can do that once on the host, keep the
// result, and enter startup_64 directly, as Firecracker boots a vmlinux.
//
// It is apart from bootparam, which is the boot protocol (setup header,
// zero page), because this is about the kernel's file formats: compression
// containers and ELF, decoded with maintained third-party decoders. Both
// are pure functions of their input, tested without KVM and fuzzed; the
// cache of decompressed kernels, which does file I/O, is package
// kernelcache.
//
// A vmlinux is told from other x86-64 executables by its text being linked
// in the kernel mapping (__START_KERNEL_map); its e_entry and p_paddr are
// physical addresses.
//
// A kernel booted this way is not relocated: KASLR is done by the
// decompressor, so the kernel runs at the physical addresses the ELF gives
// (LOAD_PHYSICAL_ADDR, 16 MiB on x86-64) and its virtual layout is not
// randomized. Firecracker's direct vmlinux boot has the same property.
package kernelimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Format is a compression format of the kernel payload.
type Format string

// The formats a kernel can be built with (CONFIG_KERNEL_*). The kernel's
// Makefile compresses with the format's tool and, for all but gzip,
// appends the decompressed size as a little-endian u32 (size_append in
// scripts/Makefile.lib); gzip carries it as ISIZE in its own trailer.
const (
	Gzip  Format = "gzip"
	XZ    Format = "xz"
	LZ4   Format = "lz4" // the legacy frame format, `lz4 -l`
	Zstd  Format = "zstd"
	Bzip2 Format = "bzip2"
	LZMA  Format = "lzma"
	LZO   Format = "lzo"
)

// Magic numbers at the start of each format's stream, as the kernel's own
// lib/decompress.c tells them apart.
const (
	magicGzip  = "\x1f\x8b"         // RFC 1952, 2.3.1
	magicXZ    = "\xfd7zXZ\x00"     // xz file format, 2.1.1.1
	magicLZ4   = "\x02\x21\x4c\x18" // LZ4 legacy frame: 0x184C2102, little-endian
	magicZstd  = "\x28\xb5\x2f\xfd" // RFC 8878, 3.1.1
	magicBzip2 = "BZh"              // bzip2 stream header
	magicLZMA  = "\x5d\x00\x00"     // lzma-alone: properties byte, dict size
	magicLZO   = "\x89LZO"          // lzop file header
)

// Layout of the kernel payload and the xz container.
const (
	sizeLen   = 4    // the appended u32 size, and gzip's ISIZE
	xzHeader  = 12   // xz stream header: magic, flags, CRC32 (xz format, 2.1.1)
	xzFilters = 0x03 // block flags: number of filters - 1 (xz format, 3.1.2)
	// zstdMinWindow is the window an encoder may declare however small
	// its input: 8 MiB, the decoder's minimum support recommended by
	// RFC 8878, 3.1.1.1.2.
	zstdMinWindow = 8 << 20
)

// ErrNoDecoder is wrapped by Decompress's error for a payload in a format
// vmm has no decoder for, which the kernel's own decompressor handles.
var ErrNoDecoder = errors.New("vmm has no decoder for it")

// Detect names the compression format of payload from its magic number.
func Detect(payload []byte) (Format, error) {
	for _, f := range [...]struct {
		magic  string
		format Format
	}{
		{magicGzip, Gzip}, {magicXZ, XZ}, {magicLZ4, LZ4}, {magicZstd, Zstd},
		{magicBzip2, Bzip2}, {magicLZMA, LZMA}, {magicLZO, LZO},
	} {
		if len(payload) >= len(f.magic) && string(payload[:len(f.magic)]) == f.magic {
			return f.format, nil
		}
	}
	n := min(len(payload), 6)
	return "", fmt.Errorf("kernel payload is in no compression format known to vmm (it starts % x)", payload[:n])
}

// Decompress returns the decompressed kernel payload, which for an x86
// bzImage is the vmlinux ELF. It refuses to produce more than limit bytes:
// the payload's size trailer is checked against limit before anything is
// allocated, and decoding stops one byte past it, so a decompression bomb
// costs at most limit bytes of memory. The decoded length must equal the
// size trailer, and each format's own checksum must match.
//
// gzip, xz (LZMA2 only), LZ4 (legacy frames) and zstd are decoded; bzip2,
// LZMA and LZO, which vmm has no maintained decoder for, are refused, as is
// xz with a filter chain: the kernel's xz payloads use the x86 BCJ filter
// in front of LZMA2, which the xz decoder lacks. The caller then boots the
// bzImage, whose own decompressor handles all of them.
func Decompress(payload []byte, limit int) ([]byte, error) {
	format, err := Detect(payload)
	if err != nil {
		return nil, err
	}
	switch format {
	case Gzip, XZ, LZ4, Zstd:
	default:
		return nil, fmt.Errorf("%s kernel payload: %w (gzip, xz, lz4 and zstd kernels are decompressed on the host)", format, ErrNoDecoder)
	}
	if len(payload) < sizeLen+1 {
		return nil, fmt.Errorf("%s kernel payload is truncated: %d bytes", format, len(payload))
	}
	size := uint64(binary.LittleEndian.Uint32(payload[len(payload)-sizeLen:]))
	if size > uint64(max(limit, 0)) {
		return nil, fmt.Errorf("%s kernel payload says it decompresses to %d bytes, more than vmm's limit of %d", format, size, limit)
	}
	stream := payload[:len(payload)-sizeLen]
	var r io.Reader
	switch format { // the formats checked above
	case Gzip:
		// ISIZE belongs to the gzip stream, which the reader checks.
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("gzip kernel payload: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case XZ:
		if len(stream) > xzHeader+1 && stream[xzHeader+1]&xzFilters != 0 {
			return nil, fmt.Errorf("xz kernel payload uses a chain of %d filters (the kernel's x86 BCJ filter before LZMA2): %w (it decodes LZMA2 alone)", stream[xzHeader+1]&xzFilters+1, ErrNoDecoder)
		}
		if err := xzCheckDicts(stream, max(uint64(limit), xzMaxPresetDict)); err != nil {
			return nil, fmt.Errorf("xz kernel payload: %w", err)
		}
		zr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(stream))
		if err != nil {
			return nil, fmt.Errorf("xz kernel payload: %w", err)
		}
		r = zr
	case LZ4:
		// pierrec/lz4 reads legacy frames (8 MiB blocks, no checksums),
		// the format `lz4 -l` writes; the size trailer is already cut off.
		r = lz4.NewReader(bytes.NewReader(stream))
	case Zstd:
		// The window (history) the decoder keeps is bounded like the
		// output, but not below what encoders use for small inputs.
		window := min(max(uint64(limit), zstdMinWindow), zstd.MaxWindowSize)
		zr, err := zstd.NewReader(bytes.NewReader(stream),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(window),
			zstd.WithDecoderMaxWindow(window))
		if err != nil {
			return nil, fmt.Errorf("zstd kernel payload: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	return readExactly(r, format, size)
}

// xzMaxPresetDict is the largest dictionary an xz preset uses (-9).
const xzMaxPresetDict = 64 << 20

// xzCheckDicts refuses a stream with a block header (at any 4-byte
// aligned offset, where blocks start, with a valid CRC32, which the
// decoder requires) declaring an LZMA2 dictionary over max bytes: the
// decoder allocates what each block declares, up to 4 GiB, whatever it
// outputs.
func xzCheckDicts(s []byte, max uint64) error {
	for b := xzHeader; b+2 < len(s); b += 4 {
		if s[b] == 0 {
			continue // the index, or padding
		}
		n := (int(s[b]) + 1) * 4
		if b+n > len(s) {
			continue
		}
		h, p := s[b:b+n], 2
		for _, bit := range []byte{0x40, 0x80} { // compressed, uncompressed size
			if h[1]&bit != 0 {
				for p < n && h[p]&0x80 != 0 {
					p++
				}
				p++
			}
		}
		if p+3 > n-4 || h[p] != 0x21 || h[p+1] != 1 {
			continue
		}
		dc, err := lzma.DecodeDictCap(h[p+2])
		if err == nil && uint64(dc) > max && crc32.ChecksumIEEE(h[:n-4]) == binary.LittleEndian.Uint32(h[n-4:]) {
			return fmt.Errorf("a block asks for a %d-byte dictionary, more than vmm's limit of %d", dc, max)
		}
	}
	return nil
}

// readExactly reads the whole stream, which must hold exactly size bytes:
// the stream must end (and so pass its checksum) right after them.
func readExactly(r io.Reader, format Format, size uint64) ([]byte, error) {
	out := make([]byte, size)
	if n, err := io.ReadFull(r, out); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s kernel payload decompresses to %d bytes, its size trailer says %d", format, n, size)
		}
		return nil, fmt.Errorf("%s kernel payload: %w", format, err)
	}
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return nil, fmt.Errorf("%s kernel payload decompresses to more than the %d bytes its size trailer says", format, size)
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("%s kernel payload: %w", format, err)
	}
	return out, nil
}
