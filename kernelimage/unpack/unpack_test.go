package unpack

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/kernelimage"
)

// Decompress is DecompressTo into memory, for the tests and the fuzz
// target: the helper writes to its stdout instead.
func Decompress(payload []byte, limit int) ([]byte, error) {
	_, size, err := kernelimage.Plan(payload, limit)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(int(size))
	if err := DecompressTo(&b, payload, limit); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// testPlain is compressible but not trivially so, and spans more than one
// 8 MiB kernelimage.LZ4 legacy block when repeated.
func testPlain(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < min(n, 1<<20); i++ {
		fmt.Fprintf(&b, "line %d of the kernel %x\n", i, i*i)
	}
	// Past 1 MiB the text repeats: formatting megabytes is slow under
	// the race detector, and repeats still span several kernelimage.LZ4 blocks.
	for b.Len() < n {
		b.Write(b.Bytes()[:min(b.Len(), n-b.Len())])
	}
	return b.Bytes()[:n]
}

// compress makes a kernel payload the way the kernel's Makefile does
// (scripts/Makefile.lib): the format's stream, then for all but gzip the
// size as a little-endian u32.
func compress(t testing.TB, f kernelimage.Format, plain []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	var err error
	switch f {
	case kernelimage.Gzip:
		w = gzip.NewWriter(&b)
	case kernelimage.XZ:
		w, err = xz.NewWriter(&b)
	case kernelimage.LZ4:
		zw := lz4.NewWriter(&b)
		err = zw.Apply(lz4.LegacyOption(true))
		w = zw
	case kernelimage.Zstd:
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
	if f != kernelimage.Gzip {
		b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(plain))))
	}
	return b.Bytes()
}

func TestDecompress(t *testing.T) {
	for _, f := range []kernelimage.Format{kernelimage.Gzip, kernelimage.XZ, kernelimage.LZ4, kernelimage.Zstd} {
		sizes := []int{1, 4096, 100000}
		if f == kernelimage.LZ4 {
			// More than one 8 MiB block of the legacy format.
			sizes = append(sizes, 9<<20)
		}
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d", f, n), func(t *testing.T) {
				plain := testPlain(n)
				payload := compress(t, f, plain)
				if got, err := kernelimage.Detect(payload); got != f || err != nil {
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
	withSize := func(f kernelimage.Format, size uint32) []byte {
		p := compress(t, f, plain)
		binary.LittleEndian.PutUint32(p[len(p)-4:], size)
		return p
	}
	flip := func(p []byte, off int) []byte {
		p = bytes.Clone(p)
		p[off] ^= 0xff
		return p
	}
	gz := compress(t, kernelimage.Gzip, plain)
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
		{"magic only", []byte("\x02\x21\x4c\x18"), "lz4 kernel payload is truncated: 4 bytes"},
		{"huge trailer", withSize(kernelimage.LZ4, 0xffffffff), "lz4 kernel payload says it decompresses to 4294967295 bytes, more than vmm's limit of 1048576"},
		{"xz with a filter the decoder lacks", arm64Payload(t), "xz kernel payload: vmm has no decoder for it (xz: compression options not supported)"},
		{"gzip short trailer", withSize(kernelimage.Gzip, 2999), "gzip kernel payload decompresses to more than the 2999 bytes its size trailer says"},
		{"gzip CRC", flip(gz, len(gz)-5), "gzip kernel payload: gzip: invalid checksum"},
		{"lz4 short trailer", withSize(kernelimage.LZ4, 2999), "lz4 kernel payload decompresses to more than the 2999 bytes its size trailer says"},
		{"lz4 long trailer", withSize(kernelimage.LZ4, 3001), "lz4 kernel payload decompresses to 3000 bytes, its size trailer says 3001"},
		{"xz long trailer", withSize(kernelimage.XZ, 3001), "xz kernel payload decompresses to 3000 bytes, its size trailer says 3001"},
		{"xz dictionary bomb", xzBomb, "xz kernel payload: a block asks for a dictionary larger than vmm's limit of 67108864 bytes (xz: LZMA2 dictionary size exceeds max)"},
		{"zstd short trailer", withSize(kernelimage.Zstd, 100), "zstd kernel payload decompresses to more than the 100 bytes its size trailer says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Decompress(tc.payload, 1<<20)
			if err == nil {
				t.Fatalf("accepted, %d bytes", len(out))
			}
			if err.Error() != tc.want {
				t.Errorf("error %q\nwant  %q", err, tc.want)
			}
			if noDecoder := strings.Contains(tc.want, "no decoder"); errors.Is(err, kernelimage.ErrNoDecoder) != noDecoder {
				t.Errorf("errors.Is(err, kernelimage.ErrNoDecoder) = %v, want %v", !noDecoder, noDecoder)
			}
		})
	}
	// Corruption anywhere in the stream is an error, never a panic or a
	// silently different kernel.
	for _, f := range []kernelimage.Format{kernelimage.Gzip, kernelimage.XZ, kernelimage.LZ4, kernelimage.Zstd} {
		p := compress(t, f, plain)
		for off := len("\xfd7zXZ\x00"); off < len(p)-4; off += max(1, len(p)/100) {
			out, err := Decompress(flip(p, off), 1<<20)
			if err != nil {
				if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
					t.Fatalf("%s: error is not one line: %q", f, msg)
				}
				continue
			}
			// kernelimage.LZ4 legacy frames have no checksum: a flipped literal
			// decodes to different bytes of the same length.
			if f != kernelimage.LZ4 && !bytes.Equal(out, plain) {
				t.Errorf("%s with byte %d flipped decompressed to different bytes without an error", f, off)
			}
		}
	}
}

