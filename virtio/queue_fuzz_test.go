package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// seg is one buffer a chain should resolve to.
type seg struct {
	addr  uint64
	n     uint32
	write bool
}

// refWalk is an independent model of the chain walk, written for clarity
// rather than speed: it detects loops with a set of visited descriptors
// instead of a count, and reports the buffers the chain at head must
// resolve to, or false if the chain is malformed.
func refWalk(m *virtiotest.Mem, desc uint64, size int, head uint16, indirect bool) ([]seg, bool) {
	type key struct {
		table uint64
		i     int
	}
	seen := map[key]bool{}
	var segs []seg
	table, count := desc, size
	i := int(head)
	inTable := false
	buffers := 0 // descriptors that describe buffers
	sawWrite := false
	for {
		if i >= count || seen[key{table, i}] {
			return nil, false
		}
		seen[key{table, i}] = true
		raw, err := m.Slice(table+uint64(16*i), 16)
		if err != nil {
			panic("descriptor table outside RAM") // checked before
		}
		addr := binary.LittleEndian.Uint64(raw)
		n := binary.LittleEndian.Uint32(raw[8:])
		flags := binary.LittleEndian.Uint16(raw[12:])
		next := binary.LittleEndian.Uint16(raw[14:])
		if flags&virtio.DescFlagIndirect != 0 {
			if !indirect || inTable || flags&virtio.DescFlagNext != 0 || n == 0 || n%16 != 0 || n/16 > virtio.MaxChain {
				return nil, false
			}
			if _, err := m.Slice(addr, uint64(n)); err != nil {
				return nil, false
			}
			table, count, i, inTable = addr, int(n/16), 0, true
			continue
		}
		buffers++
		if buffers > virtio.MaxChain {
			return nil, false
		}
		w := flags&virtio.DescFlagWrite != 0
		if !w && sawWrite {
			return nil, false
		}
		sawWrite = sawWrite || w
		if n > 0 {
			if _, err := m.Slice(addr, uint64(n)); err != nil {
				return nil, false
			}
			segs = append(segs, seg{addr, n, w})
		}
		if flags&virtio.DescFlagNext == 0 {
			return segs, true
		}
		i = int(next)
	}
}

// checkChain compares a popped chain with the model's buffers: same
// number, kinds and lengths, and each the very RAM at the model's address.
func checkChain(t *testing.T, m *virtiotest.Mem, c *virtio.Chain, want []seg) {
	t.Helper()
	got := append(append([][]byte{}, c.Readable...), c.Writable...)
	if len(got) != len(want) {
		t.Fatalf("chain %d: %d buffers, model says %d", c.Head, len(got), len(want))
	}
	for i, s := range want {
		if s.write != (i >= len(c.Readable)) {
			t.Fatalf("chain %d: buffer %d writable=%v, model says %v", c.Head, i, !s.write, s.write)
		}
		if len(got[i]) != int(s.n) || !m.IsAt(got[i], s.addr) {
			t.Fatalf("chain %d: buffer %d is not the %d bytes at %#x", c.Head, i, s.n, s.addr)
		}
	}
}

// Layout of FuzzChain's RAM: the descriptor table at the start, rings at
// fixed offsets after the largest table, the rest free for the image.
const (
	chainRAM   = 16 << 10
	chainAvail = 0x1000
	chainUsed  = 0x1400
)

