package pci

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestNewEndpointErrors(t *testing.T) {
	empty := func(n int) []Capability { return make([]Capability, n) }
	tests := []struct {
		name    string
		hdr     Header
		sizes   [6]uint32
		initial [6]uint32
		caps    []Capability
		err     string
	}{
		{"plain", testHeader, testSizes, testAddrs, testCaps(), ""},
		{"largest BAR", testHeader, [6]uint32{1 << 31}, [6]uint32{1 << 31}, nil, ""},
		{"smallest BAR", testHeader, [6]uint32{16}, [6]uint32{0xfe000010}, nil, ""},
		{"class too wide", Header{Class: 0x1000000}, [6]uint32{}, [6]uint32{}, nil, "class"},
		{"BAR of 8 bytes", testHeader, [6]uint32{8}, [6]uint32{}, nil, "BAR 0 size"},
		{"BAR not a power of two", testHeader, [6]uint32{0, 0x1800}, [6]uint32{}, nil, "BAR 1 size"},
		{"unaligned address", testHeader, [6]uint32{0x1000}, [6]uint32{0x800}, nil, "BAR 0 address"},
		{"address of unimplemented BAR", testHeader, [6]uint32{}, [6]uint32{5: 0x1000}, nil, "BAR 5 is unimplemented"},
		{"mask length", testHeader, [6]uint32{}, [6]uint32{}, []Capability{{ID: 9, Body: []byte{1, 2}, Writable: []byte{1}}}, "writable mask"},
		{"exactly fills", testHeader, [6]uint32{}, [6]uint32{}, []Capability{{ID: 9, Body: make([]byte, 190)}}, ""},
		{"one byte too long", testHeader, [6]uint32{}, [6]uint32{}, []Capability{{ID: 9, Body: make([]byte, 191)}}, "does not fit"},
		{"48 empty caps fit", testHeader, [6]uint32{}, [6]uint32{}, empty(48), ""},
		{"49 do not", testHeader, [6]uint32{}, [6]uint32{}, empty(49), "capability 48"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEndpoint(tc.hdr, tc.sizes, tc.initial, tc.caps, nil)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("NewEndpoint = %v, want error containing %q", err, tc.err)
			}
		})
	}
}

// TestRegisterWrites checks what each header register keeps of a write,
// starting from a fresh endpoint each time.
func TestRegisterWrites(t *testing.T) {
	tests := []struct {
		name  string
		off   uint16
		width int
		v     uint32
		reg   uint16 // dword to read back
		want  uint32
	}{
		{"IDs read-only", 0x00, 4, 0xffffffff, 0x00, 0x10411af4},
		{"command 16-bit all ones", tCommand, 2, 0xffff, tCommand, 0x00100406},
		{"command 32-bit leaves status", tCommand, 4, 0xffffffff, tCommand, 0x00100406},
		{"command high byte", tCommand + 1, 1, 0xff, tCommand, 0x00100400},
		{"status read-only", tStatus, 2, 0xffff, tCommand, 0x00100000},
		{"class/revision read-only", tClassRev, 4, 0, tClassRev, 0x02000001},
		{"cache line size", 0x0c, 1, 0x10, 0x0c, 0x00000010},
		{"cache line and latency word", 0x0c, 2, 0x4010, 0x0c, 0x00004010},
		{"header type and BIST read-only", 0x0e, 2, 0xffff, 0x0c, 0},
		{"BAR0 all ones gives size mask", tBAR0, 4, 0xffffffff, tBAR0, 0xfffff000},
		{"BAR0 keeps address bits", tBAR0, 4, 0x12345678, tBAR0, 0x12345000},
		{"BAR1 unimplemented", tBAR0 + 4, 4, 0xffffffff, tBAR0 + 4, 0},
		{"BAR2 byte lane", tBAR0 + 9, 1, 0xff, tBAR0 + 8, 0xc000c000},
		{"BAR2 high word", tBAR0 + 10, 2, 0x1234, tBAR0 + 8, 0x12344000},
		{"BAR5 unimplemented", tBAR0 + 20, 4, 0xffffffff, tBAR0 + 20, 0},
		{"subsystem read-only", tSubsystem, 4, 0, tSubsystem, 0x00011af4},
		{"ROM reads 0", tROM, 4, 0xfffff801, tROM, 0},
		{"cap pointer read-only", tCapPtr, 1, 0x80, tCapPtr, 0x40},
		{"interrupt line", tIntLine, 1, 0x0b, tIntLine, 0x0b},
		{"interrupt pin/gnt/lat read-only", tIntLine, 4, 0xffffffff, tIntLine, 0xff},
		{"cap header read-only", 0x40, 2, 0xffff, 0x40, 0x010e5009},
		{"read-only cap body", 0x44, 4, 0xffffffff, 0x44, 0},
		{"writable cap bits", 0x50, 4, 0xffffffff, 0x50, 0xc0030011},
		{"beyond caps", 0xfc, 4, 0xffffffff, 0xfc, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEndpoint()
			wcfg(e, tc.off, tc.width, tc.v)
			if v := cfg32(e, tc.reg); v != tc.want {
				t.Errorf("dword %#x = %#x, want %#x", tc.reg, v, tc.want)
			}
		})
	}
}