// TestRealKernel decompresses Debian's cloud kernel, whose payload is in
// the kernel's own LZ4 legacy format, and checks the vmlinux is what the
// loader expects: text at LOAD_PHYSICAL_ADDR holding startup_64.
func TestRealKernel(t *testing.T) {
	k, err := bootparam.ParseKernel(testkernel.RealCloud(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.CompressedKernel()
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := kernelimage.Detect(c); f != kernelimage.LZ4 {
		t.Errorf("format %q, want lz4", f)
	}
	vmlinux, err := Decompress(c, 512<<20)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kernelimage.ParseELF(vmlinux)
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

// failWriter fails every write, as a full disk does.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) {
	return 0, errors.New("write /cache/.tmp-1: no space left on device")
}

// TestHelperMain runs the helper's whole command line: arguments, payload
// in, vmlinux out, exit status and one line on stderr.
func TestHelperMain(t *testing.T) {
	plain := testPlain(5000)
	good := compress(t, kernelimage.Zstd, plain)
	args := []string{"--wire", kernelimage.UnpackWire, "--limit", "1048576"}
	for _, tc := range []struct {
		name    string
		args    []string
		payload []byte
		out     io.Writer // nil: a buffer, checked against plain on success
		status  int
		stderr  string // a part of the one line, "" for none
	}{
		{name: "zstd", args: args, payload: good},
		{name: "bzip2", args: args, payload: []byte("BZh91AY&SY...."), status: kernelimage.ExitNoDecoder, stderr: "bzip2 kernel payload: vmm has no decoder for it"},
		{name: "xz with a filter the decoder lacks", args: args, payload: arm64Payload(t), status: kernelimage.ExitNoDecoder, stderr: "xz kernel payload: vmm has no decoder for it"},
		{name: "corrupt", args: args, payload: good[:len(good)/2], status: 1, stderr: "zstd kernel payload"},
		{name: "over the limit", args: []string{"--wire", kernelimage.UnpackWire, "--limit", "4999"}, payload: good, status: 1, stderr: "more than vmm's limit of 4999"},
		{name: "full disk", args: args, payload: good, out: failWriter{}, status: kernelimage.ExitWrite, stderr: "write /cache/.tmp-1: no space left on device"},
		{name: "other build", args: []string{"--wire", "0", "--limit", "1"}, payload: good, status: 2, stderr: `wire version "0"`},
		{name: "no limit", args: []string{"--wire", kernelimage.UnpackWire}, payload: good, status: 2, stderr: "no --limit"},
		{name: "bad limit", args: []string{"--wire", kernelimage.UnpackWire, "--limit", "-1"}, payload: good, status: 2, stderr: `--limit "-1" is not a byte count`},
		{name: "dangling", args: []string{"--limit"}, payload: good, status: 2, stderr: "--limit needs a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, stderr bytes.Buffer
			w := tc.out
			if w == nil {
				w = &out
			}
			status := HelperMain(tc.args, bytes.NewReader(tc.payload), w, &stderr)
			if status != tc.status {
				t.Fatalf("status %d, want %d; stderr %q", status, tc.status, stderr.String())
			}
			msg := stderr.String()
			if tc.stderr == "" {
				if msg != "" || !bytes.Equal(out.Bytes(), plain) {
					t.Fatalf("stderr %q, %d bytes out, want none and the %d decompressed", msg, out.Len(), len(plain))
				}
				return
			}
			if !strings.Contains(msg, tc.stderr) || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Errorf("stderr %q, want one line with %q", msg, tc.stderr)
			}
		})
	}
}

// withTrailer appends the size trailer the kernel's Makefile puts after
// an xz stream.
func withTrailer(stream []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(stream), uint32(size))
}

