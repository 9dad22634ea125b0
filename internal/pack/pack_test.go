package pack

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Name  string
	Flags [3]bool
}

type kitchen struct {
	B      bool
	I8     int8
	I16    int16
	I32    int32
	I64    int64
	I      int
	U8     uint8
	U16    uint16
	U32    uint32
	U64    uint64
	U      uint
	S      string
	Bytes  []byte
	Arr    [4]byte
	Words  [2]uint32
	List   []inner
	Ptr    *inner
	NilPtr *inner
	When   time.Time
	Nested [][]int16
	hidden int // unexported: neither encoded nor decoded
}

func full() kitchen {
	return kitchen{
		B: true, I8: -5, I16: -300, I32: -70000, I64: -1 << 40, I: -42,
		U8: 250, U16: 65000, U32: 4e9, U64: 1 << 63, U: 7,
		S: "héllo", Bytes: []byte{0, 1, 2}, Arr: [4]byte{9, 8, 7, 6}, Words: [2]uint32{1, 0xdeadbeef},
		List:   []inner{{Name: "a", Flags: [3]bool{true, false, true}}, {Name: ""}},
		Ptr:    &inner{Name: "p"},
		When:   time.Date(2026, 12, 5, 14, 0, 0, 123, time.UTC),
		Nested: [][]int16{{1, -2}, nil, {3}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		out  func() any // a pointer to decode into
	}{
		{"kitchen", full(), func() any { return new(kitchen) }},
		{"zero", kitchen{}, func() any { return new(kitchen) }},
		{"string", "x", func() any { return new(string) }},
		{"slice of strings", []string{"a", "", "ccc"}, func() any { return new([]string) }},
		{"pointer to pointer", func() **int { i := 3; p := &i; return &p }(), func() any { return new(**int) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			out := tc.out()
			if err := Unmarshal(b, out); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			got := reflect.ValueOf(out).Elem().Interface()
			if k, ok := got.(kitchen); ok {
				want := tc.in.(kitchen)
				if !k.When.Equal(want.When) {
					t.Fatalf("time %v, want %v", k.When, want.When)
				}
				k.When, want.When = time.Time{}, time.Time{}
				got, tc.in = k, want
			}
			if !reflect.DeepEqual(got, tc.in) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, tc.in)
			}
		})
	}
}

// TestLayout pins the encoding of each kind, which snapshots and job
// messages depend on.
func TestLayout(t *testing.T) {
	type small struct {
		A bool
		B int16
		C string
		D []uint8
		E *uint8
		F [2]uint16
	}
	b, err := Marshal(small{A: true, B: -2, C: "hi", D: []byte{7}, F: [2]uint16{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 0xfe, 0xff, 2, 'h', 'i', 1, 7, 0, 1, 0, 2, 0}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("encoding % x, want % x", b, want)
	}
}

func TestEmptySliceDecodesNil(t *testing.T) {
	b, err := Marshal([]int{})
	if err != nil {
		t.Fatal(err)
	}
	out := []int{1}
	if err := Unmarshal(b, &out); err != nil || out != nil {
		t.Fatalf("got %v, %v; want nil, nil", out, err)
	}
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"map", map[string]int{"a": 1}, "cannot encode map"},
		{"float", 1.5, "cannot encode float64"},
		{"interface field", struct{ X any }{1}, "cannot encode interface"},
		{"zero-size elements", make([]struct{}, 3), "encode to nothing"},
		{"nil", nil, "cannot encode nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Marshal(tc.v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good, err := Marshal(full())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "input ends early"},
		{"truncated", good[:len(good)-1], "input ends early"},
		{"trailing", append(append([]byte{}, good...), 0), "1 bytes after"},
		{"bad bool", append([]byte{2}, good[1:]...), "neither 0 nor 1"},
		{"huge slice length", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, "input ends early"},
		{"short varint", []byte{0xff}, "length: input ends early"},
		{"overflowing varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "overflows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var into any = new(kitchen)
			if strings.HasPrefix(tc.name, "huge") || strings.HasSuffix(tc.name, "varint") {
				into = new([]uint64)
			}
			err := Unmarshal(tc.in, into)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.want == "input ends early" && !errors.Is(err, ErrTruncated) {
				t.Fatalf("%v does not wrap ErrTruncated", err)
			}
		})
	}
	if err := Unmarshal(good, kitchen{}); err == nil {
		t.Fatal("decoding into a non-pointer succeeded")
	}
}

