package virtio_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
)

// The flat-copy model: what ReadAt, WriteAt and AppendRange must do to the
// stream, computed on the concatenated buffers.

// modelRange is the part of a stream of length size that [off, off+n)
// covers, clipped.
func modelRange(size int, off int64, n int) (lo, hi int) {
	if n <= 0 || off >= int64(size) {
		return 0, 0
	}
	// off < size and n < 2^63, so off+n cannot overflow.
	lo, hi = int(max(off, 0)), int(min(off+int64(n), int64(size)))
	if hi < lo {
		return 0, 0
	}
	return lo, hi
}

// wantErr is the error a read or write of plen bytes at off must return
// after moving n bytes: short is io.EOF or io.ErrShortWrite.
func wantErr(off int64, plen, n int, short error) error {
	switch {
	case off < 0:
		return errNegative
	case n < plen:
		return short
	}
	return nil
}

// errNegative stands for the package's unexported negative-offset error.
var errNegative = errors.New("negative offset")

func sameErr(got, want error) bool {
	if want == errNegative {
		return got != nil && got != io.EOF && got != io.ErrShortWrite && strings.Contains(got.Error(), "negative offset")
	}
	return got == want
}

// fill returns n bytes of a pattern starting at seed, so a misplaced byte
// shows.
func fill(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

// cut splits flat into buffers of the given sizes (the rest, if any,
// dropped), each its own allocation so a copy past a buffer's end is
// caught by the race detector's bounds and by the content checks.
func cut(flat []byte, sizes ...int) virtio.Buffers {
	b := virtio.Buffers{}
	for _, n := range sizes {
		b = append(b, bytes.Clone(flat[:n:n]))
		flat = flat[n:]
	}
	return b
}

func flatten(b virtio.Buffers) []byte { return bytes.Join(b, nil) }

// checkAll runs every operation on b at (off, n) and compares it with the
// model on b's flat bytes. It restores b's content before it returns.
func checkAll(t *testing.T, b virtio.Buffers, off int64, n int, label string) {
	t.Helper()
	flat := flatten(b)
	size := len(flat)
	if b.Len() != size {
		t.Fatalf("%s: Len %d, want %d", label, b.Len(), size)
	}
	lo, hi := modelRange(size, off, n)
	plen := max(n, 0)

	// ReadAt.
	p := fill(0xa0, plen)
	got, err := b.ReadAt(p, off)
	want := flat[lo:hi]
	if off < 0 {
		want = nil
	}
	if got != len(want) || !bytes.Equal(p[:got], want) || !sameErr(err, wantErr(off, plen, got, io.EOF)) {
		t.Fatalf("%s: ReadAt(%d bytes, %d) = %d %q, %v; want %d %q", label, plen, off, got, p[:got], err, len(want), want)
	}
	if !bytes.Equal(p[got:], fill(0xa0, plen)[got:]) {
		t.Fatalf("%s: ReadAt wrote past the bytes it read", label)
	}

	// WriteAt.
	src := fill(0x50, plen)
	got, err = b.WriteAt(src, off)
	model := bytes.Clone(flat)
	wantN := 0
	if off >= 0 {
		wantN = copy(model[lo:], src[:hi-lo])
	}
	if got != wantN || !bytes.Equal(flatten(b), model) || !sameErr(err, wantErr(off, plen, got, io.ErrShortWrite)) {
		t.Fatalf("%s: WriteAt(%d bytes, %d) = %d, %v with stream %q; want %d with %q", label, plen, off, got, err, flatten(b), wantN, model)
	}
	b.WriteAt(flat, 0)

	// AppendRange: the right bytes, no empty piece, at most one piece a
	// buffer, each aliasing the buffers.
	prefix := virtio.Buffers{[]byte("dst")}
	r := b.AppendRange(prefix, int(off), n)
	if len(r) == 0 || string(r[0]) != "dst" {
		t.Fatalf("%s: AppendRange lost dst's contents", label)
	}
	pieces := r[1:]
	if !bytes.Equal(flatten(pieces), flat[lo:hi]) || len(pieces) > len(b) {
		t.Fatalf("%s: AppendRange(%d, %d) = %q, want %q in at most %d pieces", label, off, n, pieces, flat[lo:hi], len(b))
	}
	for _, s := range pieces {
		if len(s) == 0 {
			t.Fatalf("%s: AppendRange(%d, %d) = %q has an empty piece", label, off, n, pieces)
		}
		for i := range s {
			s[i] = 0xee
		}
	}
	model = bytes.Clone(flat)
	for i := lo; i < hi; i++ {
		model[i] = 0xee
	}
	if !bytes.Equal(flatten(b), model) {
		t.Fatalf("%s: AppendRange(%d, %d) pieces do not alias bytes [%d, %d): stream %q after filling them", label, off, n, lo, hi, flatten(b))
	}
	b.WriteAt(flat, 0)
}

func TestBuffers(t *testing.T) {
	abcd := []string{"ab", "", "cd"}
	for _, tc := range []struct {
		name string
		bufs []string
		op   string // read, write or range
		off  int64
		n    int    // read: len(p); range: n
		data string // write: p
		// wantN and wantErr for read and write; want is the bytes read,
		// the stream after the write, or the pieces joined with "|".
		wantN   int
		wantErr error
		want    string
	}{
		{"read nil", nil, "read", 0, 1, "", 0, io.EOF, ""},
		{"read nil nothing", nil, "read", 0, 0, "", 0, nil, ""},
		{"read empty buffers", []string{"", ""}, "read", 0, 1, "", 0, io.EOF, ""},
		{"read all", abcd, "read", 0, 4, "", 4, nil, "abcd"},
		{"read across empty", abcd, "read", 1, 2, "", 2, nil, "bc"},
		{"read after empty", abcd, "read", 2, 2, "", 2, nil, "cd"},
		{"read short", abcd, "read", 2, 3, "", 2, io.EOF, "cd"},
		{"read at end", abcd, "read", 4, 1, "", 0, io.EOF, ""},
		{"read past end", abcd, "read", 100, 1, "", 0, io.EOF, ""},
		{"read max offset", abcd, "read", math.MaxInt64, 1, "", 0, io.EOF, ""},
		{"read nothing past end", abcd, "read", 100, 0, "", 0, nil, ""},
		{"read negative", abcd, "read", -1, 1, "", 0, errNegative, ""},
		{"read negative nothing", abcd, "read", -1, 0, "", 0, errNegative, ""},

		{"write nil", nil, "write", 0, 0, "x", 0, io.ErrShortWrite, ""},
		{"write nothing to nil", nil, "write", 0, 0, "", 0, nil, ""},
		{"write across empty", abcd, "write", 1, 0, "XY", 2, nil, "aXYd"},
		{"write all", abcd, "write", 0, 0, "WXYZ", 4, nil, "WXYZ"},
		{"write short", abcd, "write", 3, 0, "XY", 1, io.ErrShortWrite, "abcX"},
		{"write at end", abcd, "write", 4, 0, "X", 0, io.ErrShortWrite, "abcd"},
		{"write past end", abcd, "write", 1 << 40, 0, "X", 0, io.ErrShortWrite, "abcd"},
		{"write nothing past end", abcd, "write", 1 << 40, 0, "", 0, nil, "abcd"},
		{"write negative", abcd, "write", -2, 0, "XY", 0, errNegative, "abcd"},

		{"range all", abcd, "range", 0, 4, "", 0, nil, "ab|cd"},
		{"range beyond", abcd, "range", 0, 100, "", 0, nil, "ab|cd"},
		{"range across empty", abcd, "range", 1, 2, "", 0, nil, "b|c"},
		{"range inside", []string{"abcd"}, "range", 1, 2, "", 0, nil, "bc"},
		{"range tail", abcd, "range", 3, 1, "", 0, nil, "d"},
		{"range at end", abcd, "range", 4, 1, "", 0, nil, ""},
		{"range past end", abcd, "range", 100, 1, "", 0, nil, ""},
		{"range max", abcd, "range", math.MaxInt, math.MaxInt, "", 0, nil, ""},
		{"range from negative", abcd, "range", -1, 2, "", 0, nil, "a"},
		{"range wholly negative", abcd, "range", -5, 2, "", 0, nil, ""},
		{"range most negative", abcd, "range", math.MinInt, math.MaxInt, "", 0, nil, ""},
		{"range zero", abcd, "range", 1, 0, "", 0, nil, ""},
		{"range negative length", abcd, "range", 1, -1, "", 0, nil, ""},
		{"range nil", nil, "range", 0, 1, "", 0, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b virtio.Buffers
			for _, s := range tc.bufs {
				b = append(b, []byte(s))
			}
			switch tc.op {
			case "read":
				p := make([]byte, tc.n)
				n, err := b.ReadAt(p, tc.off)
				if n != tc.wantN || string(p[:n]) != tc.want || !sameErr(err, tc.wantErr) {
					t.Errorf("ReadAt(%d bytes, %d) = %d %q, %v; want %d %q, %v", tc.n, tc.off, n, p[:n], err, tc.wantN, tc.want, tc.wantErr)
				}
			case "write":
				n, err := b.WriteAt([]byte(tc.data), tc.off)
				if n != tc.wantN || string(flatten(b)) != tc.want || !sameErr(err, tc.wantErr) {
					t.Errorf("WriteAt(%q, %d) = %d, %v, stream %q; want %d, %v, %q", tc.data, tc.off, n, err, flatten(b), tc.wantN, tc.wantErr, tc.want)
				}
			case "range":
				r := b.AppendRange(nil, int(tc.off), tc.n)
				if got := string(bytes.Join(r, []byte("|"))); got != tc.want {
					t.Errorf("AppendRange(%d, %d) = %q, want %q", tc.off, tc.n, got, tc.want)
				}
			}
		})
	}
}