// arm64Payload is the first 4 KiB of testdata/x86-code.bin in xz with
// ARM64's BCJ filter before LZMA2 (testdata/arm64-filter.xz, `xz
// --check=crc32 --arm64 --lzma2=dict=64KiB`, XZ Utils 5.4.1): a filter
// newer than the decoder.
func arm64Payload(t testing.TB) []byte {
	t.Helper()
	stream, err := os.ReadFile("testdata/arm64-filter.xz")
	if err != nil {
		t.Fatal(err)
	}
	return withTrailer(stream, 4096)
}

// TestDecompressXZBCJ decodes an xz stream whose block runs its data
// through x86's BCJ filter before LZMA2, as every x86 kernel's xz payload
// does (scripts/xz_wrap.sh): testdata/x86-code.bin.xz is `xz
// --check=crc32 --x86 --lzma2=preset=6,dict=1MiB` (XZ Utils 5.4.1) of
// testdata/x86-code.bin, 64 KiB of calls and jumps with relative targets
// between lines of text (made by a throwaway script: for i = 0, 1, ...,
// with r = (37 i mod 8192) - 4096, the bytes 55 48 89 e5 e8 r(le32) 48 83
// c4 08 e9 -r(le32) and "line i of the kernel\n", cut at 64 KiB). Decoded
// without the filter its LZMA2 data gives 9,458 other bytes, so a decoder
// without the filter, or with it wrong, fails here.
func TestDecompressXZBCJ(t *testing.T) {
	plain, err := os.ReadFile("testdata/x86-code.bin")
	if err != nil {
		t.Fatal(err)
	}
	stream, err := os.ReadFile("testdata/x86-code.bin.xz")
	if err != nil {
		t.Fatal(err)
	}
	// The block header (after the 12-byte stream header): its flags'
	// low two bits are the number of filters less one (xz file format
	// 1.2.0, 3.1.2), and the first filter's ID is x86's BCJ, 0x04
	// (5.3.2).
	if len(stream) < 15 || stream[13]&3 != 1 || stream[14] != 0x04 {
		t.Fatalf("testdata/x86-code.bin.xz has no x86 BCJ filter before LZMA2 (block header % x)", stream[12:min(len(stream), 20)])
	}
	got, err := Decompress(withTrailer(stream, len(plain)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("decoded %d bytes unlike testdata/x86-code.bin (%d bytes)", len(got), len(plain))
	}
	if _, err := Decompress(withTrailer(stream, len(plain)-1), 1<<20); err == nil || !strings.Contains(err.Error(), "decompresses to more than the 65535 bytes") {
		t.Errorf("a size trailer one byte short: %v", err)
	}
}

// TestHelperMainCapsMemory checks the budget HelperMainCapped gives its
// cap: the payload read, the dictionary limit allows, and the margin.
func TestHelperMainCapsMemory(t *testing.T) {
	payload := compress(t, kernelimage.Zstd, testPlain(5000))
	var got []uint64
	var out, stderr bytes.Buffer
	status := HelperMainCapped([]string{"--wire", kernelimage.UnpackWire, "--limit", "1048576"}, bytes.NewReader(payload), &out, &stderr,
		func(n uint64) error { got = append(got, n); return errors.New("not capped") })
	if status != 0 {
		t.Fatalf("status %d: %s", status, stderr.String())
	}
	want := uint64(len(payload)) + xzMaxPresetDict + memMargin
	if len(got) != 1 || got[0] != want {
		t.Errorf("capped at %v, want [%d]", got, want)
	}
}

// TestCapData checks that the cap holds the Go runtime: a child process
// of this test capped 64 MiB above what it has mapped ends asking for
// 1 GiB, where uncapped it gets it.
func TestCapData(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory is data too, terabytes of it")
	}
	if os.Getenv("UNPACK_CAP_CHILD") != "" {
		if os.Getenv("UNPACK_CAP_CHILD") == "capped" {
			if err := CapData(dataMapped(t) + 64<<20); err != nil {
				t.Fatal(err)
			}
		}
		b := make([]byte, 1<<30)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("allocated", len(b))
		return
	}
	for _, mode := range []string{"uncapped", "capped"} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestCapData$")
		cmd.Env = append(os.Environ(), "UNPACK_CAP_CHILD="+mode)
		out, err := cmd.CombinedOutput()
		allocated := strings.Contains(string(out), "allocated")
		switch {
		case mode == "uncapped" && (err != nil || !allocated):
			t.Skipf("this machine does not give a test 1 GiB: %v\n%s", err, out)
		case mode == "capped" && (err == nil || allocated):
			// Ended is what matters: the runtime mostly says "out of
			// memory", but a refused mapping in the collector's own
			// bookkeeping can also end it with a fault.
			t.Errorf("capped child: %v\n%.500s", err, out)
		}
	}
}

// dataMapped is what the kernel counts against RLIMIT_DATA now (VmData in
// /proc/self/status).
func dataMapped(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmData:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	t.Skip("no VmData in /proc/self/status")
	return 0
}
