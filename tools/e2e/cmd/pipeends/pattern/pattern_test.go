package pattern

import (
	"bytes"
	"testing"
)

func TestBytes(t *testing.T) {
	for _, n := range []int{0, 1, LineSize - 1, LineSize, 65536, 65536 + 7} {
		b := Bytes(n)
		if len(b) != n {
			t.Fatalf("Bytes(%d) has %d bytes", n, len(b))
		}
		if n >= 2*LineSize && (b[LineSize-1] != '\n' || !bytes.HasPrefix(b[LineSize:], []byte("000001 "))) {
			t.Fatalf("Bytes(%d): lines are not %d bytes: %q", n, LineSize, b[:min(n, 2*LineSize)])
		}
		for _, c := range b {
			if c != '\n' && (c < ' ' || c > '~') {
				t.Fatalf("Bytes(%d): byte %#x is not printable ASCII", n, c)
			}
		}
	}
}
