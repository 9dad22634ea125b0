package pci

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"testing"
)

// portOp is one guest port access to the host bridge decoded from fuzz
// input:
//
//	byte 0: bit 7 set for a write; bits 0-1 pick the width 1, 2, 4 or 8;
//	        bits 2-4 the port offset 0-7 (0xCF8-0xCFF); bit 5 counts the
//	        offset back from 2^64 instead, so out-of-range and wrapping
//	        offsets are exercised too; bit 6 is ignored
//	then, for a write, width data bytes.
type portOp struct {
	write bool
	off   uint64
	data  []byte
}

func decodePortOps(in []byte) []portOp {
	var ops []portOp
	for len(in) >= 1 {
		b := in[0]
		in = in[1:]
		w := 1 << (b & 3)
		op := portOp{write: b&0x80 != 0, off: uint64(b>>2) & 7}
		if b&0x20 != 0 {
			op.off = ^uint64(0) - op.off
		}
		if op.write {
			if len(in) < w {
				break
			}
			op.data, in = in[:w], in[w:]
		} else {
			op.data = make([]byte, w)
		}
		ops = append(ops, op)
	}
	return ops
}

func (op portOp) String() string {
	if op.write {
		return fmt.Sprintf("write % x at %#x", op.data, op.off)
	}
	return fmt.Sprintf("read %d at %#x", len(op.data), op.off)
}

// modelMask is the bits a guest may write in a function's config space,
// spelled out from PCI 3.0 §6.2 rather than taken from the package.
func modelMask(sizes [6]uint32, caps []Capability) [ConfigSize]byte {
	var m [ConfigSize]byte
	m[0x04], m[0x05] = 0x06, 0x04 // memory space, bus master; INTx disable
	m[0x0c], m[0x0d], m[0x3c] = 0xff, 0xff, 0xff
	for i, s := range sizes {
		if s != 0 {
			binary.LittleEndian.PutUint32(m[0x10+4*i:], ^(s - 1))
		}
	}
	off := 0x40
	for _, c := range caps {
		copy(m[off+2:], c.Writable)
		off = (off + 2 + len(c.Body) + 3) &^ 3
	}
	return m
}

func image(f Function) [ConfigSize]byte {
	var img [ConfigSize]byte
	for off := 0; off < ConfigSize; off += 4 {
		f.ReadConfig(uint16(off), img[off:off+4])
	}
	return img
}

// modelEvents is the hooks a change from before to after must fire.
func modelEvents(before, after *[ConfigSize]byte, sizes [6]uint32, caps []Capability) []event {
	var ev []event
	dec := func(img *[ConfigSize]byte, i int) event {
		v := binary.LittleEndian.Uint32(img[0x10+4*i:])
		return barEv(i, v, img[0x04]&0x02 != 0 && v != ^(sizes[i]-1))
	}
	for i, s := range sizes {
		if s != 0 && dec(before, i) != dec(after, i) {
			ev = append(ev, dec(after, i))
		}
	}
	off := 0x40
	for k, c := range caps {
		b, a := before[off+2:off+2+len(c.Body)], after[off+2:off+2+len(c.Body)]
		if !bytes.Equal(a, b) {
			ev = append(ev, capEv(k, a...))
		}
		off = (off + 2 + len(c.Body) + 3) &^ 3
	}
	return ev
}

// fuzzOwner is a transport's side of the endpoint: it records hook calls
// and keeps each BAR mapped into a window where the guest put it.
type fuzzOwner struct {
	recorder
	w        *Window
	devs     [6]*tagDev
	view     [6]barDecode
	accepted [6]bool
}

func (o *fuzzOwner) BARChanged(i int, addr uint32, mapped bool) {
	o.recorder.BARChanged(i, addr, mapped)
	o.view[i] = barDecode{addr, mapped}
	o.accepted[i] = false
	if mapped {
		o.accepted[i] = o.w.Map(i, uint64(addr), uint64(testSizes[i]), o.devs[i])
	} else {
		o.w.Unmap(i)
	}
}

