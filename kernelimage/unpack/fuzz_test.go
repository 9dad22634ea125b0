package unpack

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/kernelimage"
)

func checkError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\n\r") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
}

// fuzzLimit caps decompression in the fuzz target: a bomb must be refused
// at the limit, whatever the input claims.
const fuzzLimit = 1 << 20

// FuzzDecompress checks that no payload panics Decompress or makes it
// return more than the limit or other than what the size trailer says.
// Seeds (testdata/fuzz/FuzzDecompress) are small payloads of every format,
// and xz with x86's BCJ filter and with ARM64's, which the decoder lacks.
func FuzzDecompress(f *testing.F) {
	plain := testPlain(2000)
	for _, fm := range []kernelimage.Format{kernelimage.Gzip, kernelimage.XZ, kernelimage.LZ4, kernelimage.Zstd} {
		f.Add(compress(f, fm, plain))
	}
	if bcj, err := os.ReadFile("testdata/x86-code.bin.xz"); err == nil {
		f.Add(withTrailer(bcj, 65536))
	} else {
		f.Fatal(err)
	}
	f.Add(arm64Payload(f))
	f.Add([]byte("BZh91AY&SY"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		orig := bytes.Clone(payload)
		out, err := Decompress(payload, fuzzLimit)
		if !bytes.Equal(orig, payload) {
			t.Fatal("Decompress modified its input")
		}
		if err != nil {
			checkError(t, err)
			return
		}
		if len(out) > fuzzLimit {
			t.Fatalf("decompressed %d bytes, past the %d limit", len(out), fuzzLimit)
		}
		if size := binary.LittleEndian.Uint32(payload[len(payload)-4:]); uint64(size) != uint64(len(out)) {
			t.Fatalf("decompressed %d bytes, the size trailer says %d", len(out), size)
		}
	})
}