func TestOutOfRangeAccessTolerated(t *testing.T) {
	e, r := newTestEndpoint()
	b := []byte{1, 2, 3, 4}
	e.WriteConfig(0xfe, b)
	e.WriteConfig(0xffff, b)
	e.ReadConfig(0xfe, b)
	if !bytes.Equal(b, []byte{0, 0, 0xff, 0xff}) {
		t.Errorf("read across the end = % x, want 00 00 ff ff", b)
	}
	if ev := r.take(); len(ev) != 0 {
		t.Errorf("hooks %v", ev)
	}
	if _, m := e.BAR(-1); m {
		t.Error("BAR(-1) mapped")
	}
	if e.CapabilityBody(2) != nil || e.CapabilityOffset(-1) != 0 {
		t.Error("capability out of range answered")
	}
}

// TestBARSizing replays Linux's __pci_read_base for every BAR of a
// function whose decode firmware had enabled: disable memory decode,
// write all ones, read the size mask, restore the address, re-enable
// (PCI 3.0 §6.2.5.1).
func TestBARSizing(t *testing.T) {
	h, e, r := newTestBridge(t)
	p := ports{h}
	p.write(0, 3, 0, tCommand, 2, tCmdMem|tCmdMaster)
	if got, want := r.take(), []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("enabling decode: hooks %v, want %v", got, want)
	}

	cmd := uint16(p.read(0, 3, 0, tCommand, 2))
	p.write(0, 3, 0, tCommand, 2, uint32(cmd&^tCmdMem))
	want := []event{barEv(0, 0xc0001000, false), barEv(2, 0xc0004000, false)}
	masks := [6]uint32{0xfffff000, 0, 0xffffc000}
	for i := range 6 {
		reg := uint16(tBAR0 + 4*i)
		l := p.read(0, 3, 0, reg, 4)
		p.write(0, 3, 0, reg, 4, 0xffffffff)
		sz := p.read(0, 3, 0, reg, 4)
		p.write(0, 3, 0, reg, 4, l)
		if sz != masks[i] {
			t.Errorf("BAR %d sizes as %#x, want %#x", i, sz, masks[i])
		}
		if masks[i] != 0 {
			want = append(want, barEv(i, masks[i], false), barEv(i, l, false))
		}
		if _, mapped := e.BAR(i); mapped {
			t.Errorf("BAR %d mapped with decode disabled", i)
		}
	}
	p.write(0, 3, 0, tCommand, 2, uint32(cmd))
	want = append(want, barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true))
	if got := r.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("sizing hooks:\n got %v\nwant %v", got, want)
	}
	for i, a := range testAddrs {
		if addr, mapped := e.BAR(i); addr != a || mapped != (a != 0) {
			t.Errorf("BAR(%d) = %#x, %v after sizing", i, addr, mapped)
		}
	}
}

