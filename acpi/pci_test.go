package acpi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// amlNode is one term of a DSDT body as decoded by decodeAML below, which
// like the table reader in tables_test.go shares nothing with the encoder:
// it knows just the opcodes the DSDT may hold (ACPI 6.4 §20.2) and fails
// on any other.
type amlNode struct {
	op       string // "Name", "Scope" or "Device"
	name     string // the NameString, segments as stored: `\_SB_`, "PCI0"
	data     []byte // a Name's data object, encoded
	children []amlNode
	raw      []byte // the whole term
}

// amlPkgLength decodes a PkgLength (ACPI 6.4 §20.2.4): the value, which
// counts the PkgLength's own bytes, and how many bytes it took.
func amlPkgLength(b []byte) (v, n int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("PkgLength missing")
	}
	extra := int(b[0] >> 6)
	if extra == 0 {
		return int(b[0] & 0x3f), 1, nil
	}
	if len(b) < 1+extra || b[0]&0x30 != 0 {
		return 0, 0, fmt.Errorf("bad PkgLength % x", b[:min(len(b), 4)])
	}
	v = int(b[0] & 0x0f)
	for i := 1; i <= extra; i++ {
		v |= int(b[i]) << (4 + 8*(i-1))
	}
	return v, 1 + extra, nil
}

// amlNameString decodes a NameString (ACPI 6.4 §20.2.2).
func amlNameString(b []byte) (string, int, error) {
	i := 0
	var prefix string
	for i < len(b) && (b[i] == '\\' || b[i] == '^') {
		prefix += string(b[i])
		i++
	}
	if i >= len(b) {
		return "", 0, fmt.Errorf("NameString ends after its prefix")
	}
	segs := 1
	switch b[i] {
	case 0x00:
		return prefix, i + 1, nil
	case 0x2e:
		segs, i = 2, i+1
	case 0x2f:
		if i+1 >= len(b) {
			return "", 0, fmt.Errorf("MultiNamePrefix without a count")
		}
		segs, i = int(b[i+1]), i+2
	}
	if i+4*segs > len(b) {
		return "", 0, fmt.Errorf("NameString runs past the end")
	}
	var names []string
	for s := 0; s < segs; s++ {
		seg := b[i : i+4]
		if !(seg[0] == '_' || seg[0] >= 'A' && seg[0] <= 'Z') {
			return "", 0, fmt.Errorf("bad NameSeg %q", seg)
		}
		names = append(names, string(seg))
		i += 4
	}
	return prefix + strings.Join(names, "."), i, nil
}

// amlDataLen is the length of the data object at the start of b.
func amlDataLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, fmt.Errorf("data object missing")
	}
	var n int
	switch b[0] {
	case 0x00, 0x01: // ZeroOp, OneOp
		n = 1
	case 0x0a, 0x0b, 0x0c, 0x0e: // Byte, Word, DWord, QWord prefixes
		n = map[byte]int{0x0a: 2, 0x0b: 3, 0x0c: 5, 0x0e: 9}[b[0]]
	case 0x0d: // String: up to and including the NUL
		end := bytes.IndexByte(b, 0)
		if end < 0 {
			return 0, fmt.Errorf("unterminated string")
		}
		n = end + 1
	case 0x11, 0x12: // BufferOp, PackageOp
		v, _, err := amlPkgLength(b[1:])
		if err != nil {
			return 0, err
		}
		n = 1 + v
	default:
		return 0, fmt.Errorf("unexpected data opcode %#x", b[0])
	}
	if n > len(b) {
		return 0, fmt.Errorf("data object of %d bytes runs past the end", n)
	}
	return n, nil
}

// decodeAML decodes a TermList of Name, Scope and Device terms.
func decodeAML(b []byte) ([]amlNode, error) {
	var out []amlNode
	for len(b) > 0 {
		var node amlNode
		var n int
		switch {
		case b[0] == 0x08: // NameOp NameString DataRefObject
			name, nl, err := amlNameString(b[1:])
			if err != nil {
				return nil, err
			}
			dl, err := amlDataLen(b[1+nl:])
			if err != nil {
				return nil, fmt.Errorf("Name(%s): %w", name, err)
			}
			node = amlNode{op: "Name", name: name, data: b[1+nl : 1+nl+dl]}
			n = 1 + nl + dl
		case b[0] == 0x10, len(b) > 1 && b[0] == 0x5b && b[1] == 0x82: // ScopeOp, DeviceOp
			op, at := "Scope", 1
			if b[0] == 0x5b {
				op, at = "Device", 2
			}
			v, pl, err := amlPkgLength(b[at:])
			if err != nil {
				return nil, err
			}
			if at+v > len(b) {
				return nil, fmt.Errorf("%s of %d bytes runs past the end", op, v)
			}
			body := b[at+pl : at+v]
			name, nl, err := amlNameString(body)
			if err != nil {
				return nil, err
			}
			children, err := decodeAML(body[nl:])
			if err != nil {
				return nil, fmt.Errorf("%s(%s): %w", op, name, err)
			}
			node = amlNode{op: op, name: name, children: children}
			n = at + v
		default:
			return nil, fmt.Errorf("unexpected opcode %#x", b[0])
		}
		node.raw = b[:n]
		out = append(out, node)
		b = b[n:]
	}
	return out, nil
}

