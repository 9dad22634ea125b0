package kernelimage

import (
	"encoding/binary"
	"errors"
	"fmt"
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

// SizeLen is the length of the payload's size trailer: the appended u32,
// or gzip's ISIZE.
const SizeLen = 4

// ErrNoDecoder is wrapped by the error for a payload in a format vmm has
// no decoder for, which the kernel's own decompressor handles.
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

// Plan checks, without decoding, that payload is one vmm can decompress
// to at most limit bytes: a format it has a decoder for (gzip, xz, LZ4
// legacy frames, zstd; package kernelimage/unpack decodes them) and a size
// trailer within limit. It returns the format and the size the payload
// says it decompresses to, which the decoder holds it to. An xz stream
// whose filters the decoder turns out to lack is refused by the decoder,
// in the helper, with an error that also wraps ErrNoDecoder. An error wraps
// ErrNoDecoder for a format vmm does not decode; the caller then boots
// the bzImage, whose own decompressor handles every format.
//
// Plan lives here, apart from the decoders, so that vmm can decide
// whether to start the decompressing helper (vmm-unpack) without linking
// them.
func Plan(payload []byte, limit int) (Format, uint64, error) {
	format, err := Detect(payload)
	if err != nil {
		return "", 0, err
	}
	switch format {
	case Gzip, XZ, LZ4, Zstd:
	default:
		return "", 0, fmt.Errorf("%s kernel payload: %w (gzip, xz, lz4 and zstd kernels are decompressed on the host)", format, ErrNoDecoder)
	}
	if len(payload) < SizeLen+1 {
		return "", 0, fmt.Errorf("%s kernel payload is truncated: %d bytes", format, len(payload))
	}
	size := uint64(binary.LittleEndian.Uint32(payload[len(payload)-SizeLen:]))
	if size > uint64(max(limit, 0)) {
		return "", 0, fmt.Errorf("%s kernel payload says it decompresses to %d bytes, more than vmm's limit of %d", format, size, limit)
	}
	return format, size, nil
}

// The command line of the vmm-unpack helper (cmd/vmm-unpack), shared by
// vmm, which runs it (package kernelcache), and the helper (package
// kernelimage/unpack): `vmm-unpack --wire UnpackWire --limit N`, the
// payload on its standard input, the vmlinux written to its standard
// output, a one-line error on its standard error.
const (
	// UnpackHelper is the helper's file name.
	UnpackHelper = "vmm-unpack"
	// UnpackWire is the version of this command line, which vmm passes
	// and the helper checks, so that a vmm-unpack of another build
	// found in $PATH fails at once.
	UnpackWire = "1"
	// ExitNoDecoder is the helper's exit status for a payload whose
	// error wraps ErrNoDecoder, which vmm boots quietly the kernel's own
	// way (Plan refuses those before the helper starts; this is the
	// helper's own check of the same). ExitWrite is its status when
	// writing the vmlinux failed (a full disk), which vmm reports with
	// the file's name, since the helper knows it only as its stdout.
	// Any other failure exits 1, and bad usage 2.
	ExitNoDecoder = 3
	ExitWrite     = 4
)
