package kernelimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/vmm-dev/vmm/bootparam"
)

// testPlain is compressible but not trivially so, and spans more than one
// 8 MiB LZ4 legacy block when repeated.
func testPlain(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < min(n, 1<<20); i++ {
		fmt.Fprintf(&b, "line %d of the kernel %x\n", i, i*i)
	}
	// Past 1 MiB the text repeats: formatting megabytes is slow under
	// the race detector, and repeats still span several LZ4 blocks.
	for b.Len() < n {
		b.Write(b.Bytes()[:min(b.Len(), n-b.Len())])
	}
	return b.Bytes()[:n]
}

// compress makes a kernel payload the way the kernel's Makefile does
// (scripts/Makefile.lib): the format's stream, then for all but gzip the
// size as a little-endian u32.
func compress(t testing.TB, f Format, plain []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch f {
	case Gzip:
		w = gzip.NewWriter(&b)
	case XZ:
		w, err = xz.NewWriter(&b)
	case LZ4:
		zw := lz4.NewWriter(&b)
		err = zw.Apply(lz4.LegacyOption(true))
		w = zw
	case Zstd:
		w, err = zstd.NewWriter(&b)
	default:
		t.Fatalf("no compressor for %s", f)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if f != Gzip {
		b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(plain))))
	}
	return b.Bytes()
}

func TestDecompress(t *testing.T) {
	for _, f := range []Format{Gzip, XZ, LZ4, Zstd} {
		sizes := []int{1, 4096, 100000}
		if f == LZ4 {
			// More than one 8 MiB block of the legacy format.
			sizes = append(sizes, 9<<20)
		}
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d", f, n), func(t *testing.T) {
				plain := testPlain(n)
				payload := compress(t, f, plain)
				if got, err := Detect(payload); got != f || err != nil {
					t.Fatalf("Detect: %q, %v", got, err)
				}
				out, err := Decompress(payload, n)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, plain) {
					t.Fatalf("decompressed %d bytes, not the %d compressed", len(out), len(plain))
				}
				// One byte less than the output is refused before decoding.
				if _, err := Decompress(payload, n-1); err == nil || !strings.Contains(err.Error(), "more than vmm's limit") {
					t.Errorf("limit %d: %v", n-1, err)
				}
			})
		}
	}
}