// amlFind follows a path of node names down the tree.
func amlFind(nodes []amlNode, path ...string) (amlNode, bool) {
	for _, n := range nodes {
		if n.name != path[0] {
			continue
		}
		if len(path) == 1 {
			return n, true
		}
		return amlFind(n.children, path[1:]...)
	}
	return amlNode{}, false
}

func pciConfig(base, size uint32, virtio ...MMIODevice) Config {
	c := machineConfig(2)
	c.PCI = &PCIRoot{ConfigPort: 0xcf8, MMIOBase: base, MMIOSize: size}
	c.VirtioMMIO = virtio
	return c
}

// The _CRS of PCI0 by hand (ACPI 6.4 §6.4.2.5, §6.4.3.5.2, §6.4.3.5.3),
// for the window given in each case:
//
//	WordBusNumber: 0x88, length 13; type 2 (bus numbers); flags 0x0c
//	  (MaxFixed, MinFixed, PosDecode, producer); no type flags; then
//	  granularity 0, min 0, max 0, translation 0, length 1.
//	IO: 0x47; Decode16; min 0xcf8, max 0xcf8; alignment 1; 8 ports.
//	DWordMemory: 0x87, length 23; type 0 (memory); flags 0x0c; 0x01
//	  (ReadWrite, NonCacheable); then granularity 0, min, max,
//	  translation 0, length.
//	End Tag: 0x79, checksum 0.
//
// and the whole buffer is BufferOp, PkgLength 0x37 (itself, BytePrefix
// and size, and the 52 bytes), BytePrefix 0x34.
var (
	crsHead = []byte{
		0x11, 0x37, 0x0a, 0x34,
		0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
		0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08,
		0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x00,
	}
	crsTail = []byte{0x79, 0x00}
)

func crs(minMaxTraLen ...byte) []byte {
	return append(append(append([]byte{}, crsHead...), minMaxTraLen...), crsTail...)
}

