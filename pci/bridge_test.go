package pci

import (
	"encoding/binary"
	"strings"
	"testing"
)

func newTestBridge(t *testing.T) (*HostBridge, *Endpoint, *recorder) {
	t.Helper()
	h := NewHostBridge()
	e, r := newTestEndpoint()
	if err := h.Add(3, e); err != nil {
		t.Fatal(err)
	}
	return h, e, r
}

// TestLinuxProbe replays pci_check_type1 (arch/x86/pci/direct.c): a byte
// write to 0xCFB must not disturb CONFIG_ADDRESS, and a dword written to
// 0xCF8 must read back; then pci_sanity_check looks for a host bridge on
// bus 0.
func TestLinuxProbe(t *testing.T) {
	h, _, _ := newTestBridge(t)
	p := ports{h}
	p.outb(0xcfb, 0x01)
	tmp := p.inl(0xcf8)
	p.outl(0xcf8, 0x80000000)
	if v := p.inl(0xcf8); v != 0x80000000 {
		t.Fatalf("CONFIG_ADDRESS reads %#x after outl(0x80000000), want 0x80000000", v)
	}
	p.outl(0xcf8, tmp)
	if v := p.inl(0xcf8); v != tmp {
		t.Fatalf("CONFIG_ADDRESS reads %#x after restoring %#x", v, tmp)
	}

	found := false
	for devfn := 0; devfn < 256 && !found; devfn++ {
		if p.read(0, devfn>>3, devfn&7, 0x0a, 2) == 0x0600 { // PCI_CLASS_DEVICE == PCI_CLASS_BRIDGE_HOST
			found = devfn == 0
		}
	}
	if !found {
		t.Fatal("pci_sanity_check finds no host bridge at 00:00.0")
	}
}

func TestConfigAddressRegister(t *testing.T) {
	tests := []struct {
		name  string
		ops   func(p ports)
		want  uint32 // dword read at 0xCF8
		wantB uint8  // byte read at 0xCF8
	}{
		{"reset", func(p ports) {}, 0, 0xff},
		{"dword latches", func(p ports) { p.outl(0xcf8, 0x80001810) }, 0x80001810, 0xff},
		{"bits 1:0 and 30:24 read 0", func(p ports) { p.outl(0xcf8, 0xffffffff) }, 0x80fffffc, 0xff},
		{"byte write ignored", func(p ports) { p.outl(0xcf8, 0x80000000); p.outb(0xcfb, 0x01); p.outb(0xcf8, 0x44) }, 0x80000000, 0xff},
		{"word write ignored", func(p ports) { p.outl(0xcf8, 0x80000000); p.outw(0xcf8, 0x1234); p.outw(0xcfa, 0x1234) }, 0x80000000, 0xff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ports{NewHostBridge()}
			tc.ops(p)
			if v := p.inl(0xcf8); v != tc.want {
				t.Errorf("inl(0xCF8) = %#x, want %#x", v, tc.want)
			}
			if v := p.inb(0xcf8); v != tc.wantB {
				t.Errorf("inb(0xCF8) = %#x, want %#x", v, tc.wantB)
			}
			if v := p.inw(0xcfa); v != 0xffff {
				t.Errorf("inw(0xCFA) = %#x, want all ones", v)
			}
		})
	}
}

func TestIdentityThroughPorts(t *testing.T) {
	h, _, _ := newTestBridge(t)
	p := ports{h}
	tests := []struct {
		name  string
		dev   int
		reg   uint16
		width int
		want  uint32
	}{
		{"bridge vendor", 0, 0x00, 2, 0x8086},
		{"bridge device", 0, 0x02, 2, 0x1237},
		{"bridge ids", 0, 0x00, 4, 0x12378086},
		{"bridge class/rev", 0, 0x08, 4, 0x06000002},
		{"bridge class device", 0, 0x0a, 2, 0x0600},
		{"bridge header type", 0, 0x0e, 1, 0},
		{"bridge BAR0", 0, 0x10, 4, 0},
		{"endpoint vendor", 3, 0x00, 2, 0x1af4},
		{"endpoint device", 3, 0x02, 2, 0x1041},
		{"endpoint class/rev", 3, 0x08, 4, 0x02000001},
		{"endpoint base class", 3, 0x0b, 1, 0x02},
		{"endpoint subsystem", 3, 0x2c, 4, 0x00011af4},
		{"endpoint status", 3, 0x06, 2, 0x0010},
		{"endpoint cap ptr", 3, 0x34, 1, 0x40},
		{"endpoint BAR0", 3, 0x10, 4, 0xc0001000},
		{"endpoint BAR1", 3, 0x14, 4, 0},
		{"endpoint BAR2 high half", 3, 0x1a, 2, 0xc000},
		{"endpoint ROM", 3, 0x30, 4, 0},
		{"endpoint pin/gnt/lat", 3, 0x3d, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if v := p.read(0, tc.dev, 0, tc.reg, tc.width); v != tc.want {
				t.Errorf("00:%02x.0 reg %#x width %d = %#x, want %#x", tc.dev, tc.reg, tc.width, v, tc.want)
			}
		})
	}
}