// FuzzChain walks one chain through a descriptor table and everything
// else taken from the input: the walk must agree with refWalk, never
// panic, never write, and resolve only to RAM.
func FuzzChain(f *testing.F) {
	desc := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		virtiotest.WriteDesc(b, addr, n, flags, next)
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// A readable then a writable buffer in the free part of RAM.
	f.Add(cat(desc(0x2000, 16, 1, 1), desc(0x2010, 16, 2, 0)), uint16(0), uint8(3), uint8(0))
	// An indirect table at 0x3000 with two entries.
	img := make([]byte, 0x3020)
	copy(img, desc(0x3000, 32, 4, 0))
	copy(img[0x3000:], cat(desc(0x2000, 8, 1, 1), desc(0x2100, 8, 2, 0)))
	f.Add(img, uint16(0), uint8(4), uint8(1))
	// A loop, on a RAM base of 0x100.
	f.Add(cat(desc(0x2100, 1, 1, 1), desc(0x2100, 1, 1, 0)), uint16(0), uint8(2), uint8(4))
	// Writable before readable, then a buffer past RAM.
	f.Add(cat(desc(0x2000, 4, 3, 1), desc(0x2000, 4, 1, 2), desc(chainRAM-2, 4, 0, 0)), uint16(0), uint8(2), uint8(0))
	// A nested indirect table, with addresses folded (opts&8).
	img = make([]byte, 0x3040)
	copy(img, desc(0x3000, 32, 4, 0))
	copy(img[0x3000:], cat(desc(0x2000, 8, 1, 1), desc(0x3030, 16, 4, 0), desc(0, 0, 0, 0), desc(0x2000, 1, 0, 0)))
	f.Add(img, uint16(0), uint8(4), uint8(9))
	f.Fuzz(func(t *testing.T, image []byte, head uint16, sizeLog, opts uint8) {
		size := uint16(1) << (sizeLog % 9)
		indirect := opts&1 != 0
		eventIdx := opts&2 != 0
		base := uint64(0)
		if opts&4 != 0 {
			base = 0x100
		}
		m := virtiotest.NewMem(base, chainRAM)
		copy(m.RAM(), image)
		if opts&8 != 0 {
			// Random addresses almost never hit RAM: fold every
			// 16-byte-aligned would-be descriptor's address into
			// RAM or just past it, and its length below 8 KiB.
			ram := m.RAM()
			for off := 0; off+16 <= len(ram); off += 16 {
				addr := binary.LittleEndian.Uint64(ram[off:])
				binary.LittleEndian.PutUint64(ram[off:], base+addr%(chainRAM+64))
				n := binary.LittleEndian.Uint32(ram[off+8:])
				binary.LittleEndian.PutUint32(ram[off+8:], n%0x2000)
			}
		}
		cfg := virtio.QueueConfig{Size: size, Desc: base, Avail: base + chainAvail, Used: base + chainUsed}
		binary.LittleEndian.PutUint16(m.Bytes(cfg.Avail+2, 2), 1)
		binary.LittleEndian.PutUint16(m.Bytes(cfg.Avail+4, 2), head)
		q := virtio.NewQueue(256)
		if err := q.Setup(m, cfg, eventIdx, indirect); err != nil {
			t.Fatal(err)
		}
		want, wantOK := refWalk(m, cfg.Desc, int(size), head, indirect)
		before := bytes.Clone(m.RAM())
		var c virtio.Chain
		ok, err := q.Pop(&c)
		t.Logf("size %d indirect %v: Pop = %v, %v; %d readable, %d writable", size, indirect, ok, err, len(c.Readable), len(c.Writable))
		switch {
		case ok != wantOK:
			t.Fatalf("Pop = %v, %v; model says ok=%v", ok, err, wantOK)
		case !ok && !errors.Is(err, virtio.ErrMalformed):
			t.Fatalf("Pop failed with %v, not ErrMalformed", err)
		case ok:
			if c.Head != head {
				t.Fatalf("head %d, want %d", c.Head, head)
			}
			checkChain(t, m, &c, want)
			if ok, err := q.Pop(&c); ok || err != nil {
				t.Fatalf("second Pop = %v, %v; want nothing", ok, err)
			}
		}
		if !bytes.Equal(before, m.RAM()) {
			t.Fatal("Pop wrote to RAM")
		}
		if err := m.CheckGuards(); err != nil {
			t.Fatal(err)
		}
	})
}

// reader doles out the fuzz input, then zeros.
type reader struct{ b []byte }

func (r *reader) more() bool { return len(r.b) > 0 }

