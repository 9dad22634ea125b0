// Package pack encodes plain Go values in a compact binary form. It is
// the encoding of vmm's own records: a snapshot's manifest and machine
// state, and the message that hands a `vmm run` job to a restored guest.
//
// Those records were JSON (the job's spec still is, a contract for any
// guest init: guestabi.EncodeSpec). encoding/json, its reflection-driven
// encoder and decoder and the sorts it instantiates, was 0.31 MB of vmm's
// code and read-only data, and every page of a Go binary's code and data is
// resident in every vmm (the kernel maps it 64 KiB around each page
// touched, and package initialisers touch nearly all of them): a sixth of
// the 5 MiB a booted vmm is allowed (issue 12). These records are written
// and read only by the same vmm release (a snapshot of another format
// version is refused; the guest's init is built with its host), so a
// self-describing format buys nothing; encoding/gob is larger than
// encoding/json, and protocol buffers would need generated code and a
// dependency for a dozen structs. This package is about 300 lines of code
// on reflect, which fmt links anyway.
//
// The encoding follows the Go type, which both sides share:
//
//   - bool: one byte, 0 or 1;
//   - intN and uintN: N/8 bytes, little-endian; int and uint as wide as
//     on the platform (8 bytes on amd64, the one vmm builds for);
//   - string and []byte: a uvarint length, then the bytes;
//   - slice: a uvarint length, then the elements (nil and empty slices
//     encode alike and decode as nil);
//   - array: the elements;
//   - struct: the exported fields in declaration order;
//   - pointer: a byte, 0 for nil or 1 followed by the value;
//   - a type with MarshalBinary and UnmarshalBinary (time.Time): a uvarint
//     length, then what MarshalBinary returned.
//
// Maps, interfaces, floats, channels and functions are refused. Decoding
// checks every length against the bytes left, and what it allocates
// against a budget of maxAlloc(len(input)), before allocating, so input a
// guest or a damaged file supplies costs memory in proportion to its own
// size; it refuses trailing bytes.
package pack

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
)

// maxDepth bounds how deeply values nest (fields, elements, pointers):
// vmm's records nest seven deep; the bound keeps a recursive type's
// decoding from growing the stack with the input.
const maxDepth = 32

// maxAlloc is what decoding n bytes may allocate: an element or a
// pointer's target can take more memory than its encoding (an empty
// string is one byte of input and 16 of memory), so without a budget a
// crafted length would make a few bytes of input allocate many times
// their size. Four times the input, and 64 KiB for small records, is
// above anything vmm's records need (a snapshot's state decodes to
// about its encoded size).
func maxAlloc(n int) int { return 4*n + 64<<10 }

var (
	marshalerType   = reflect.TypeFor[encoding.BinaryMarshaler]()
	unmarshalerType = reflect.TypeFor[encoding.BinaryUnmarshaler]()
)

// ErrTruncated is wrapped by decoding errors for input that ends early.
var ErrTruncated = errors.New("input ends early")

// Marshal returns the encoding of v.
func Marshal(v any) ([]byte, error) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return nil, errors.New("pack: cannot encode nil")
	}
	// An addressable copy: Bytes needs one for byte arrays.
	c := reflect.New(rv.Type()).Elem()
	c.Set(rv)
	var e encoder
	if err := e.value(c, 0); err != nil {
		return nil, err
	}
	return e.b, nil
}

// Unmarshal decodes data, which must be exactly one encoding, into the
// value v points to, which it first sets to its zero value.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("pack: decode into %T, not a non-nil pointer", v)
	}
	el := rv.Elem()
	el.SetZero()
	d := decoder{b: data, budget: maxAlloc(len(data))}
	if err := d.value(el, 0); err != nil {
		return err
	}
	if len(d.b) > 0 {
		return fmt.Errorf("pack: %d bytes after the %s", len(d.b), el.Type())
	}
	return nil
}

