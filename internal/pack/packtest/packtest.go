// Package packtest helps test the records package pack encodes: Fill
// gives every field of a value a distinct non-zero value, so a round
// trip proves each field survives; Layout describes a type's encoded
// layout, so a test can pin it to the format version that carries it
// (pack goes by field order, so a reordered, added or retyped field
// changes the format without a word).
package packtest

import (
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"
)

// Fill sets every exported field reachable from v (a pointer) to a
// non-zero value: integers count up from 1, strings are "s" and the
// count, bools true, slices have two elements, pointers a value.
func Fill(v any) {
	n := 0
	fill(reflect.ValueOf(v).Elem(), &n, 0)
}

func fill(v reflect.Value, n *int, depth int) {
	if depth > 20 {
		return
	}
	*n++
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n % 100))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n % 200))
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", *n))
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n, depth+1)
		}
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), n, depth+1)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n, depth+1)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n, depth+1)
			}
		}
	}
}

// Layout is a short fingerprint (FNV-64a, hex) of how pack lays out a
// value of v's type: each exported field's name and type, in order, down
// to the basic kinds.
func Layout(v any) string {
	var b strings.Builder
	describe(&b, reflect.TypeOf(v), 0)
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return fmt.Sprintf("%016x", h.Sum64())
}

func describe(b *strings.Builder, t reflect.Type, depth int) {
	if depth > 20 {
		b.WriteString("...")
		return
	}
	switch t.Kind() {
	case reflect.Slice:
		b.WriteString("[]")
		describe(b, t.Elem(), depth+1)
	case reflect.Array:
		fmt.Fprintf(b, "[%d]", t.Len())
		describe(b, t.Elem(), depth+1)
	case reflect.Pointer:
		b.WriteString("*")
		describe(b, t.Elem(), depth+1)
	case reflect.Struct:
		if t.PkgPath() == "time" { // encoded by its MarshalBinary
			b.WriteString(t.String())
			return
		}
		b.WriteString("{")
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				b.WriteString(f.Name + " ")
				describe(b, f.Type, depth+1)
				b.WriteString(";")
			}
		}
		b.WriteString("}")
	default:
		b.WriteString(t.Kind().String())
	}
}