func TestBadPointerFlag(t *testing.T) {
	if err := Unmarshal([]byte{2}, new(*int8)); err == nil || !strings.Contains(err.Error(), "pointer flag 2") {
		t.Fatalf("error %v", err)
	}
}

// FuzzUnmarshal feeds arbitrary input to the decoder: it must fail
// cleanly or decode a value that encodes and decodes to the same value
// (not always to the same bytes: a length may be written with more
// varint bytes than it needs, and time.Time has several encodings).
func FuzzUnmarshal(f *testing.F) {
	good, err := Marshal(full())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	zero, _ := Marshal(kitchen{})
	f.Add(zero)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var k kitchen
		if err := Unmarshal(b, &k); err != nil {
			return
		}
		again, err := Marshal(k)
		if err != nil {
			t.Fatalf("re-encoding a decoded value: %v", err)
		}
		var k2 kitchen
		if err := Unmarshal(again, &k2); err != nil {
			t.Fatalf("decoding a re-encoded value: %v", err)
		}
		if !reflect.DeepEqual(normal(k), normal(k2)) {
			t.Fatalf("re-encoded value differs:\n%#v\n%#v", k, k2)
		}
	})
}

// normal makes values comparable with DeepEqual: times by their own
// encoding, which keeps the instant and the zone offset.
func normal(k kitchen) kitchen {
	b, _ := k.When.MarshalBinary()
	k.When = time.Time{}
	k.hidden = len(b)
	for _, c := range b {
		k.hidden = k.hidden*31 + int(c)
	}
	return k
}

type node struct {
	Next *node
	Kids []node
}

func TestDepth(t *testing.T) {
	var n *node
	for range maxDepth {
		n = &node{Next: n}
	}
	_, err := Marshal(n)
	if err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("encoding %d nested pointers: %v", maxDepth, err)
	}
	// Input that nests deeper than any value could.
	deep := make([]byte, 100)
	for i := range deep {
		deep[i] = 1
	}
	if err := Unmarshal(deep, new(node)); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("decoding 100 nested pointers: %v", err)
	}
	// What encodes near the limit decodes.
	n = nil
	for range maxDepth/2 - 1 {
		n = &node{Next: n}
	}
	b, err := Marshal(*n)
	if err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(b, new(node)); err != nil {
		t.Fatalf("decoding what encoded: %v", err)
	}
}

func TestDecodeRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		into any
		in   []byte
		want string
	}{
		{"map", new(map[string]int), []byte{0}, "cannot decode map"},
		{"float", new(float64), make([]byte, 8), "cannot decode float64"},
		{"interface", new(any), []byte{0}, "cannot decode interface"},
		{"zero-size elements", new([]struct{}), []byte{3}, "encode to nothing"},
		{"zero-size array", new([2]struct{}), nil, "encode to nothing"},
		{"bad time", new(time.Time), []byte{1, 9}, "time.Time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Unmarshal(tc.in, tc.into)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestAllocationBound: no input makes decoding allocate more than
// maxAlloc of its size, though an element can take far more memory than
// its encoding (an empty string: 1 byte against 16).
func TestAllocationBound(t *testing.T) {
	const n = 1 << 20
	in := binary.AppendUvarint(nil, n)
	in = append(in, make([]byte, n)...) // n empty strings
	err := Unmarshal(in, new([]string))
	if err == nil || !strings.Contains(err.Error(), "more than this input may allocate") {
		t.Fatalf("%d empty strings: %v", n, err)
	}
	// A pointer to a large value, from one byte.
	if err := Unmarshal([]byte{1}, new(*[1 << 20]uint64)); err == nil || !strings.Contains(err.Error(), "may allocate") {
		t.Fatalf("a pointer to 8 MiB from 1 byte: %v", err)
	}
	// Within the budget, the same shapes decode.
	var few []string
	if err := Unmarshal([]byte{3, 0, 0, 0}, &few); err != nil || len(few) != 3 {
		t.Fatalf("3 empty strings: %v, %v", few, err)
	}
}

type myByte uint8

func TestNamedBytesAndCopies(t *testing.T) {
	type rec struct {
		B []myByte
		A [2]myByte
		S []byte
	}
	in := rec{B: []myByte{1, 2}, A: [2]myByte{3, 4}, S: []byte{5}}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out rec
	if err := Unmarshal(b, &out); err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("got %+v, %v", out, err)
	}
	// The decoded slices are copies, not views of the input.
	for i := range b {
		b[i] = 0xee
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("decoded value changed with its input: %+v", out)
	}
}