// binaryMarshaled reports whether t encodes through MarshalBinary: t has
// it and *t has UnmarshalBinary.
func binaryMarshaled(t reflect.Type) bool {
	return t.Kind() != reflect.Pointer && t.Implements(marshalerType) && reflect.PointerTo(t).Implements(unmarshalerType)
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(n uint64) { e.b = binary.AppendUvarint(e.b, n) }

func (e *encoder) value(v reflect.Value, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("pack: %s: values nested more than %d deep", v.Type(), maxDepth)
	}
	t := v.Type()
	if binaryMarshaled(t) {
		b, err := v.Interface().(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return fmt.Errorf("pack: %s: %w", t, err)
		}
		e.uvarint(uint64(len(b)))
		e.b = append(e.b, b...)
		return nil
	}
	switch t.Kind() {
	case reflect.Bool:
		if v.Bool() {
			e.b = append(e.b, 1)
		} else {
			e.b = append(e.b, 0)
		}
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		e.int(uint64(v.Int()), t.Size())
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		e.int(v.Uint(), t.Size())
	case reflect.String:
		e.uvarint(uint64(v.Len()))
		e.b = append(e.b, v.String()...)
	case reflect.Slice:
		e.uvarint(uint64(v.Len()))
		if t.Elem().Kind() == reflect.Uint8 {
			e.b = append(e.b, v.Bytes()...)
			return nil
		}
		return e.elems(v, depth)
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			e.b = append(e.b, v.Bytes()...)
			return nil
		}
		return e.elems(v, depth)
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).IsExported() {
				if err := e.value(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	case reflect.Pointer:
		if v.IsNil() {
			e.b = append(e.b, 0)
			return nil
		}
		e.b = append(e.b, 1)
		return e.value(v.Elem(), depth+1)
	default:
		return fmt.Errorf("pack: cannot encode %s", t)
	}
	return nil
}

// int appends the low size bytes of x, little-endian.
func (e *encoder) int(x uint64, size uintptr) {
	for i := uintptr(0); i < size; i++ {
		e.b = append(e.b, byte(x>>(8*i)))
	}
}

