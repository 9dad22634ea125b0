package acpi

import (
	"bytes"
	"fmt"
	"testing"
)

// Every expected byte string below was worked out by hand from ACPI 6.4
// §20.2, not produced by the encoder.

func TestPkgLength(t *testing.T) {
	tests := []struct {
		v    int
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{63, []byte{0x3f}},                   // largest 1-byte form
		{64, []byte{0x40, 0x04}},             // smallest 2-byte form: nibble 0, then 0x04
		{0x123, []byte{0x43, 0x12}},          // low nibble in the lead byte
		{4095, []byte{0x4f, 0xff}},           // largest 2-byte form
		{4096, []byte{0x80, 0x00, 0x01}},     // smallest 3-byte form
		{0xfffff, []byte{0x8f, 0xff, 0xff}},  // largest 3-byte form
		{0x100000, []byte{0xc0, 0, 0, 0x01}}, // smallest 4-byte form
		{0x1234567, []byte{0xc7, 0x56, 0x34, 0x12}},
		{0xfffffff, []byte{0xcf, 0xff, 0xff, 0xff}}, // largest encodable
	}
	for _, tt := range tests {
		got, err := pkgLength(tt.v)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("pkgLength(%#x) = % x, %v; want % x", tt.v, got, err, tt.want)
		}
	}
	for _, v := range []int{-1, 0x10000000} {
		if got, err := pkgLength(v); err == nil {
			t.Errorf("pkgLength(%#x) = % x, want an error", v, got)
		}
	}
}

// TestAppendPkg checks the self-inclusive length at each size boundary:
// a body that just fits the shorter form, and one byte more.
func TestAppendPkg(t *testing.T) {
	tests := []struct {
		body int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},                  // 62+1 = 63
		{63, []byte{0x41, 0x04}},            // 63+1 > 63, so 63+2 = 65
		{4093, []byte{0x4f, 0xff}},          // 4093+2 = 4095
		{4094, []byte{0x81, 0x00, 0x01}},    // 4094+2 > 4095, so 4094+3 = 4097
		{0xffffc, []byte{0x8f, 0xff, 0xff}}, // +3 = 0xfffff
		{0xffffd, []byte{0xc1, 0, 0, 0x01}}, // +4 = 0x100001
	}
	for _, tt := range tests {
		body := bytes.Repeat([]byte{0xaa}, tt.body)
		got, err := appendPkg([]byte{0x12}, body)
		if err != nil {
			t.Fatalf("appendPkg(%d-byte body): %v", tt.body, err)
		}
		want := append(append([]byte{0x12}, tt.want...), body...)
		if !bytes.Equal(got, want) {
			t.Errorf("appendPkg(%d-byte body) starts % x, want % x", tt.body, head(got), head(want))
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 6)] }

func encode(t *testing.T, terms ...amlTerm) []byte {
	t.Helper()
	b, err := encodeAML(terms...)
	if err != nil {
		t.Fatalf("encodeAML: %v", err)
	}
	return b
}

