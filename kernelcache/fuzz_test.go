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

// FuzzDecodeKey checks the key index parser, which reads a file from
// disk: no input panics it, and what it accepts for a file is exactly
// the index encoding of that file's size and times.
func FuzzDecodeKey(f *testing.F) {
	id := fileID{dev: 1, ino: 2, size: 14 << 20, mtime: 1e18, ctime: 1e18 + 5}
	f.Add(encodeKey(id, KeyOf([]byte("bzImage"))), id.size, id.mtime, id.ctime)
	f.Add(encodeKey(id, Key{}), int64(0), int64(-1), id.ctime)
	f.Add([]byte(keyMagic), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size, mtime, ctime int64) {
		id := fileID{size: size, mtime: mtime, ctime: ctime}
		k, ok := decodeKey(b, id)
		if ok && !bytes.Equal(encodeKey(id, k), b) {
			t.Fatal("accepted an index file that is not the encoding of its key")
		}
	})
}