func (e *encoder) elems(v reflect.Value, depth int) error {
	if minSize(v.Type().Elem(), 0) == 0 {
		return fmt.Errorf("pack: cannot encode %s: its elements encode to nothing", v.Type())
	}
	for i := range v.Len() {
		if err := e.value(v.Index(i), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// minSize is the fewest bytes a value of type t encodes to (0 for a type
// that may encode to nothing, or one nested too deep to tell). Decoding a
// slice checks its length against the bytes left divided by it, and a
// slice of elements that encode to nothing is refused, so no length field
// makes the decoder allocate more than the input's size warrants.
func minSize(t reflect.Type, depth int) uint64 {
	if depth > maxDepth {
		return 0
	}
	if binaryMarshaled(t) {
		return 1
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return uint64(t.Size())
	case reflect.String, reflect.Slice, reflect.Pointer:
		return 1
	case reflect.Array:
		return uint64(t.Len()) * minSize(t.Elem(), depth+1)
	case reflect.Struct:
		var n uint64
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				n += minSize(f.Type, depth+1)
			}
		}
		return n
	}
	return 0
}

type decoder struct {
	b      []byte
	budget int // bytes decoding may still allocate (maxAlloc)
}

// alloc charges n elements of size bytes against the budget.
func (d *decoder) alloc(t reflect.Type, n int, size uintptr) error {
	if size > 0 && uintptr(n) > uintptr(d.budget)/size {
		return fmt.Errorf("pack: %s: %d elements of %d bytes are more than this input may allocate", t, n, size)
	}
	d.budget -= n * int(size)
	return nil
}

func (d *decoder) take(n uint64, t reflect.Type) ([]byte, error) {
	if n > uint64(len(d.b)) {
		return nil, fmt.Errorf("pack: %s: %w", t, ErrTruncated)
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b, nil
}

// length reads a uvarint length of elements that each take at least
// elemMin bytes, and checks that many could follow.
func (d *decoder) length(t reflect.Type, elemMin uint64) (int, error) {
	n, k := binary.Uvarint(d.b)
	switch {
	case k == 0:
		return 0, fmt.Errorf("pack: %s: length: %w", t, ErrTruncated)
	case k < 0:
		return 0, fmt.Errorf("pack: %s: length overflows 64 bits", t)
	}
	d.b = d.b[k:]
	if elemMin == 0 {
		return 0, fmt.Errorf("pack: cannot decode %s: its elements encode to nothing", t)
	}
	if n > uint64(len(d.b))/elemMin {
		return 0, fmt.Errorf("pack: %s of %d elements: %w", t, n, ErrTruncated)
	}
	return int(n), nil
}

func (d *decoder) value(v reflect.Value, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("pack: %s: values nested more than %d deep", v.Type(), maxDepth)
	}
	t := v.Type()
	if binaryMarshaled(t) {
		n, err := d.length(t, 1)
		if err != nil {
			return err
		}
		b, _ := d.take(uint64(n), t)
		if err := v.Addr().Interface().(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
			return fmt.Errorf("pack: %s: %w", t, err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Bool:
		b, err := d.take(1, t)
		if err != nil {
			return err
		}
		if b[0] > 1 {
			return fmt.Errorf("pack: %s: byte %d is neither 0 nor 1", t, b[0])
		}
		v.SetBool(b[0] == 1)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		x, err := d.int(t)
		if err != nil {
			return err
		}
		// Sign-extend from the type's width.
		shift := 64 - 8*t.Size()
		v.SetInt(int64(x<<shift) >> shift)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		x, err := d.int(t)
		if err != nil {
			return err
		}
		v.SetUint(x)
	case reflect.String:
		n, err := d.length(t, 1)
		if err != nil {
			return err
		}
		if err := d.alloc(t, n, 1); err != nil {
			return err
		}
		b, _ := d.take(uint64(n), t)
		v.SetString(string(b))
	case reflect.Slice:
		n, err := d.length(t, minSize(t.Elem(), 0))
		if err != nil || n == 0 {
			return err
		}
		if err := d.alloc(t, n, t.Elem().Size()); err != nil {
			return err
		}
		if t.Elem().Kind() == reflect.Uint8 {
			b, _ := d.take(uint64(n), t)
			v.SetBytes(append(make([]byte, 0, n), b...))
			return nil
		}
		v.Set(reflect.MakeSlice(t, n, n))
		return d.elems(v, depth)
	case reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			b, err := d.take(uint64(t.Len()), t)
			if err != nil {
				return err
			}
			copy(v.Bytes(), b)
			return nil
		}
		return d.elems(v, depth)
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).IsExported() {
				if err := d.value(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	case reflect.Pointer:
		b, err := d.take(1, t)
		if err != nil {
			return err
		}
		switch b[0] {
		case 0:
			return nil
		case 1:
			if err := d.alloc(t, 1, t.Elem().Size()); err != nil {
				return err
			}
			v.Set(reflect.New(t.Elem()))
			return d.value(v.Elem(), depth+1)
		}
		return fmt.Errorf("pack: %s: pointer flag %d is neither 0 nor 1", t, b[0])
	default:
		return fmt.Errorf("pack: cannot decode %s", t)
	}
	return nil
}

// int reads a little-endian integer as wide as t.
func (d *decoder) int(t reflect.Type) (uint64, error) {
	b, err := d.take(uint64(t.Size()), t)
	if err != nil {
		return 0, err
	}
	var x uint64
	for i, c := range b {
		x |= uint64(c) << (8 * i)
	}
	return x, nil
}

func (d *decoder) elems(v reflect.Value, depth int) error {
	if v.Len() > 0 && minSize(v.Type().Elem(), 0) == 0 {
		return fmt.Errorf("pack: cannot decode %s: its elements encode to nothing", v.Type())
	}
	for i := range v.Len() {
		if err := d.value(v.Index(i), depth+1); err != nil {
			return err
		}
	}
	return nil
}
