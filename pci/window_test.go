package pci

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
)

// tagDev answers every read with its tag in each byte and records writes.
type tagDev struct {
	tag      byte
	lastOff  atomic.Uint64
	lastData atomic.Uint32
}

func (d *tagDev) Read(off uint64, data []byte) {
	d.lastOff.Store(off)
	for i := range data {
		data[i] = d.tag
	}
}

func (d *tagDev) Write(off uint64, data []byte) {
	d.lastOff.Store(off)
	var b [4]byte
	copy(b[:], data)
	d.lastData.Store(binary.LittleEndian.Uint32(b[:]))
}

func TestWindow(t *testing.T) {
	const base, size = 0xc0000000, 0x10000000
	type mapOp struct {
		key        int
		addr, size uint64
		ok         bool
		unmap      bool
	}
	type probe struct {
		off    uint64 // from the window's base
		width  int
		tag    byte // 0xff: unmapped
		devOff uint64
	}
	tests := []struct {
		name   string
		ops    []mapOp
		probes []probe
	}{
		{"empty window", nil, []probe{{0, 4, 0xff, 0}, {0x1000, 1, 0xff, 0}}},
		{"one mapping", []mapOp{{key: 1, addr: base + 0x1000, size: 0x1000, ok: true}}, []probe{
			{0x1000, 4, 1, 0}, {0x1ffc, 4, 1, 0xffc}, {0x1fff, 1, 1, 0xfff}, {0x1800, 8, 1, 0x800},
			{0x0fff, 1, 0xff, 0}, {0x2000, 1, 0xff, 0}, {0x1ffe, 4, 0xff, 0}, {0x0ffe, 4, 0xff, 0},
		}},
		{"adjacent mappings", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x1000, ok: true},
			{key: 2, addr: base + 0x2000, size: 0x4000, ok: true},
			{key: 3, addr: base, size: 0x1000, ok: true},
		}, []probe{{0x0, 4, 3, 0}, {0x1000, 4, 1, 0}, {0x2000, 4, 2, 0}, {0x5ffc, 4, 2, 0x3ffc}, {0x1ffe, 4, 0xff, 0}, {0x6000, 4, 0xff, 0}}},
		{"overlap refused, first keeps it", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x2000, ok: true},
			{key: 2, addr: base + 0x2000, size: 0x1000, ok: false},
			{key: 3, addr: base, size: 0x2000, ok: false},
			{key: 4, addr: base, size: 0x10000, ok: false},
		}, []probe{{0x2000, 4, 1, 0x1000}, {0x0, 4, 0xff, 0}}},
		{"remap moves", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x1000, ok: true},
			{key: 1, addr: base + 0x8000, size: 0x1000, ok: true},
		}, []probe{{0x1000, 4, 0xff, 0}, {0x8000, 4, 1, 0}}},
		{"remap onto itself", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x1000, ok: true},
			{key: 1, addr: base + 0x1800, size: 0x1000, ok: true},
		}, []probe{{0x1000, 4, 0xff, 0}, {0x1800, 4, 1, 0}, {0x2700, 4, 1, 0xf00}}},
		{"refused remap unmaps the key", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x1000, ok: true},
			{key: 2, addr: base + 0x4000, size: 0x1000, ok: true},
			{key: 1, addr: base + 0x4000, size: 0x1000, ok: false},
		}, []probe{{0x1000, 4, 0xff, 0}, {0x4000, 4, 2, 0}}},
		{"unmap frees the range", []mapOp{
			{key: 1, addr: base + 0x1000, size: 0x1000, ok: true},
			{key: 1, unmap: true},
			{key: 7, unmap: true},
			{key: 2, addr: base + 0x1000, size: 0x1000, ok: true},
		}, []probe{{0x1000, 4, 2, 0}}},
		{"outside the window", []mapOp{
			{key: 1, addr: base - 0x1000, size: 0x1000, ok: false},
			{key: 2, addr: base - 0x1000, size: 0x2000, ok: false},
			{key: 3, addr: base + size - 0x1000, size: 0x2000, ok: false},
			{key: 4, addr: base + size, size: 0x1000, ok: false},
			{key: 5, addr: base + 0x1000, size: 0, ok: false},
			{key: 6, addr: ^uint64(0) - 0xfff, size: 0x2000, ok: false},
			{key: 7, addr: base + size - 0x1000, size: 0x1000, ok: true},
		}, []probe{{size - 4, 4, 7, 0xffc}, {size - 2, 4, 0xff, 0}, {size, 4, 0xff, 0}, {^uint64(0), 1, 0xff, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWindow(base, size)
			devs := map[int]*tagDev{}
			for _, op := range tc.ops {
				if op.unmap {
					w.Unmap(op.key)
					continue
				}
				d := &tagDev{tag: byte(op.key)}
				devs[op.key] = d
				if ok := w.Map(op.key, op.addr, op.size, d); ok != op.ok {
					t.Fatalf("Map(%d, %#x, %#x) = %v, want %v", op.key, op.addr, op.size, ok, op.ok)
				}
			}
			for _, p := range tc.probes {
				data := make([]byte, p.width)
				w.Read(p.off, data)
				if want := bytes.Repeat([]byte{p.tag}, p.width); !bytes.Equal(data, want) {
					t.Errorf("read %d at %#x = % x, want % x", p.width, p.off, data, want)
					continue
				}
				if p.tag == 0xff {
					continue
				}
				d := devs[int(p.tag)]
				if o := d.lastOff.Load(); o != p.devOff {
					t.Errorf("read at %#x reached device %d at %#x, want %#x", p.off, p.tag, o, p.devOff)
				}
				w.Write(p.off, []byte{0xaa, 0xbb, 0xcc, 0xdd}[:min(p.width, 4)])
				if o := d.lastOff.Load(); o != p.devOff {
					t.Errorf("write at %#x reached device %d at %#x, want %#x", p.off, p.tag, o, p.devOff)
				}
			}
		})
	}
}

