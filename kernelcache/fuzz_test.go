package kernelcache

import (
	"bytes"
	"testing"
)

// FuzzDecode checks the entry parser, which reads a file from disk: no
// input panics it, and what it accepts is exactly an encoded entry.
// Seeds: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(encode(nil))
	f.Add(encode([]byte("\x7fELF vmlinux")))
	f.Fuzz(func(t *testing.T, b []byte) {
		data, err := decode(b)
		if err != nil {
			if msg := err.Error(); msg == "" || bytes.ContainsAny([]byte(msg), "\n\r") {
				t.Fatalf("error is not one line: %q", msg)
			}
			return
		}
		if !bytes.Equal(encode(data), b) {
			t.Fatal("accepted an entry that is not the encoding of its data")
		}
	})
}