func TestDSDTPCI(t *testing.T) {
	virtio := []MMIODevice{{Addr: 0xd0000000, Size: 0x200, GSI: 16}}
	tests := []struct {
		name   string
		c      Config
		crs    []byte
		others []string // the devices after PCI0 in \_SB, in order
	}{
		{
			name: "hole up to the IOAPIC",
			c:    pciConfig(0xc0000000, 0x3ec00000),
			crs: crs(
				0x00, 0x00, 0x00, 0xc0, // min 0xC0000000
				0xff, 0xff, 0xbf, 0xfe, // max 0xFEBFFFFF
				0x00, 0x00, 0x00, 0x00, // translation
				0x00, 0x00, 0xc0, 0x3e), // length 0x3EC00000
		},
		{
			name: "beside virtio-mmio",
			c:    pciConfig(0xe0000000, 0x10000000, virtio...),
			crs: crs(
				0x00, 0x00, 0x00, 0xe0,
				0xff, 0xff, 0xff, 0xef,
				0x00, 0x00, 0x00, 0x00,
				0x00, 0x00, 0x00, 0x10),
			others: []string{"VR00"},
		},
		{
			name: "ends at 4 GiB",
			c:    pciConfig(0xff000000, 0x01000000),
			crs: crs(
				0x00, 0x00, 0x00, 0xff,
				0xff, 0xff, 0xff, 0xff,
				0x00, 0x00, 0x00, 0x00,
				0x00, 0x00, 0x00, 0x01),
		},
		{
			name: "one page",
			c:    pciConfig(0x80001000, 0x1000),
			crs: crs(
				0x00, 0x10, 0x00, 0x80,
				0xff, 0x1f, 0x00, 0x80,
				0x00, 0x00, 0x00, 0x00,
				0x00, 0x10, 0x00, 0x00),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, mustBuild(t, tt.c), tt.c.Base)
			nodes, err := decodeAML(p.dsdt[36:])
			if err != nil {
				t.Fatalf("decode DSDT: %v\n% x", err, p.dsdt[36:])
			}
			if _, ok := amlFind(nodes, `\_S5_`); !ok {
				t.Error(`DSDT lost \_S5`)
			}
			sb, ok := amlFind(nodes, `\_SB_`)
			if !ok {
				t.Fatalf(`DSDT has no \_SB scope`)
			}
			var devs []string
			for _, n := range sb.children {
				if n.op != "Device" {
					t.Errorf(`\_SB holds a %s %s, want only devices`, n.op, n.name)
				}
				devs = append(devs, n.name)
			}
			if want := append([]string{"PCI0"}, tt.others...); strings.Join(devs, " ") != strings.Join(want, " ") {
				t.Errorf(`devices in \_SB: %v, want %v`, devs, want)
			}
			pci, ok := amlFind(nodes, `\_SB_`, "PCI0")
			if !ok {
				t.Fatal(`no \_SB.PCI0`)
			}
			names := map[string][]byte{
				"_HID": {0x0c, 0x41, 0xd0, 0x0a, 0x03}, // EISAID("PNP0A03")
				"_UID": {0x00},
				"_SEG": {0x00},
				"_BBN": {0x00},
				"_CRS": tt.crs,
			}
			for _, n := range pci.children {
				want, ok := names[n.name]
				if n.op != "Name" || !ok {
					t.Errorf("PCI0 holds unexpected %s %s", n.op, n.name)
					continue
				}
				delete(names, n.name)
				if !bytes.Equal(n.data, want) {
					t.Errorf("PCI0.%s\n got % x\nwant % x", n.name, n.data, want)
				}
			}
			for name := range names {
				t.Errorf("PCI0 lacks %s", name)
			}
			// The device as a whole: DeviceOp, PkgLength 95 (two bytes:
			// 0x4f, 0x05) over "PCI0", four 10- and 6-byte names, and
			// the 61-byte Name(_CRS).
			want := []byte{0x5b, 0x82, 0x4f, 0x05, 'P', 'C', 'I', '0',
				0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03,
				0x08, '_', 'U', 'I', 'D', 0x00,
				0x08, '_', 'S', 'E', 'G', 0x00,
				0x08, '_', 'B', 'B', 'N', 0x00,
				0x08, '_', 'C', 'R', 'S'}
			want = append(want, tt.crs...)
			if !bytes.Equal(pci.raw, want) {
				t.Errorf("Device(PCI0)\n got % x\nwant % x", pci.raw, want)
			}
		})
	}
}

func TestPCIConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" if the config is valid
	}{
		{"empty window", func(c *Config) { c.PCI.MMIOSize = 0 }, "is empty"},
		{"wraps past 4 GiB", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfffff000, 0x2000 }, "past 4 GiB"},
		{"wraps the 32-bit sum", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0x80000000, 0x80000001 }, "past 4 GiB"},
		{"ends at 4 GiB", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xff000000, 0x01000000 }, ""},
		{"last byte of the IOAPIC page", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfec00fff, 0x1000 }, "I/O APIC"},
		{"one byte into the IOAPIC", func(c *Config) { c.PCI.MMIOSize = 0x3ec00001 }, "I/O APIC at [0xfec00000, 0xfec01000)"},
		{"up to the IOAPIC", func(c *Config) {}, ""},
		{"from the IOAPIC page's end", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfec01000, 0x1000 }, ""},
		{"over the LAPIC", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfed00000, 0x200000 }, "local APIC"},
		{"into the MSI range", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfeef0000, 0x10000 }, "MSI address range"},
		{"up to the MSI range", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfed00000, 0x100000 }, ""},
		{"above the MSI range", func(c *Config) { c.PCI.MMIOBase, c.PCI.MMIOSize = 0xfef00000, 0x100000 }, ""},
		{"relocated LAPIC", func(c *Config) { c.LAPICAddr, c.PCI.MMIOBase, c.PCI.MMIOSize = 0xd0000000, 0xc0000000, 0x20000000 }, "local APIC at [0xd0000000, 0xd0001000)"},
		{"over a virtio-mmio device", func(c *Config) {
			c.VirtioMMIO = []MMIODevice{{Addr: 0xd0000000, Size: 0x200, GSI: 16}, {Addr: 0xd0001000, Size: 0x200, GSI: 17}}
			c.PCI.MMIOBase, c.PCI.MMIOSize = 0xd0001000, 0x1000
		}, "virtio-mmio device 1"},
		{"config port", func(c *Config) { c.PCI.ConfigPort = 0xcfc }, "ConfigPort 0xcfc"},
		{"config port 0", func(c *Config) { c.PCI.ConfigPort = 0 }, "ConfigPort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := pciConfig(0xc0000000, 0x3ec00000)
			tt.edit(&c)
			blob, err := Build(c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Build: %v", err)
			case tt.want == "":
				mustParse(t, blob, c.Base)
			case err == nil:
				t.Fatalf("Build accepted PCI %+v", *c.PCI)
			case !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "PCI"):
				t.Errorf("Build: err = %v, want one mentioning PCI and %q", err, tt.want)
			case strings.Contains(err.Error(), "\n"):
				t.Errorf("Build: err = %q, want one line for one fault", err)
			}
		})
	}
	// Faults add up, one line each, after the config's other faults.
	c := pciConfig(0xfec00000, 0x1000)
	c.PCI.ConfigPort, c.CPUs = 0x1f0, 0
	_, err := Build(c)
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("three faults: err = %v, want three lines", err)
	}
}