func TestDecompressErrors(t *testing.T) {
	plain := testPlain(3000)
	withSize := func(f Format, size uint32) []byte {
		p := compress(t, f, plain)
		binary.LittleEndian.PutUint32(p[len(p)-4:], size)
		return p
	}
	flip := func(p []byte, off int) []byte {
		p = bytes.Clone(p)
		p[off] ^= 0xff
		return p
	}
	xzBCJ := compress(t, XZ, plain)
	xzBCJ[xzHeader+1] |= 1 // two filters, as the kernel's x86 BCJ + LZMA2
	gz := compress(t, Gzip, plain)
	// "hello" in xz whose block header declares a dictionary of 4 GiB - 1
	// (property byte 40, header CRC fixed up), which the decoder would
	// allocate before decoding 5 bytes; the 4-byte size trailer follows.
	xzBomb, err := hex.DecodeString("fd377a585a000004e6d6b4460200210128000000e6a011b301000468656c6c6f00000000b137b9dbe5da1e9b00011d05b82d80af1fb6f37d010000000004595a05000000")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, "kernel payload is in no compression format known to vmm (it starts )"},
		{"unknown", []byte("\x7fELF\x02\x01\x01"), "kernel payload is in no compression format known to vmm (it starts 7f 45 4c 46 02 01)"},
		{"bzip2", []byte("BZh91AY&SY...."), "bzip2 kernel payload: vmm has no decoder for it (gzip, xz, lz4 and zstd kernels are decompressed on the host)"},
		{"lzma", []byte("\x5d\x00\x00\x80\x00...."), "lzma kernel payload: vmm has no decoder for it (gzip, xz, lz4 and zstd kernels are decompressed on the host)"},
		{"lzo", []byte("\x89LZO\x00\r\n\x1a\n...."), "lzo kernel payload: vmm has no decoder for it (gzip, xz, lz4 and zstd kernels are decompressed on the host)"},
		{"magic only", []byte(magicLZ4), "lz4 kernel payload is truncated: 4 bytes"},
		{"huge trailer", withSize(LZ4, 0xffffffff), "lz4 kernel payload says it decompresses to 4294967295 bytes, more than vmm's limit of 1048576"},
		{"xz with BCJ", xzBCJ, "xz kernel payload uses a chain of 2 filters (the kernel's x86 BCJ filter before LZMA2): vmm has no decoder for it (it decodes LZMA2 alone)"},
		{"gzip short trailer", withSize(Gzip, 2999), "gzip kernel payload decompresses to more than the 2999 bytes its size trailer says"},
		{"gzip CRC", flip(gz, len(gz)-5), "gzip kernel payload: gzip: invalid checksum"},
		{"lz4 short trailer", withSize(LZ4, 2999), "lz4 kernel payload decompresses to more than the 2999 bytes its size trailer says"},
		{"lz4 long trailer", withSize(LZ4, 3001), "lz4 kernel payload decompresses to 3000 bytes, its size trailer says 3001"},
		{"xz long trailer", withSize(XZ, 3001), "xz kernel payload decompresses to 3000 bytes, its size trailer says 3001"},
		{"xz dictionary bomb", xzBomb, "xz kernel payload: a block asks for a 4294967295-byte dictionary, more than vmm's limit of 67108864"},
		{"zstd short trailer", withSize(Zstd, 100), "zstd kernel payload decompresses to more than the 100 bytes its size trailer says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Decompress(tc.payload, 1<<20)
			if err == nil {
				t.Fatalf("accepted, %d bytes", len(out))
			}
			if err.Error() != tc.want {
				t.Errorf("error %q\nwant  %q", err, tc.want)
			}
			if noDecoder := strings.Contains(tc.want, "no decoder"); errors.Is(err, ErrNoDecoder) != noDecoder {
				t.Errorf("errors.Is(err, ErrNoDecoder) = %v, want %v", !noDecoder, noDecoder)
			}
		})
	}
	// Corruption anywhere in the stream is an error, never a panic or a
	// silently different kernel.
	for _, f := range []Format{Gzip, XZ, LZ4, Zstd} {
		p := compress(t, f, plain)
		for off := len(magicXZ); off < len(p)-4; off += max(1, len(p)/100) {
			out, err := Decompress(flip(p, off), 1<<20)
			if err != nil {
				if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
					t.Fatalf("%s: error is not one line: %q", f, msg)
				}
				continue
			}
			// LZ4 legacy frames have no checksum: a flipped literal
			// decodes to different bytes of the same length.
			if f != LZ4 && !bytes.Equal(out, plain) {
				t.Errorf("%s with byte %d flipped decompressed to different bytes without an error", f, off)
			}
		}
	}
}

// realKernel reads Debian's cloud kernel from vmm's cache ($VMM_CACHE,
// else ~/.cache/vmm; see guest.DefaultCacheDir) and skips without one.
func realKernel(t testing.TB) []byte {
	t.Helper()
	dir := os.Getenv("VMM_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skipf("no real kernel: %v", err)
		}
		dir = filepath.Join(home, ".cache", "vmm")
	}
	found, _ := filepath.Glob(filepath.Join(dir, "kernels", "linux-image-*-cloud-amd64_*", "boot", "vmlinuz-*"))
	if len(found) == 0 {
		t.Skipf("no real kernel in %s/kernels", dir)
	}
	img, err := os.ReadFile(found[0])
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRealKernel decompresses Debian's cloud kernel, whose payload is in
// the kernel's own LZ4 legacy format, and checks the vmlinux is what the
// loader expects: text at LOAD_PHYSICAL_ADDR holding startup_64.
func TestRealKernel(t *testing.T) {
	k, err := bootparam.ParseKernel(realKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.CompressedKernel()
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := Detect(c); f != LZ4 {
		t.Errorf("format %q, want lz4", f)
	}
	vmlinux, err := Decompress(c, 512<<20)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseELF(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if e.Entry != k.PrefAddress || e.Start() != k.PrefAddress {
		t.Errorf("entry 0x%x, first segment 0x%x, want both at pref_address 0x%x", e.Entry, e.Start(), k.PrefAddress)
	}
	// init_size covers the decompressed kernel and the decompressor's
	// needs, so the vmlinux must fit in it.
	if e.End()-k.PrefAddress > uint64(k.InitSize) {
		t.Errorf("kernel spans [0x%x, 0x%x), more than init_size 0x%x", e.Start(), e.End(), k.InitSize)
	}
	t.Logf("%d-byte payload -> %d-byte vmlinux, %d segments in [0x%x, 0x%x)", len(c), len(vmlinux), len(e.Segments), e.Start(), e.End())
}