func TestAbsentReadsAllOnes(t *testing.T) {
	h, _, _ := newTestBridge(t)
	p := ports{h}
	tests := []struct {
		name  string
		addr  uint32
		port  uint16
		width int
	}{
		{"empty slot", confAddr(0, 4, 0, 0), 0xcfc, 4},
		{"last slot", confAddr(0, 31, 0, 0), 0xcfc, 2},
		{"function 1", confAddr(0, 3, 1, 0), 0xcfc, 4},
		{"function 7 of bridge", confAddr(0, 0, 7, 0), 0xcfc, 4},
		{"bus 1", confAddr(1, 3, 0, 0), 0xcfc, 4},
		{"bus 255", confAddr(255, 0, 0, 0), 0xcfc, 4},
		{"enable clear", confAddr(0, 3, 0, 0) &^ 0x80000000, 0xcfc, 4},
		{"misaligned word", confAddr(0, 3, 0, 0), 0xcfd, 2},
		{"word crossing the end", confAddr(0, 3, 0, 0), 0xcff, 2},
		{"misaligned dword", confAddr(0, 3, 0, 0), 0xcfe, 4},
		{"dword straddling both registers", confAddr(0, 3, 0, 0), 0xcfa, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p.outl(0xcf8, tc.addr)
			want := uint32(1)<<(8*tc.width) - 1
			if tc.width == 4 {
				want = 0xffffffff
			}
			if v := p.in(tc.port, tc.width); v != want {
				t.Errorf("read %d at %#x = %#x, want all ones", tc.width, tc.port, v)
			}
			// A write there reaches nobody either.
			p.out(tc.port, tc.width, 0)
			if v := p.read(0, 3, 0, 0, 4); v != 0x10411af4 {
				t.Errorf("endpoint IDs %#x after the write", v)
			}
		})
	}
	// Offsets beyond the ports and 8-byte accesses are tolerated.
	var b [8]byte
	h.Read(^uint64(0), b[:1])
	h.Read(4, b[:])
	h.Write(^uint64(0)-1, b[:2])
	h.Write(4, b[:])
	if b != [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
		t.Errorf("8-byte read at CONFIG_DATA = % x, want all ones", b)
	}
}

func TestAdd(t *testing.T) {
	e, _ := newTestEndpoint()
	tests := []struct {
		name string
		dev  int
		f    Function
		err  string
	}{
		{"device 0 is the bridge", 0, e, "out of range"},
		{"negative", -1, e, "out of range"},
		{"too big", 32, e, "out of range"},
		{"nil", 5, nil, "nil"},
		{"taken", 3, e, "taken"},
		{"ok", 31, e, ""},
	}
	h := NewHostBridge()
	if err := h.Add(3, e); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := h.Add(tc.dev, tc.f)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Add(%d) = %v, want error containing %q", tc.dev, err, tc.err)
			}
		})
	}
}

// TestSubDwordAccessThroughPorts checks that CONFIG_DATA byte lanes
// address reg&0xFC + k, the way Linux's conf1 accessors use 0xCFC + (reg&3).
func TestSubDwordAccessThroughPorts(t *testing.T) {
	h, e, _ := newTestBridge(t)
	p := ports{h}
	p.write(0, 3, 0, 0x3c, 1, 0x0b) // interrupt line, as an outb
	p.write(0, 3, 0, 0x0d, 1, 0x40) // latency timer at 0xCFD
	p.write(0, 3, 0, 0x04, 2, 0x0406)
	if v := cfg8(e, 0x3c); v != 0x0b {
		t.Errorf("interrupt line %#x, want 0x0b", v)
	}
	if v := cfg32(e, 0x0c); v != 0x00004000 {
		t.Errorf("dword 0x0C = %#x, want latency 0x40 only", v)
	}
	if v := p.read(0, 3, 0, 0x04, 4); v != 0x00100406 {
		t.Errorf("command/status = %#x, want 0x00100406", v)
	}
}

func TestConfigAddressSnapshot(t *testing.T) {
	h := NewHostBridge()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], 0x80000804|3)
	h.Write(0, b[:])
	if got := h.ConfigAddress(); got != 0x80000804 {
		t.Fatalf("ConfigAddress %#x, want the latch without bits 1:0", got)
	}
	h2 := NewHostBridge()
	h2.SetConfigAddress(0xffffffff)
	h2.Read(0, b[:])
	if got, want := binary.LittleEndian.Uint32(b[:]), h2.ConfigAddress(); got != want || got&3 != 0 {
		t.Fatalf("restored latch reads %#x (ConfigAddress %#x), want it without reserved bits", got, want)
	}
}