// FuzzConfigSpace drives a host bridge holding one endpoint (two BARs, two
// capabilities, one with a writable mask) with arbitrary port accesses and
// checks every step against a model of mechanism #1 and the type-0 header.
func FuzzConfigSpace(f *testing.F) {
	const winBase, winSize = 0x80000000, 0x80000000
	caps := testCaps()
	mask := modelMask(testSizes, caps)
	bridgeMask := modelMask([6]uint32{}, nil)

	f.Fuzz(func(t *testing.T, in []byte) {
		w := NewWindow(winBase, winSize)
		o := &fuzzOwner{w: w, devs: [6]*tagDev{{tag: 0x10}, nil, {tag: 0x12}}}
		for i, a := range testAddrs {
			o.view[i] = barDecode{addr: a}
		}
		e, err := NewEndpoint(testHeader, testSizes, testAddrs, caps, o)
		if err != nil {
			t.Fatal(err)
		}
		h := NewHostBridge()
		if err := h.Add(1, e); err != nil {
			t.Fatal(err)
		}
		hb := h.funcs[0]
		var addr uint32 // the model's CONFIG_ADDRESS

		for n, op := range decodePortOps(in) {
			before, bridgeBefore := image(e), image(hb)
			want, bridgeWant := before, bridgeBefore
			wantRead := bytes.Repeat([]byte{0xff}, len(op.data))

			w := len(op.data)
			switch k := op.off - 4; {
			case op.off == 0 && w == 4:
				if op.write {
					addr = binary.LittleEndian.Uint32(op.data) & 0x80fffffc
				}
				wantRead = binary.LittleEndian.AppendUint32(nil, addr)
			case op.off >= 4 && op.off < 8 && w <= 4 && k%uint64(w) == 0:
				dev := addr >> 11 & 0x1f
				if addr&0x80000000 == 0 || addr>>16&0xff != 0 || addr>>8&7 != 0 || dev > 1 {
					break
				}
				img, wimg, m := &before, &want, &mask
				if dev == 0 {
					img, wimg, m = &bridgeBefore, &bridgeWant, &bridgeMask
				}
				reg := int(addr&0xfc) + int(k)
				if op.write {
					for j, v := range op.data {
						wimg[reg+j] = img[reg+j]&^m[reg+j] | v&m[reg+j]
					}
				} else {
					wantRead = img[reg : reg+w]
				}
			}

			o.take()
			if op.write {
				h.Write(op.off, op.data)
			} else {
				h.Read(op.off, op.data)
				if !bytes.Equal(op.data, wantRead) {
					t.Fatalf("op %d (%v): read % x, want % x", n, op, op.data, wantRead)
				}
			}
			after := image(e)
			if after != want {
				t.Fatalf("op %d (%v): endpoint config space\n got % x\nwant % x", n, op, after, want)
			}
			if a := image(hb); a != bridgeWant {
				t.Fatalf("op %d (%v): host bridge config space\n got % x\nwant % x", n, op, a, bridgeWant)
			}
			if got, wantEv := o.take(), modelEvents(&before, &after, testSizes, caps); !reflect.DeepEqual(got, wantEv) {
				t.Fatalf("op %d (%v): hooks %v, want %v", n, op, got, wantEv)
			}
			checkInvariants(t, n, e, hb, o, caps)
		}
	})
}

// checkInvariants checks what must hold whatever the guest did.
func checkInvariants(t *testing.T, n int, e *Endpoint, hb Function, o *fuzzOwner, caps []Capability) {
	t.Helper()
	if v, c, s := cfg32(e, 0x00), cfg32(e, 0x08), cfg32(e, 0x2c); v != 0x10411af4 || c != 0x02000001 || s != 0x00011af4 {
		t.Fatalf("op %d: identity changed: %#x %#x %#x", n, v, c, s)
	}
	if v, c := cfg32(hb, 0x00), cfg32(hb, 0x08); v != 0x12378086 || c != 0x06000002 {
		t.Fatalf("op %d: host bridge identity changed: %#x %#x", n, v, c)
	}
	if st, ht := cfg16(e, 0x06), cfg8(e, 0x0e); st != 0x10 || ht != 0 {
		t.Fatalf("op %d: status %#x, header type %#x", n, st, ht)
	}
	for i, size := range testSizes {
		v := cfg32(e, uint16(0x10+4*i))
		if size == 0 && v != 0 || size != 0 && (v&0xf != 0 || v%size != 0) {
			t.Fatalf("op %d: BAR %d = %#x with size %#x", n, i, v, size)
		}
		if size == 0 {
			continue
		}
		a, m := e.BAR(i)
		if (barDecode{a, m}) != o.view[i] {
			t.Fatalf("op %d: BAR %d decodes %#x/%v, owner was told %+v", n, i, a, m, o.view[i])
		}
		if m && o.accepted[i] {
			b := make([]byte, 4)
			o.w.Read(uint64(a)-0x80000000, b)
			if b[0] != o.devs[i].tag {
				t.Fatalf("op %d: window at BAR %d's address %#x reads % x", n, i, a, b)
			}
		}
	}
	// The window holds exactly the accepted mappings, non-overlapping.
	tab := *o.w.table.Load()
	for j, mp := range tab {
		if !o.view[mp.key].mapped || !o.accepted[mp.key] || mp.start != uint64(o.view[mp.key].addr)-0x80000000 {
			t.Fatalf("op %d: stale window mapping %+v", n, mp)
		}
		if j > 0 && tab[j-1].end > mp.start {
			t.Fatalf("op %d: window mappings overlap: %+v", n, tab)
		}
	}
	// The capability chain is intact.
	pos := cfg8(e, 0x34)
	for k, c := range caps {
		if pos != e.CapabilityOffset(k) || cfg8(e, uint16(pos)) != c.ID {
			t.Fatalf("op %d: capability %d at %#x has ID %#x", n, k, pos, cfg8(e, uint16(pos)))
		}
		body := e.CapabilityBody(k)
		for j := range body {
			var wm byte
			if c.Writable != nil {
				wm = c.Writable[j]
			}
			if (body[j]^c.Body[j])&^wm != 0 {
				t.Fatalf("op %d: capability %d byte %d = %#x outside its mask (was %#x)", n, k, j, body[j], c.Body[j])
			}
		}
		pos = cfg8(e, uint16(pos)+1)
	}
	if pos != 0 {
		t.Fatalf("op %d: capability chain does not end: %#x", n, pos)
	}
}