func TestIntegers(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{2, []byte{0x0a, 0x02}},
		{0xff, []byte{0x0a, 0xff}},
		{0x100, []byte{0x0b, 0x00, 0x01}},
		{0xffff, []byte{0x0b, 0xff, 0xff}},
		{0x10000, []byte{0x0c, 0x00, 0x00, 0x01, 0x00}},
		{0xfec00000, []byte{0x0c, 0x00, 0x00, 0xc0, 0xfe}},
		{0xffffffff, []byte{0x0c, 0xff, 0xff, 0xff, 0xff}},
		{0x100000000, []byte{0x0e, 0, 0, 0, 0, 0x01, 0, 0, 0}},
		{^uint64(0), []byte{0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		if got := encode(t, amlInt(tt.v)); !bytes.Equal(got, tt.want) {
			t.Errorf("amlInt(%#x) = % x, want % x", tt.v, got, tt.want)
		}
	}
}

func TestStrings(t *testing.T) {
	if got, want := encode(t, amlString("PNP")), []byte{0x0d, 'P', 'N', 'P', 0}; !bytes.Equal(got, want) {
		t.Errorf("amlString(PNP) = % x, want % x", got, want)
	}
	if got, want := encode(t, amlString("")), []byte{0x0d, 0}; !bytes.Equal(got, want) {
		t.Errorf(`amlString("") = % x, want % x`, got, want)
	}
	for _, s := range []string{"a\x00b", "caf\xc3\xa9"} {
		if _, err := encodeAML(amlString(s)); err == nil {
			t.Errorf("amlString(%q) encoded; want an error", s)
		}
	}
}

func TestNameStrings(t *testing.T) {
	tests := []struct {
		path string
		want []byte
	}{
		{`\_S5`, []byte{'\\', '_', 'S', '5', '_'}},
		{`PCI0`, []byte("PCI0")},
		{`_HID`, []byte("_HID")},
		{`A`, []byte("A___")},
		{`_SB.PCI0`, append([]byte{0x2e}, "_SB_PCI0"...)},
		{`\_SB.PCI0.ISA`, append([]byte{'\\', 0x2f, 3}, "_SB_PCI0ISA_"...)},
		{`^^FOO`, append([]byte{'^', '^'}, "FOO_"...)},
		{`\`, []byte{'\\', 0x00}},
		{``, []byte{0x00}},
	}
	for _, tt := range tests {
		got, err := appendNameString(nil, tt.path)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("appendNameString(%q) = % x, %v; want % x", tt.path, got, err, tt.want)
		}
	}
	for _, bad := range []string{`pci0`, `0ABC`, `TOOLONG`, `A..B`, `A.`, `\^A`, `_S-5`, `\\A`} {
		if got, err := appendNameString(nil, bad); err == nil {
			t.Errorf("appendNameString(%q) = % x, want an error", bad, got)
		}
	}
}

func TestEISAID(t *testing.T) {
	tests := []struct {
		id   string
		want uint32
	}{
		{"PNP0A03", 0x030ad041}, // PCI host bridge
		{"PNP0A08", 0x080ad041}, // PCI Express host bridge
		{"PNP0501", 0x0105d041}, // 16550A UART
		{"AAA0000", 0x00002104}, // letters 1,1,1: 0b00001_00001_00001 = 0x0421, byte-swapped
	}
	for _, tt := range tests {
		got, err := eisaID(tt.id)
		if err != nil || got != tt.want {
			t.Errorf("eisaID(%q) = %#x, %v; want %#x", tt.id, got, err, tt.want)
		}
	}
	for _, bad := range []string{"pnp0a03", "PNP0A0G", "PNP0A0", "PNP0A030", "P1P0A03"} {
		if _, err := eisaID(bad); err == nil {
			t.Errorf("eisaID(%q) succeeded, want an error", bad)
		}
	}
}

func TestPackages(t *testing.T) {
	if got, want := encode(t, amlPackage{}), []byte{0x12, 0x02, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("empty package = % x, want % x", got, want)
	}
	// 40 two-byte elements: body 1+80 = 81, PkgLength 83 = 0x53, which no
	// longer fits one byte: lead 0x43, then 0x05.
	var p amlPackage
	for range 40 {
		p = append(p, amlInt(5))
	}
	got := encode(t, p)
	if want := []byte{0x12, 0x43, 0x05, 40, 0x0a, 0x05}; !bytes.Equal(got[:6], want) || len(got) != 1+2+1+80 {
		t.Errorf("40-element package starts % x (len %d), want % x... (len 84)", got[:6], len(got), want)
	}
	big := make(amlPackage, 255)
	for i := range big {
		big[i] = amlInt(0)
	}
	if _, err := encodeAML(big); err != nil {
		t.Errorf("255-element package: %v", err)
	}
	if _, err := encodeAML(append(big, amlInt(0))); err == nil {
		t.Error("256-element package encoded; NumElements is one byte")
	}
	// A nested error surfaces rather than being encoded as garbage.
	if _, err := encodeAML(amlPackage{amlString("\x00")}); err == nil {
		t.Error("package holding a bad string encoded")
	}
}

func TestBuffers(t *testing.T) {
	tests := []struct {
		name string
		buf  amlBuffer
		want []byte
	}{
		{"empty", amlBuffer{}, []byte{0x11, 0x02, 0x00}},
		{"three bytes", amlBuffer{1, 2, 3}, []byte{0x11, 0x06, 0x0a, 0x03, 1, 2, 3}},
		{"empty resource template", resourceTemplate(), []byte{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}},
		{"resource template", resourceTemplate([]byte{0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8}),
			[]byte{0x11, 0x0d, 0x0a, 0x0a, 0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x79, 0x00}},
	}
	for _, tt := range tests {
		if got := encode(t, tt.buf); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, got, tt.want)
		}
	}
}

// TestDeviceInScope encodes the skeleton a PCI host bridge will need,
// Scope(\_SB) { Device(PCI0) { Name(_HID, EisaId("PNP0A03")) Name(_UID, 0) } },
// to show the encoder already covers it.
func TestDeviceInScope(t *testing.T) {
	got := encode(t, amlScope{`\_SB`, []amlTerm{
		amlDevice{"PCI0", []amlTerm{
			amlName{"_HID", amlEISAID("PNP0A03")},
			amlName{"_UID", amlInt(0)},
		}},
	}})
	device := []byte{
		0x5b, 0x82, 0x15, // DeviceOp, PkgLength 21 = 1 + 4 + 10 + 6
		'P', 'C', 'I', '0',
		0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03,
		0x08, '_', 'U', 'I', 'D', 0x00,
	}
	want := append([]byte{0x10, 0x1d, '\\', '_', 'S', 'B', '_'}, device...) // PkgLength 29 = 1 + 5 + 23
	if !bytes.Equal(got, want) {
		t.Errorf("got  % x\nwant % x", got, want)
	}
}

func TestNestedErrors(t *testing.T) {
	bad := []amlTerm{
		amlName{"bad", amlInt(0)},
		amlName{"GOOD", amlEISAID("nope")},
		amlScope{"_SB", []amlTerm{amlName{"X", amlString("\xff")}}},
		amlDevice{"DEV0", []amlTerm{amlScope{"1BAD", nil}}},
		amlDevice{"toolong", nil},
	}
	for i, term := range bad {
		if b, err := encodeAML(term); err == nil {
			t.Errorf("term %d (%+v) encoded to % x, want an error", i, term, b)
		}
	}
}

func ExampleBuild() {
	blob, err := Build(Config{
		Base: 0xe0000, CPUs: 2, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000,
		PMPort: 0x600, SCIIRQ: 9, MaxSize: 0x20000,
	})
	fmt.Println(len(blob) > 0, err, string(blob[:8]))
	// Output: true <nil> RSD PTR
}