func (r *reader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 { return uint16(r.u8()) | uint16(r.u8())<<8 }
func (r *reader) u64() uint64 {
	return uint64(r.u16()) | uint64(r.u16())<<16 | uint64(r.u16())<<32 | uint64(r.u16())<<48
}

// FuzzQueue operations, one opcode byte each followed by its arguments.
const (
	opAdd          = iota // nR, nW, then a length byte per buffer
	opAddIndirect         // as opAdd, through an indirect table if negotiated
	opPop                 // count (0-8)
	opPush                // count (0-8), per element its end (front if even), then publish if even
	opUsed                // the driver consumes every used element
	opCorruptDesc         // index u16, address kind, address, len u16, flags, next
	opUnpop               // count
	opNotify              // disable or enable
	opInterrupt           // used_event u16 (added to the used idx of the last NeedInterrupt), avail flags
	opCorruptAvail        // new avail idx offset, slot, head
	numOps
)

type popped struct {
	head uint16
	n    uint32
	// what the driver offered, restored to the available set by Unpop
	readable []byte
	wlen     int
}

// pattern is what the device writes at byte i of a chain's writable
// buffers.
func pattern(head uint16, i int) byte { return byte(int(head)*13 + i) }

// FuzzQueue drives one queue through a sequence of driver and device
// operations decoded from the input, mostly valid with occasional
// corruption, against a model of the indices. It checks every popped
// chain against refWalk and, while nothing is corrupted, against what the
// driver offered; used elements against what the device pushed; and the
// notification fields against the spec.
func FuzzQueue(f *testing.F) {
	// One chain round trip on a size-8 queue.
	f.Add(uint32(3), []byte{opAdd, 1, 1, 10, 20, opPop, 1, opPush, 1, 0, 0, opInterrupt, 0, 0, 0, opUsed})
	// A readable-only chain whose descriptor is then pointed past RAM.
	f.Add(uint32(2), []byte{opAdd, 1, 0, 4, opCorruptDesc, 0, 0, 1, 0xf0, 0xff, 16, 0, 0, opPop, 1})
	// The avail index pushed beyond the queue size.
	f.Add(uint32(0x24), []byte{opAdd, 1, 0, 1, opCorruptAvail, 9, 0, 0, 0, 0, 0, opPop, 1})
	f.Fuzz(func(t *testing.T, geom uint32, ops []byte) {
		size := uint16(1) << (geom % 9)
		eventIdx := geom&0x10 != 0
		indirect := geom&0x20 != 0
		start := uint16(geom >> 16)
		m := virtiotest.NewMem(0x4000, 64<<10)
		d, err := virtiotest.NewDriver(m, size, 0x4000, 32<<10)
		if err != nil {
			t.Fatal(err)
		}
		q := virtio.NewQueue(256)
		if err := q.Setup(m, d.Config(), eventIdx, indirect); err != nil {
			t.Fatal(err)
		}
		virtio.SetIndices(q, start)
		d.StartAt(start)

		// The model.
		last, shadow := start, start // next avail index to pop; avail idx last read
		published, signalled := start, start
		type offer struct {
			readable []byte
			wlen     int
		}
		offered := map[uint16]offer{} // available, not yet popped
		var inflight []popped         // popped, not pushed, in pop order
		sincePush := 0                // chains popped since the last Add
		var pushed []popped           // added to the used ring, not consumed
		added := 0                    // of pushed, not yet published
		corrupted := false
		c := virtio.NewChain()
		var stats struct{ pops, used, interrupts int }
		defer func() {
			t.Logf("size %d event_idx %v indirect %v start %#x: %+v, corrupted %v", size, eventIdx, indirect, start, stats, corrupted)
		}()

		// pop pops once and reports whether the queue is still usable.
		pop := func() bool {
			none, ranAhead := false, false
			if last == shadow {
				idx := d.AvailIdx()
				if idx-last > size {
					ranAhead = true
				} else {
					shadow = idx
					none = idx == last
				}
			}
			var head uint16
			var want []seg
			wantOK := false
			if !none && !ranAhead {
				head = d.AvailRing(last)
				want, wantOK = refWalk(m, d.DescAddr(), int(size), head, indirect)
			}
			ok, err := q.Pop(c)
			switch {
			case none:
				if ok || err != nil {
					t.Fatalf("Pop = %v, %v; want nothing", ok, err)
				}
				return true
			case ranAhead || !wantOK:
				if ok || !errors.Is(err, virtio.ErrMalformed) {
					t.Fatalf("Pop = %v, %v; want ErrMalformed (ran ahead: %v)", ok, err, ranAhead)
				}
				t.Log(err)
				if !corrupted {
					t.Fatalf("valid queue reported malformed: %v", err)
				}
				return false
			case !ok || err != nil:
				t.Fatalf("Pop = %v, %v; model says chain %d", ok, err, head)
			}
			if c.Head != head {
				t.Fatalf("head %d, want %d", c.Head, head)
			}
			checkChain(t, m, c, want)
			o, live := offered[head]
			if !corrupted {
				if !live {
					t.Fatalf("popped head %d which is not available", head)
				}
				if got := concat(c.Readable); !bytes.Equal(got, o.readable) || c.WritableLen() != o.wlen {
					t.Fatalf("chain %d: readable %x, writable %d; driver offered %x, %d", head, got, c.WritableLen(), o.readable, o.wlen)
				}
			}
			delete(offered, head)
			i := 0
			for _, b := range c.Writable {
				for j := range b {
					b[j] = pattern(head, i)
					i++
				}
			}
			inflight = append(inflight, popped{head, uint32(c.WritableLen()), o.readable, o.wlen})
			last++
			sincePush++
			stats.pops++
			return true
		}

		r := &reader{ops}
		for r.more() {
			switch op := r.u8() % numOps; op {
			case opAdd, opAddIndirect:
				viaTable := op == opAddIndirect && indirect
				nR, nW := int(r.u8()%4), int(r.u8()%4)
				if nR+nW == 0 {
					nR = 1
				}
				var bufs []virtiotest.Buf
				var o offer
				for k := range nR + nW {
					n := int(r.u8() % 64)
					if k < nR {
						b := data(byte(len(ops)+k), n)
						o.readable = append(o.readable, b...)
						bufs = append(bufs, virtiotest.R(b))
					} else {
						bufs = append(bufs, virtiotest.W(n+1))
						o.wlen += n + 1
					}
				}
				var h uint16
				var err error
				if viaTable {
					h, err = d.AddIndirect(bufs...)
				} else {
					h, err = d.Add(bufs...)
				}
				if errors.Is(err, virtiotest.ErrNoSpace) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				offered[h] = o
			case opPop:
				for range r.u8() % 9 {
					if !pop() {
						return // the device stops using a malformed queue
					}
				}
			case opPush:
				for range r.u8() % 9 {
					front := r.u8()&1 == 0
					if len(inflight) == 0 {
						break
					}
					var p popped
					if front {
						p, inflight = inflight[0], inflight[1:]
					} else {
						p, inflight = inflight[len(inflight)-1], inflight[:len(inflight)-1]
					}
					q.Add(p.head, p.n)
					pushed = append(pushed, p)
					added++
					sincePush = 0
				}
				if r.u8()&1 == 0 {
					q.Publish()
					published += uint16(added)
					added = 0
				}
			case opUsed:
				if corrupted {
					// The device may have written the rings
					// through corrupted buffers: drain
					// without expectations.
					for range size {
						if _, _, ok := d.Used(); !ok {
							break
						}
					}
					continue
				}
				visible := len(pushed) - added
				for k := range visible {
					h, n, ok := d.Used()
					if !ok || h != pushed[k].head || n != pushed[k].n {
						t.Fatalf("used element %d: %d, %d, %v; device pushed %+v", k, h, n, ok, pushed[k])
					}
					stats.used++
					got := d.WrittenBytes(h, n)
					for i := range got {
						if got[i] != pattern(h, i) {
							t.Fatalf("chain %d: byte %d is %#x, device wrote %#x", h, i, got[i], pattern(h, i))
						}
					}
				}
				if h, _, ok := d.Used(); ok {
					t.Fatalf("used element %d beyond what was published", h)
				}
				pushed = pushed[visible:]
			case opCorruptDesc:
				i := r.u16()
				var addr uint64
				switch r.u8() % 4 {
				case 0:
					addr = d.DataAddr() + uint64(r.u16())
				case 1:
					addr = m.End() - uint64(r.u8())
				case 2:
					addr = r.u64()
				case 3:
					addr = m.Base() + uint64(r.u16())
				}
				n, flags, next := uint32(r.u16()), uint16(r.u8()&7), uint16(r.u8())
				d.SetDesc(i, addr, n, flags, next)
				corrupted = true
			case opUnpop:
				n := min(int(r.u8()%4), sincePush)
				q.Unpop(uint16(n))
				for _, p := range inflight[len(inflight)-n:] {
					offered[p.head] = offer{p.readable, p.wlen}
				}
				inflight = inflight[:len(inflight)-n]
				last -= uint16(n)
				sincePush -= n
			case opNotify:
				if r.u8()&1 == 0 {
					q.DisableNotify()
					if !eventIdx && d.UsedFlags() != virtio.UsedFlagNoNotify {
						t.Fatalf("DisableNotify: used flags %#x", d.UsedFlags())
					}
					continue
				}
				want := d.AvailIdx() != last
				if got := q.EnableNotify(); got != want {
					t.Fatalf("EnableNotify = %v, want %v", got, want)
				}
				if eventIdx && d.AvailEvent() != last {
					t.Fatalf("avail_event %d, want %d", d.AvailEvent(), last)
				}
				if !eventIdx && d.UsedFlags() != 0 {
					t.Fatalf("EnableNotify: used flags %#x", d.UsedFlags())
				}
			case opInterrupt:
				ev, flags := r.u16()+signalled, uint16(r.u8()&1)
				d.SetUsedEvent(ev)
				d.SetAvailFlags(flags)
				var want bool
				switch {
				case signalled == published:
				case eventIdx:
					want = published-ev-1 < published-signalled
				default:
					want = flags == 0
				}
				signalled = published
				if want {
					stats.interrupts++
				}
				if got := q.NeedInterrupt(); got != want {
					t.Fatalf("NeedInterrupt = %v, want %v (event %d, flags %d)", got, want, ev, flags)
				}
			case opCorruptAvail:
				d.SetAvailIdx(d.AvailIdx() + r.u16()%(2*size+2))
				d.SetAvailRing(r.u16(), r.u16())
				corrupted = true
			}
		}
		if err := m.CheckGuards(); err != nil {
			t.Fatal(err)
		}
	})
}