func TestWindowDropsUnmappedWrites(t *testing.T) {
	w := NewWindow(0x1000, 0x1000)
	d := &tagDev{tag: 1}
	w.Map(0, 0x1000, 0x10, d)
	w.Write(0x10, []byte{1, 2, 3, 4})
	w.Write(0xe, []byte{1, 2, 3, 4})
	if d.lastData.Load() != 0 {
		t.Error("a write outside the mapping reached it")
	}
	w.Write(0xc, []byte{1, 2, 3, 4})
	if d.lastData.Load() != 0x04030201 || d.lastOff.Load() != 0xc {
		t.Error("a write inside the mapping was lost")
	}
}

func TestWindowAtTopOfAddressSpace(t *testing.T) {
	w := NewWindow(^uint64(0)-0xffff, 0x100000) // cut to 64 KiB
	d := &tagDev{tag: 9}
	if w.Map(0, ^uint64(0)-0xfff, 0x2000, d) {
		t.Error("mapping past the top accepted")
	}
	if !w.Map(0, ^uint64(0)-0xfff, 0x1000, d) {
		t.Fatal("mapping ending at the top refused")
	}
	b := make([]byte, 4)
	w.Read(0xfffc, b)
	if !bytes.Equal(b, []byte{9, 9, 9, 9}) {
		t.Errorf("read at the top = % x", b)
	}
	w.Read(0xfffe, b)
	if !bytes.Equal(b, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("read past the top = % x", b)
	}
}

func TestWindowLookupAllocatesNothing(t *testing.T) {
	w := NewWindow(0, 1<<32)
	for k := range 8 {
		w.Map(k, uint64(k)<<20, 1<<20, &tagDev{tag: byte(k)})
	}
	b := make([]byte, 4)
	if n := testing.AllocsPerRun(100, func() { w.Read(5<<20+8, b); w.Write(3<<20, b) }); n != 0 {
		t.Errorf("%v allocations per access", n)
	}
}

// TestConcurrentConfigAndWindow runs a guest reprogramming BARs through
// the bridge, with hooks mapping them into a window, while other vCPUs hit
// the window and the owner reads the endpoint. Run it with -race.
func TestConcurrentConfigAndWindow(t *testing.T) {
	const base = 0xc0000000
	w := NewWindow(base, 0x10000000)
	m := &mapper{w: w, devs: [6]*tagDev{{tag: 0}, nil, {tag: 2}}, sizes: testSizes}
	e, err := NewEndpoint(testHeader, testSizes, testAddrs, testCaps(), m)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHostBridge()
	if err := h.Add(1, e); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 4)
			for n := 0; !stop.Load(); n++ {
				off := uint64(n*0x1000+r*4) % 0xc0000
				w.Read(off, b)
				if b[0] != b[3] || b[0] != 0xff && b[0] != 0 && b[0] != 2 {
					t.Errorf("read at %#x = % x", off, b)
					return
				}
				w.Write(off, b)
				e.BAR(n % 6)
				e.CapabilityBody(n % 2)
				h.Read(0, b)
			}
		}()
	}
	p := ports{h}
	for n := range 2000 {
		addr := uint32(base + (n%16)*0x4000)
		p.write(0, 1, 0, tCommand, 2, tCmdMem)
		p.write(0, 1, 0, tBAR0+8, 4, addr)
		p.write(0, 1, 0, tBAR0, 4, 0xffffffff)
		p.write(0, 1, 0, tBAR0, 4, addr+0x80000)
		p.write(0, 1, 0, 0x53, 1, uint32(n&1)<<7)
		if n%3 == 0 {
			p.write(0, 1, 0, tCommand, 2, 0)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// mapper is the owner a transport would be: its hooks keep each BAR
// mapped into the window where the guest put it.
type mapper struct {
	w     *Window
	devs  [6]*tagDev
	sizes [6]uint32
}

func (m *mapper) BARChanged(i int, addr uint32, mapped bool) {
	if mapped {
		m.w.Map(i, uint64(addr), uint64(m.sizes[i]), m.devs[i])
	} else {
		m.w.Unmap(i)
	}
}

func (m *mapper) CapabilityWritten(k int, body []byte) {}