// TestBARHooks checks which writes report which decode changes.
func TestBARHooks(t *testing.T) {
	type w struct {
		off   uint16
		width int
		v     uint32
	}
	tests := []struct {
		name   string
		writes []w
		want   []event
	}{
		{"no decode, no change", []w{{tCommand, 2, tCmdMaster}}, nil},
		{"enable", []w{{tCommand, 2, tCmdMem}}, []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true)}},
		{"enable twice", []w{{tCommand, 2, tCmdMem}, {tCommand, 2, tCmdMem | tCmdINTxOff}}, []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true)}},
		{"enable by byte", []w{{tCommand, 1, tCmdMem}}, []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true)}},
		{"move while disabled", []w{{tBAR0 + 8, 4, 0xd0000000}}, []event{barEv(2, 0xd0000000, false)}},
		{"move while enabled", []w{{tCommand, 2, tCmdMem}, {tBAR0, 4, 0xd0000000}}, []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true), barEv(0, 0xd0000000, true)}},
		{"size while enabled", []w{{tCommand, 2, tCmdMem}, {tBAR0, 4, 0xffffffff}, {tBAR0, 4, 0xc0001000}}, []event{barEv(0, 0xc0001000, true), barEv(2, 0xc0004000, true), barEv(0, 0xfffff000, false), barEv(0, 0xc0001000, true)}},
		{"same address again", []w{{tBAR0, 4, 0xc0001234}}, nil},
		{"byte inside the size", []w{{tBAR0 + 1, 1, 0x1f}}, nil},
		{"byte above the size", []w{{tBAR0 + 1, 1, 0x2f}}, []event{barEv(0, 0xc0002000, false)}},
		{"unimplemented BAR", []w{{tBAR0 + 4, 4, 0xffffffff}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, r := newTestEndpoint()
			for _, x := range tc.writes {
				wcfg(e, x.off, x.width, x.v)
			}
			if got := r.take(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("hooks %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCapabilityList walks the list from 0x34 as Linux's
// __pci_find_next_cap does and finds every capability with its body.
func TestCapabilityList(t *testing.T) {
	e, _ := newTestEndpoint()
	caps := testCaps()
	if cfg16(e, tStatus)&0x10 == 0 {
		t.Fatal("PCI_STATUS_CAP_LIST clear")
	}
	pos := cfg8(e, tCapPtr)
	for k, c := range caps {
		if pos < 0x40 || pos&3 != 0 {
			t.Fatalf("capability %d at %#x: not a dword-aligned offset past the header", k, pos)
		}
		if pos != e.CapabilityOffset(k) {
			t.Errorf("capability %d at %#x, CapabilityOffset says %#x", k, pos, e.CapabilityOffset(k))
		}
		if id := cfg8(e, uint16(pos)); id != c.ID {
			t.Errorf("capability %d has ID %#x, want %#x", k, id, c.ID)
		}
		body := make([]byte, len(c.Body))
		for j := range body {
			body[j] = cfg8(e, uint16(pos)+2+uint16(j))
		}
		if !bytes.Equal(body, c.Body) || !bytes.Equal(e.CapabilityBody(k), c.Body) {
			t.Errorf("capability %d body % x (CapabilityBody % x), want % x", k, body, e.CapabilityBody(k), c.Body)
		}
		pos = cfg8(e, uint16(pos)+1)
	}
	if pos != 0 {
		t.Errorf("list does not end after %d capabilities: next %#x", len(caps), pos)
	}

	// Without capabilities there is no list.
	bare, err := NewEndpoint(testHeader, testSizes, testAddrs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s, p := cfg16(bare, tStatus), cfg8(bare, tCapPtr); s != 0 || p != 0 {
		t.Errorf("no capabilities: status %#x, pointer %#x", s, p)
	}
}

func TestCapabilityWrites(t *testing.T) {
	msix := func(b1 byte) event {
		body := testCaps()[1].Body
		body[1] = b1
		return capEv(1, body...)
	}
	type w struct {
		off   uint16
		width int
		v     uint32
	}
	tests := []struct {
		name   string
		writes []w
		want   []event
		body1  byte // byte 1 of capability 1's body afterwards
	}{
		{"enable MSI-X", []w{{0x52, 2, 0x8003}}, []event{msix(0x80)}, 0x80},
		{"enable and mask by dword", []w{{0x50, 4, 0xffff0000}}, []event{msix(0xc0)}, 0xc0},
		{"byte write", []w{{0x53, 1, 0x40}}, []event{msix(0x40)}, 0x40},
		{"same value again", []w{{0x53, 1, 0x80}, {0x53, 1, 0x80}}, []event{msix(0x80)}, 0x80},
		{"read-only bits only", []w{{0x53, 1, 0x3f}, {0x52, 1, 0xff}}, nil, 0},
		{"set then clear", []w{{0x53, 1, 0xc0}, {0x52, 2, 0x0003}}, []event{msix(0xc0), msix(0x00)}, 0},
		{"read-only capability", []w{{0x44, 4, 0xffffffff}, {0x42, 2, 0}}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, r := newTestEndpoint()
			for _, x := range tc.writes {
				wcfg(e, x.off, x.width, x.v)
			}
			if got := r.take(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("hooks %v, want %v", got, tc.want)
			}
			want := testCaps()[1].Body
			want[1] = tc.body1
			if got := e.CapabilityBody(1); !bytes.Equal(got, want) {
				t.Errorf("body % x, want % x", got, want)
			}
			if got := e.CapabilityBody(0); !bytes.Equal(got, testCaps()[0].Body) {
				t.Errorf("read-only capability changed to % x", got)
			}
		})
	}
}

// TestCapabilityBodyIsACopy makes sure neither the caps given to
// NewEndpoint nor a returned body alias the endpoint's state.
func TestCapabilityBodyIsACopy(t *testing.T) {
	caps := testCaps()
	e, err := NewEndpoint(testHeader, testSizes, testAddrs, caps, nil)
	if err != nil {
		t.Fatal(err)
	}
	caps[1].Body[0] = 0xee
	caps[1].Writable[0] = 0xff
	b := e.CapabilityBody(1)
	b[1] = 0xee
	wcfg(e, 0x52, 1, 0x55)
	if got := e.CapabilityBody(1); !bytes.Equal(got, testCaps()[1].Body) {
		t.Errorf("body % x, want % x", got, testCaps()[1].Body)
	}
}

// reentrantHooks calls back into the endpoint from its hooks, which must
// not deadlock.
type reentrantHooks struct {
	e    *Endpoint
	seen []uint32
}

func (h *reentrantHooks) BARChanged(i int, addr uint32, mapped bool) {
	a, _ := h.e.BAR(i)
	h.seen = append(h.seen, a)
}

func (h *reentrantHooks) CapabilityWritten(k int, body []byte) {
	h.seen = append(h.seen, binary.LittleEndian.Uint32(h.e.CapabilityBody(k)))
	h.e.ReadConfig(0, make([]byte, 4))
}

func TestHooksMayCallBack(t *testing.T) {
	rh := &reentrantHooks{}
	e, err := NewEndpoint(testHeader, testSizes, testAddrs, testCaps(), rh)
	if err != nil {
		t.Fatal(err)
	}
	rh.e = e
	h := NewHostBridge()
	if err := h.Add(1, e); err != nil {
		t.Fatal(err)
	}
	p := ports{h}
	p.write(0, 1, 0, tCommand, 2, tCmdMem)
	p.write(0, 1, 0, 0x53, 1, 0x80)
	if want := []uint32{0xc0001000, 0xc0004000, 0x00028003}; !reflect.DeepEqual(rh.seen, want) {
		t.Errorf("hooks saw %#x, want %#x", rh.seen, want)
	}
}

func TestSetMemoryDecoding(t *testing.T) {
	e, _ := newTestEndpoint()
	e.WriteConfig(regCommand, []byte{cmdMaster, 0})
	e.SetMemoryDecoding(true)
	var cmd [2]byte
	e.ReadConfig(regCommand, cmd[:])
	if cmd[0] != cmdMaster|cmdMemory || cmd[1] != 0 {
		t.Fatalf("Command %x after SetMemoryDecoding(true), want bus master kept and memory on", cmd)
	}
	if _, mapped := e.BAR(0); !mapped {
		t.Fatal("BAR 0 not mapped with decoding on")
	}
	e.SetMemoryDecoding(false)
	e.ReadConfig(regCommand, cmd[:])
	if cmd[0] != cmdMaster {
		t.Fatalf("Command %x after SetMemoryDecoding(false), want only bus master", cmd)
	}
}