// TestBuffersEverySplit runs every operation at every offset and length
// on streams of up to 7 bytes cut into buffers every possible way, with
// and without empty buffers around and between them.
func TestBuffersEverySplit(t *testing.T) {
	for size := 0; size <= 7; size++ {
		flat := fill('a', size)
		// Bit i of cuts set: a buffer ends after byte i.
		for cuts := 0; cuts < 1<<max(size-1, 0); cuts++ {
			var sizes []int
			start := 0
			for i := 0; i < size; i++ {
				if i == size-1 || cuts&(1<<i) != 0 {
					sizes = append(sizes, i+1-start)
					start = i + 1
				}
			}
			for _, empties := range []bool{false, true} {
				var with []int
				for _, n := range sizes {
					if empties {
						with = append(with, 0)
					}
					with = append(with, n)
				}
				if empties {
					with = append(with, 0)
				}
				b := cut(flat, with...)
				for off := int64(-2); off <= int64(size)+2; off++ {
					for n := -1; n <= size+2; n++ {
						checkAll(t, b, off, n, fmt.Sprintf("sizes %v", with))
					}
				}
			}
		}
	}
}

// TestBuffersAllocs pins that the helper allocates nothing, successful or
// short, since devices call it for every request and frame.
func TestBuffersAllocs(t *testing.T) {
	b := cut(fill(0, 4096), 12, 0, 1000, 3084)
	p := make([]byte, 2000)
	dst := make(virtio.Buffers, 0, len(b))
	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		n, _ := b.ReadAt(p[:12], 0)
		sink += n
		n, _ = b.ReadAt(p, 3000) // short: io.EOF
		sink += n
		n, _ = b.ReadAt(p, -1)
		sink += n
		n, _ = b.WriteAt(p, 10)
		sink += n
		n, _ = b.WriteAt(p, 4000) // short: io.ErrShortWrite
		sink += n
		sink += len(b.AppendRange(dst[:0], 12, 4000))
		sink += b.Len()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
	_ = sink
}