// TestBuildWithoutPCIUnchanged pins the tables of configs without PCI to
// the bytes they had before the PCI bridge existed: a nil Config.PCI must
// change nothing. The digests are of Build's output for each config at
// that commit (7d1d553); update them only for a deliberate change to the
// tables.
func TestBuildWithoutPCIUnchanged(t *testing.T) {
	virtio := machineConfig(2)
	virtio.VirtioMMIO = []MMIODevice{{Addr: 0xd0000000, Size: 0x200, GSI: 16}, {Addr: 0xd0001000, Size: 0x200, GSI: 17}}
	tests := []struct {
		c    Config
		size int
		sha  string
	}{
		{machineConfig(1), 656, "3f2bf161760c6317aedd27b9cbabfac1eeb2cf5209ffd28224aa564d6767b764"},
		{machineConfig(4), 680, "9193fb39ede73e0718633e3e87fd28032a21ce99c7d5a6f6be34a82c5ff0c448"},
		{machineConfig(255), 2688, "9ec23e664f8d1ead565ea3ccf24203e33a032a03eab7f1cfb34bb5c9f8c6c502"},
		{virtio, 792, "9927b7c1024bc7306672d29c29ef05647b972e4244b40d5465b8bc82e100f671"},
	}
	for _, tt := range tests {
		blob := mustBuild(t, tt.c)
		sum := sha256.Sum256(blob)
		if got := hex.EncodeToString(sum[:]); len(blob) != tt.size || got != tt.sha {
			t.Errorf("%d CPUs, %d virtio-mmio: %d bytes, sha256 %s; want %d bytes, %s", tt.c.CPUs, len(tt.c.VirtioMMIO), len(blob), got, tt.size, tt.sha)
		}
	}
}

// TestDSDTPCIIasl has iasl, where installed, disassemble a DSDT with the
// bridge and a virtio-mmio device into the ASL we mean.
func TestDSDTPCIIasl(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl (acpica-tools) not installed; TestDSDTPCI's byte checks only")
	}
	c := pciConfig(0xc0000000, 0x10000000, MMIODevice{Addr: 0xd0000000, Size: 0x200, GSI: 16})
	p := mustParse(t, mustBuild(t, c), c.Base)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dsdt.dat"), p.dsdt, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(iasl, "-d", "dsdt.dat")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	asl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	norm := strings.Join(strings.Fields(string(asl)), " ")
	for _, want := range []string{
		`Scope (\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03")`,
		`Name (_UID, Zero)`, `Name (_SEG, Zero)`, `Name (_BBN, Zero)`,
		`WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x0000, // Range Maximum 0x0000, // Translation Offset 0x0001, // Length ,, )`,
		`IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length )`,
		`DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, // Granularity 0xC0000000, // Range Minimum 0xCFFFFFFF, // Range Maximum 0x00000000, // Translation Offset 0x10000000, // Length ,, , AddressRangeMemory, TypeStatic)`,
		`Device (VR00)`,
	} {
		if !strings.Contains(norm, want) {
			t.Errorf("iasl output lacks %q:\n%s", want, asl)
		}
	}
	// And back: compiled without name-path optimisation (-on), which
	// would drop the root prefix of \_S5 and \_SB, the ASL gives our
	// definition block byte for byte; only the header's compiler ID
	// and checksum differ.
	cmd = exec.Command(iasl, "-on", "-p", "rt", "dsdt.dsl")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iasl -on dsdt.dsl: %v\n%s", err, out)
	}
	aml, err := os.ReadFile(filepath.Join(dir, "rt.aml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(aml) < 36 || !bytes.Equal(aml[36:], p.dsdt[36:]) {
		t.Errorf("recompiled DSDT body differs:\n got % x\nwant % x", aml[min(len(aml), 36):], p.dsdt[36:])
	}
}