// FuzzBuffers cuts a stream into buffers of the sizes in the input and
// checks every operation at (off, n) against the flat-copy model.
func FuzzBuffers(f *testing.F) {
	f.Add([]byte{12, 0, 100}, int64(10), int32(4))      // a header split after 10
	f.Add([]byte{1, 1, 1, 1}, int64(2), int32(10))      // byte-sized buffers, short
	f.Add([]byte{0, 0, 0}, int64(0), int32(1))          // only empty buffers
	f.Add([]byte{}, int64(-1), int32(0))                // nothing, negative
	f.Add([]byte{200, 255}, int64(1<<40), int32(1))     // far past the end
	f.Add([]byte{16, 3, 0, 7}, int64(-3), int32(-1000)) // negative length
	f.Fuzz(func(t *testing.T, sizes []byte, off int64, n int32) {
		if len(sizes) > 64 {
			sizes = sizes[:64]
		}
		lens := make([]int, len(sizes))
		total := 0
		for i, s := range sizes {
			lens[i] = int(s)
			total += int(s)
		}
		b := cut(fill(1, total), lens...)
		// Lengths beyond a few KiB test nothing new and slow the fuzzer.
		checkAll(t, b, off, int(n%(8<<10)), fmt.Sprintf("sizes %v", lens))
	})
}
