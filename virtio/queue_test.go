package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const (
	ramBase = 0x10000
	ramSize = 64 << 10
	qMax    = 256
)

// rig is one queue with its driver in a fresh Mem.
type rig struct {
	t   *testing.T
	mem *virtiotest.Mem
	d   *virtiotest.Driver
	q   *virtio.Queue
}

type opts struct {
	size     uint16
	eventIdx bool
	indirect bool
}

func newRig(t *testing.T, o opts) *rig {
	t.Helper()
	if o.size == 0 {
		o.size = 8
	}
	mem := virtiotest.NewMem(ramBase, ramSize)
	d, err := virtiotest.NewDriver(mem, o.size, ramBase, 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	q := virtio.NewQueue(qMax)
	if err := q.Setup(mem, d.Config(), o.eventIdx, o.indirect); err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, mem: mem, d: d, q: q}
}

func (r *rig) add(bufs ...virtiotest.Buf) uint16 {
	r.t.Helper()
	h, err := r.d.Add(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

func (r *rig) addIndirect(bufs ...virtiotest.Buf) uint16 {
	r.t.Helper()
	h, err := r.d.AddIndirect(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// pop pops one chain and fails the test unless there was one.
func (r *rig) pop(c *virtio.Chain) {
	r.t.Helper()
	ok, err := r.q.Pop(c)
	if err != nil || !ok {
		r.t.Fatalf("Pop = %v, %v; want a chain", ok, err)
	}
}

func (r *rig) checkGuards() {
	r.t.Helper()
	if err := r.mem.CheckGuards(); err != nil {
		r.t.Fatal(err)
	}
}

// data returns distinct bytes of length n.
func data(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func concat(bufs [][]byte) []byte {
	var out []byte
	for _, b := range bufs {
		out = append(out, b...)
	}
	return out
}

func TestPopGoodChains(t *testing.T) {
	R, W := virtiotest.R, virtiotest.W
	tests := []struct {
		name     string
		indirect bool
		bufs     []virtiotest.Buf
	}{
		{"single readable", false, []virtiotest.Buf{R(data(1, 10))}},
		{"single writable", false, []virtiotest.Buf{W(33)}},
		{"multi segment", false, []virtiotest.Buf{R(data(1, 3)), R(data(2, 100)), W(1), W(512)}},
		{"whole table", false, []virtiotest.Buf{R(data(1, 1)), R(data(2, 2)), R(data(3, 3)), R(data(4, 4)), W(1), W(2), W(3), W(4)}},
		{"zero-length readable skipped", false, []virtiotest.Buf{R(nil), R(data(5, 5)), W(7)}},
		{"indirect", true, []virtiotest.Buf{R(data(1, 16)), W(16)}},
		{"indirect single", true, []virtiotest.Buf{W(4096)}},
		{"indirect long", true, append(repeat(R(data(9, 3)), 20), repeat(W(5), 20)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, opts{indirect: tc.indirect})
			var head uint16
			if tc.indirect {
				head = r.addIndirect(tc.bufs...)
			} else {
				head = r.add(tc.bufs...)
			}
			var c virtio.Chain
			r.pop(&c)
			if c.Head != head {
				t.Fatalf("head %d, want %d", c.Head, head)
			}
			var wantR []byte
			var wantW []int
			for _, b := range tc.bufs {
				if b.WriteLen > 0 {
					wantW = append(wantW, b.WriteLen)
				} else {
					wantR = append(wantR, b.Data...)
				}
			}
			if got := concat(c.Readable); !bytes.Equal(got, wantR) {
				t.Errorf("readable %x, want %x", got, wantR)
			}
			if c.ReadableLen() != len(wantR) {
				t.Errorf("ReadableLen %d, want %d", c.ReadableLen(), len(wantR))
			}
			var gotW []int
			for _, b := range c.Writable {
				gotW = append(gotW, len(b))
			}
			if !equalInts(gotW, wantW) {
				t.Errorf("writable lengths %v, want %v", gotW, wantW)
			}
			if c.WritableLen() != sum(wantW) {
				t.Errorf("WritableLen %d, want %d", c.WritableLen(), sum(wantW))
			}
			for _, b := range append(append([][]byte{}, c.Readable...), c.Writable...) {
				if !r.mem.Contains(b) {
					t.Fatalf("buffer %p is not in guest RAM", b)
				}
			}
			// The device fills the writable buffers; the driver must
			// see exactly that after Push.
			var wrote []byte
			for i, b := range c.Writable {
				for j := range b {
					b[j] = byte(i*31 + j)
				}
				wrote = append(wrote, b...)
			}
			r.q.Push(c.Head, uint32(len(wrote)))
			if ok, err := r.q.Pop(&c); ok || err != nil {
				t.Fatalf("second Pop = %v, %v; want nothing", ok, err)
			}
			h, n, ok := r.d.Used()
			if !ok || h != head || n != uint32(len(wrote)) {
				t.Fatalf("Used = %d, %d, %v; want %d, %d", h, n, ok, head, len(wrote))
			}
			if got := r.d.WrittenBytes(h, n); !bytes.Equal(got, wrote) {
				t.Errorf("driver saw %x, device wrote %x", got, wrote)
			}
			r.checkGuards()
		})
	}
}

func repeat(b virtiotest.Buf, n int) []virtiotest.Buf {
	out := make([]virtiotest.Buf, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sum(a []int) int {
	n := 0
	for _, x := range a {
		n += x
	}
	return n
}

// A direct chain may end in an indirect descriptor (nothing in §2.7.5.3
// forbids it), and zero-length descriptors are skipped without resolving
// their address.
func TestPopMixedChain(t *testing.T) {
	r := newRig(t, opts{indirect: true})
	d, m := r.d, r.mem
	buf := d.DataAddr()
	copy(m.Bytes(buf, 4), "abcd")
	table := buf + 64
	virtiotest.WriteDesc(m.Bytes(table, 16), buf+16, 8, virtio.DescFlagWrite|virtio.DescFlagNext, 1)
	virtiotest.WriteDesc(m.Bytes(table+16, 16), 0xdead_beef_0000, 0, virtio.DescFlagWrite|virtio.DescFlagNext, 2)
	virtiotest.WriteDesc(m.Bytes(table+32, 16), buf+32, 4, virtio.DescFlagWrite, 0)
	d.SetDesc(5, buf, 4, virtio.DescFlagNext, 2)
	d.SetDesc(2, 1<<63, 0, virtio.DescFlagNext, 6)
	d.SetDesc(6, table, 48, virtio.DescFlagIndirect, 0)
	d.SetAvailRing(0, 5)
	d.SetAvailIdx(1)
	var c virtio.Chain
	r.pop(&c)
	if c.Head != 5 || len(c.Readable) != 1 || string(c.Readable[0]) != "abcd" {
		t.Fatalf("chain %d readable %q", c.Head, c.Readable)
	}
	if len(c.Writable) != 2 || !m.IsAt(c.Writable[0], buf+16) || !m.IsAt(c.Writable[1], buf+32) {
		t.Fatalf("writable %d buffers, want the 8 bytes at %#x and 4 at %#x", len(c.Writable), buf+16, buf+32)
	}
}

// mutate builds a malformed queue state through raw driver access.
type mutate func(d *virtiotest.Driver, m *virtiotest.Mem)

// chain points avail slot 0 at head and makes one chain available.
func avail1(d *virtiotest.Driver, head uint16) {
	d.SetAvailRing(0, head)
	d.SetAvailIdx(1)
}

func TestPopMalformed(t *testing.T) {
	const (
		N = virtio.DescFlagNext
		W = virtio.DescFlagWrite
		I = virtio.DescFlagIndirect
	)
	// indirectTable writes n entries at the start of the data area,
	// entry i chained to i+1 except the last, and points descriptor 0
	// at it.
	indirectTable := func(n int, entry func(i int) (flags, next uint16)) mutate {
		return func(d *virtiotest.Driver, m *virtiotest.Mem) {
			t := d.DataAddr()
			buf := t + uint64(16*n)
			for i := range n {
				flags, next := uint16(N), uint16(i+1)
				if i == n-1 {
					flags, next = 0, 0
				}
				if entry != nil {
					flags, next = entry(i)
				}
				virtiotest.WriteDesc(m.Bytes(t+uint64(16*i), 16), buf, 1, flags, next)
			}
			d.SetDesc(0, t, uint32(16*n), I, 0)
			avail1(d, 0)
		}
	}
	tests := []struct {
		name     string
		indirect bool
		setup    mutate
	}{
		{"loop", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 1, N, 1)
			d.SetDesc(1, d.DataAddr(), 1, N, 0)
			avail1(d, 0)
		}},
		{"self loop", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(3, d.DataAddr(), 1, N, 3)
			avail1(d, 3)
		}},
		{"over-long through indirect", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			// One direct descriptor, then a full table: MaxChain+1.
			indirectTable(virtio.MaxChain, nil)(d, m)
			d.SetDesc(1, d.DataAddr(), 1, N, 0)
			avail1(d, 1)
		}},
		{"avail idx ahead by size+1", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			for i := range uint16(8) {
				d.SetDesc(i, d.DataAddr(), 1, 0, 0)
			}
			d.SetAvailIdx(9)
		}},
		{"avail idx went backwards", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetAvailIdx(0xffff)
		}},
		{"head out of range", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			avail1(d, 8)
		}},
		{"head far out of range", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			avail1(d, 0xffff)
		}},
		{"next out of range", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 1, N, 8)
			avail1(d, 0)
		}},
		{"buffer below RAM", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.Base()-1, 2, 0, 0)
			avail1(d, 0)
		}},
		{"buffer partly past RAM", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.End()-4, 8, W, 0)
			avail1(d, 0)
		}},
		{"buffer at the end of RAM", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.End(), 1, W, 0)
			avail1(d, 0)
		}},
		{"buffer address wraps", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, ^uint64(0)-0xf, 0x20, 0, 0)
			avail1(d, 0)
		}},
		{"huge buffer", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.Base(), ^uint32(0), W, 0)
			avail1(d, 0)
		}},
		{"second buffer outside RAM", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 1, N, 1)
			d.SetDesc(1, 0, 1, W, 0)
			avail1(d, 0)
		}},
		{"writable before readable", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 1, W|N, 1)
			d.SetDesc(1, d.DataAddr(), 1, 0, 0)
			avail1(d, 0)
		}},
		{"zero-length readable after writable", false, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 1, W|N, 1)
			d.SetDesc(1, d.DataAddr(), 0, 0, 0)
			avail1(d, 0)
		}},
		{"indirect not negotiated", false, indirectTable(2, nil)},
		{"indirect with next", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			indirectTable(2, nil)(d, m)
			d.SetDesc(0, d.DataAddr(), 32, I|N, 1)
			d.SetDesc(1, d.DataAddr(), 1, W, 0)
		}},
		{"nested indirect", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			// Entry 1 points at a well-formed one-entry table.
			indirectTable(2, nil)(d, m)
			nested := d.DataAddr() + 0x100
			virtiotest.WriteDesc(m.Bytes(nested, 16), d.DataAddr(), 1, 0, 0)
			virtiotest.WriteDesc(m.Bytes(d.DataAddr()+16, 16), nested, 16, I, 0)
		}},
		{"indirect length 0", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, d.DataAddr(), 0, I, 0)
			avail1(d, 0)
		}},
		{"indirect length not a multiple of 16", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			indirectTable(2, nil)(d, m)
			d.SetDesc(0, d.DataAddr(), 17, I, 0)
		}},
		{"indirect table too big", true, indirectTable(virtio.MaxChain+1, func(int) (uint16, uint16) { return 0, 0 })},
		{"indirect table outside RAM", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.End(), 16, I, 0)
			avail1(d, 0)
		}},
		{"indirect table partly outside RAM", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, m.End()-16, 32, I, 0)
			avail1(d, 0)
		}},
		{"indirect table address wraps", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			d.SetDesc(0, ^uint64(0)-15, 32, I, 0)
			avail1(d, 0)
		}},
		{"indirect next out of range", true, indirectTable(2, func(i int) (uint16, uint16) { return N, 2 })},
		{"indirect loop", true, indirectTable(2, func(i int) (uint16, uint16) { return N, uint16(1 - i) })},
		{"indirect writable before readable", true, indirectTable(2, func(i int) (uint16, uint16) {
			if i == 0 {
				return W | N, 1
			}
			return 0, 0
		})},
		{"indirect buffer outside RAM", true, func(d *virtiotest.Driver, m *virtiotest.Mem) {
			indirectTable(1, nil)(d, m)
			virtiotest.WriteDesc(m.Bytes(d.DataAddr(), 16), m.End()-1, 2, W, 0)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, opts{indirect: tc.indirect})
			tc.setup(r.d, r.mem)
			before := bytes.Clone(r.mem.RAM())
			c := virtio.Chain{Readable: [][]byte{{1}}}
			for i := range 2 { // nothing is consumed: a retry fails alike
				ok, err := r.q.Pop(&c)
				if ok || !errors.Is(err, virtio.ErrMalformed) {
					t.Fatalf("Pop = %v, %v; want an ErrMalformed error", ok, err)
				}
				if i == 0 {
					t.Log(err)
				}
			}
			if c.Readable != nil || c.Writable != nil {
				t.Errorf("failed Pop left buffers in the chain")
			}
			if !bytes.Equal(before, r.mem.RAM()) {
				t.Errorf("Pop wrote to guest RAM")
			}
			r.checkGuards()
		})
	}
}

// The limits are inclusive: a chain using the whole table, and an
// indirect table of exactly MaxChain entries, are fine.
func TestPopLimits(t *testing.T) {
	t.Run("direct chain of size descriptors", func(t *testing.T) {
		r := newRig(t, opts{size: 4})
		for i := range uint16(4) {
			flags := uint16(virtio.DescFlagNext)
			if i == 3 {
				flags = 0
			}
			r.d.SetDesc(i, r.d.DataAddr()+uint64(i), 1, flags, i+1)
		}
		avail1(r.d, 0)
		var c virtio.Chain
		r.pop(&c)
		if len(c.Readable) != 4 {
			t.Fatalf("%d readable buffers, want 4", len(c.Readable))
		}
	})
	t.Run("indirect table of MaxChain", func(t *testing.T) {
		r := newRig(t, opts{indirect: true})
		bufs := repeat(virtiotest.W(1), virtio.MaxChain)
		head := r.addIndirect(bufs...)
		c := virtio.NewChain()
		r.pop(c)
		if c.Head != head || len(c.Writable) != virtio.MaxChain {
			t.Fatalf("head %d with %d writable buffers, want %d with %d", c.Head, len(c.Writable), head, virtio.MaxChain)
		}
	})
	t.Run("avail idx exactly size ahead", func(t *testing.T) {
		r := newRig(t, opts{size: 4})
		for i := range 4 {
			r.add(virtiotest.R(data(byte(i), 1)))
		}
		var c virtio.Chain
		for i := range 4 {
			r.pop(&c)
			if c.Readable[0][0] != byte(i) {
				t.Fatalf("chain %d out of order", i)
			}
		}
	})
}

func TestSetup(t *testing.T) {
	mem := virtiotest.NewMem(ramBase, ramSize)
	end := mem.End()
	good := virtio.QueueConfig{Size: 16, Desc: ramBase, Avail: ramBase + 0x1000, Used: ramBase + 0x2000}
	tests := []struct {
		name string
		mod  func(c *virtio.QueueConfig)
		ok   bool
	}{
		{"good", func(c *virtio.QueueConfig) {}, true},
		{"max size", func(c *virtio.QueueConfig) { c.Size = qMax }, true},
		{"size 1", func(c *virtio.QueueConfig) { c.Size = 1 }, true},
		{"rings ending at the end of RAM", func(c *virtio.QueueConfig) {
			c.Desc = end - 16*16
			c.Avail = end - 16*16 - (6 + 2*16)
			c.Used = end - 16*16 - 0x100 - 0x100
		}, true},
		{"used ring ending at the end of RAM", func(c *virtio.QueueConfig) { c.Used = end - (6 + 8*16) - 2 }, true},
		{"size 0", func(c *virtio.QueueConfig) { c.Size = 0 }, false},
		{"size 3", func(c *virtio.QueueConfig) { c.Size = 3 }, false},
		{"size 0xffff", func(c *virtio.QueueConfig) { c.Size = 0xffff }, false},
		{"size over max", func(c *virtio.QueueConfig) { c.Size = 2 * qMax }, false},
		{"desc misaligned", func(c *virtio.QueueConfig) { c.Desc += 8 }, false},
		{"avail misaligned", func(c *virtio.QueueConfig) { c.Avail++ }, false},
		{"used misaligned", func(c *virtio.QueueConfig) { c.Used += 2 }, false},
		{"desc outside RAM", func(c *virtio.QueueConfig) { c.Desc = 0 }, false},
		{"desc partly outside RAM", func(c *virtio.QueueConfig) { c.Desc = end - 16*15 }, false},
		{"avail partly outside RAM", func(c *virtio.QueueConfig) { c.Avail = end - (6 + 2*16) + 2 }, false},
		{"used partly outside RAM", func(c *virtio.QueueConfig) { c.Used = end - (6 + 8*16) + 4 }, false},
		{"used address wraps", func(c *virtio.QueueConfig) { c.Used = ^uint64(0) - 3 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			q := virtio.NewQueue(qMax)
			before := bytes.Clone(mem.RAM())
			err := q.Setup(mem, cfg, true, true)
			if (err == nil) != tc.ok {
				t.Fatalf("Setup(%+v) = %v, want ok=%v", cfg, err, tc.ok)
			}
			t.Log(err)
			if q.Ready() != tc.ok {
				t.Errorf("Ready = %v after Setup returned %v", q.Ready(), err)
			}
			if !bytes.Equal(before, mem.RAM()) {
				t.Errorf("Setup wrote to guest RAM")
			}
			if !tc.ok {
				// A queue that failed Setup does nothing.
				var c virtio.Chain
				if ok, err := q.Pop(&c); ok || err != nil {
					t.Errorf("Pop on a failed queue = %v, %v", ok, err)
				}
				q.Push(0, 1)
				q.DisableNotify()
				if q.EnableNotify() || q.NeedInterrupt() {
					t.Errorf("notification calls on a failed queue reported work")
				}
				if !bytes.Equal(before, mem.RAM()) {
					t.Errorf("a failed queue wrote to guest RAM")
				}
			}
		})
	}
}

func TestReset(t *testing.T) {
	r := newRig(t, opts{})
	r.add(virtiotest.R(data(1, 4)))
	var c virtio.Chain
	r.pop(&c)
	r.q.Reset()
	if r.q.Ready() || r.q.Max() != qMax {
		t.Fatalf("after Reset: Ready %v, Max %d", r.q.Ready(), r.q.Max())
	}
	before := bytes.Clone(r.mem.RAM())
	r.q.Push(c.Head, 0)
	r.q.EnableNotify()
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("Pop after Reset = %v, %v", ok, err)
	}
	if !bytes.Equal(before, r.mem.RAM()) {
		t.Errorf("a reset queue wrote to guest RAM")
	}
	// Set up again: indices start over at 0, so the chain is offered
	// again to the device as the driver's reset would require.
	if err := r.q.Setup(r.mem, r.d.Config(), false, false); err != nil {
		t.Fatal(err)
	}
	r.pop(&c)
}

func TestUnpop(t *testing.T) {
	r := newRig(t, opts{})
	var heads []uint16
	for i := range 4 {
		heads = append(heads, r.add(virtiotest.R(data(byte(i), 1))))
	}
	var c virtio.Chain
	for range 3 {
		r.pop(&c)
	}
	r.q.Unpop(2)
	for _, want := range heads[1:] {
		r.pop(&c)
		if c.Head != want {
			t.Fatalf("after Unpop got head %d, want %d", c.Head, want)
		}
	}
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("Pop past the end = %v, %v", ok, err)
	}
	// Chains already returned to the driver are never handed out again.
	for _, h := range heads {
		r.q.Add(h, 0)
	}
	r.q.Unpop(3)
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("Unpop past used chains: Pop = %v, %v", ok, err)
	}
	// Unpop is capped at what is still in flight.
	h := r.add(virtiotest.W(1))
	r.pop(&c)
	r.q.Unpop(100)
	r.pop(&c)
	if c.Head != h {
		t.Fatalf("head %d, want %d", c.Head, h)
	}
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("over-large Unpop: Pop = %v, %v", ok, err)
	}
}

// roundTrips sends n chains of varying shape through the queue, up to
// batch of them in flight, checking contents and used elements.
func roundTrips(t *testing.T, r *rig, n, batch int) {
	t.Helper()
	var c virtio.Chain
	seq := 0
	for seq < n {
		var heads []uint16
		for k := 0; k < batch && seq+k < n; k++ {
			b := []virtiotest.Buf{virtiotest.R(data(byte(seq+k), 1+(seq+k)%3)), virtiotest.W(2)}
			var h uint16
			var err error
			if (seq+k)%2 == 1 && r.d.Free() > 0 {
				h, err = r.d.AddIndirect(b...)
			} else {
				h, err = r.d.Add(b...)
			}
			if err != nil {
				t.Fatal(err)
			}
			heads = append(heads, h)
		}
		for k, h := range heads {
			r.pop(&c)
			if c.Head != h || c.Readable[0][0] != byte(seq+k) {
				t.Fatalf("chain %d: head %d first byte %d, want %d, %d", seq+k, c.Head, c.Readable[0][0], h, byte(seq+k))
			}
			c.Writable[0][0] = byte(seq + k)
			r.q.Add(c.Head, 1)
		}
		r.q.Publish()
		for k, h := range heads {
			got, n, ok := r.d.Used()
			if !ok || got != h || n != 1 || r.d.Written(h)[0][0] != byte(seq+k) {
				t.Fatalf("chain %d: Used = %d, %d, %v", seq+k, got, n, ok)
			}
		}
		seq += len(heads)
	}
	if ok, err := r.q.Pop(&c); ok || err != nil {
		t.Fatalf("Pop at the end = %v, %v", ok, err)
	}
}

func TestIndexWraparound(t *testing.T) {
	for _, start := range []uint16{0xfff0, 0xfffe, 0xffff} {
		r := newRig(t, opts{size: 8, indirect: true})
		virtio.SetIndices(r.q, start)
		r.d.StartAt(start)
		roundTrips(t, r, 40, 5)
		if got, want := r.d.UsedIdx(), start+40; got != want {
			t.Errorf("start %#x: used idx %#x, want %#x", start, got, want)
		}
	}
}

// The same without the test hook: the indices wrap for real.
func TestIndexWraparoundNatural(t *testing.T) {
	if testing.Short() {
		t.Skip("70000 round trips")
	}
	r := newRig(t, opts{size: 8, indirect: true})
	roundTrips(t, r, 70000, 5)
	if got, want := r.d.UsedIdx(), uint16(70000%65536); got != want {
		t.Errorf("used idx %d, want %d", got, want)
	}
}

func TestNeedInterruptEventIdx(t *testing.T) {
	tests := []struct {
		name      string
		published int // since the previous NeedInterrupt, starting at start
		start     uint16
		usedEvent uint16
		want      bool
	}{
		{"event at old index", 1, 0, 0, true},
		{"event at new index", 1, 0, 1, false},
		{"event inside batch", 3, 0, 2, true},
		{"event at batch start", 3, 0, 0, true},
		{"event past batch", 3, 0, 3, false},
		{"event behind", 3, 10, 9, false},
		{"event far ahead", 3, 0, 0x8000, false},
		{"wrapping batch, event before wrap", 4, 0xfffe, 0xffff, true},
		{"wrapping batch, event after wrap", 4, 0xfffe, 1, true},
		{"wrapping batch, event at end", 4, 0xfffe, 2, false},
		{"nothing published", 0, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, opts{eventIdx: true})
			virtio.SetIndices(r.q, tc.start)
			r.d.StartAt(tc.start)
			// NO_INTERRUPT is ignored with EVENT_IDX.
			r.d.SetAvailFlags(virtio.AvailFlagNoInterrupt)
			r.d.SetUsedEvent(tc.usedEvent)
			for range tc.published {
				r.q.Push(0, 0)
			}
			if got := r.q.NeedInterrupt(); got != tc.want {
				t.Errorf("NeedInterrupt = %v, want %v", got, tc.want)
			}
			if r.q.NeedInterrupt() {
				t.Errorf("second NeedInterrupt with nothing new = true")
			}
		})
	}
}

// Elements Added but not Published do not count, and a batch published
// in several steps is judged from the previous NeedInterrupt.
func TestNeedInterruptAcrossPublishes(t *testing.T) {
	r := newRig(t, opts{eventIdx: true})
	r.d.SetUsedEvent(1)
	r.q.Add(0, 0)
	r.q.Add(0, 0)
	if r.q.NeedInterrupt() {
		t.Fatal("interrupt for unpublished elements")
	}
	r.q.Publish() // used idx 2: [0,2) contains 1
	r.q.Push(0, 0)
	if !r.q.NeedInterrupt() {
		t.Fatal("no interrupt though used_event 1 was crossed")
	}
	r.d.SetUsedEvent(5)
	r.q.Push(0, 0) // 4
	if r.q.NeedInterrupt() {
		t.Fatal("interrupt before used_event")
	}
	r.q.Push(0, 0) // 5: [4,5) does not contain 5
	r.q.Push(0, 0) // 6: [4,6) does
	if !r.q.NeedInterrupt() {
		t.Fatal("no interrupt though used_event 5 was crossed")
	}
}

func TestNeedInterruptFlags(t *testing.T) {
	for _, noInt := range []bool{false, true} {
		r := newRig(t, opts{})
		if noInt {
			r.d.SetAvailFlags(virtio.AvailFlagNoInterrupt)
		}
		// used_event is meaningless without EVENT_IDX.
		r.d.SetUsedEvent(100)
		r.q.Push(0, 0)
		if got := r.q.NeedInterrupt(); got == noInt {
			t.Errorf("NO_INTERRUPT=%v: NeedInterrupt = %v", noInt, got)
		}
		if r.q.NeedInterrupt() {
			t.Errorf("NO_INTERRUPT=%v: second NeedInterrupt with nothing new = true", noInt)
		}
	}
}

func TestNotifySuppression(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		r := newRig(t, opts{})
		ev := r.d.UsedAddr() + 4 + 8*uint64(r.d.Size())
		binary.LittleEndian.PutUint16(r.mem.Bytes(ev, 2), 0xbeef)
		r.q.DisableNotify()
		if r.d.UsedFlags() != virtio.UsedFlagNoNotify {
			t.Errorf("DisableNotify: used flags %#x", r.d.UsedFlags())
		}
		if r.q.EnableNotify() {
			t.Errorf("EnableNotify on an empty queue reported chains")
		}
		if r.d.UsedFlags() != 0 {
			t.Errorf("EnableNotify: used flags %#x", r.d.UsedFlags())
		}
		r.add(virtiotest.R(data(0, 1)))
		r.q.DisableNotify()
		if !r.q.EnableNotify() {
			t.Errorf("EnableNotify missed a chain made available")
		}
		if r.d.AvailEvent() != 0xbeef {
			t.Errorf("avail_event written without EVENT_IDX: %#x", r.d.AvailEvent())
		}
	})
	t.Run("event idx", func(t *testing.T) {
		r := newRig(t, opts{eventIdx: true})
		flags := r.mem.Bytes(r.d.UsedAddr(), 2)
		flags[0], flags[1] = 0x34, 0x12
		before := bytes.Clone(r.mem.RAM())
		r.q.DisableNotify()
		if !bytes.Equal(before, r.mem.RAM()) {
			t.Errorf("DisableNotify wrote to RAM with EVENT_IDX")
		}
		for i := range 3 {
			r.add(virtiotest.R(data(byte(i), 1)))
		}
		var c virtio.Chain
		r.pop(&c)
		r.pop(&c)
		if !r.q.EnableNotify() {
			t.Errorf("EnableNotify missed a pending chain")
		}
		if r.d.AvailEvent() != 2 {
			t.Errorf("avail_event %d, want 2", r.d.AvailEvent())
		}
		r.pop(&c)
		if r.q.EnableNotify() {
			t.Errorf("EnableNotify reported chains on a drained queue")
		}
		if r.d.AvailEvent() != 3 {
			t.Errorf("avail_event %d, want 3", r.d.AvailEvent())
		}
		if r.d.UsedFlags() != 0x1234 {
			t.Errorf("used flags touched with EVENT_IDX: %#x", r.d.UsedFlags())
		}
	})
}

// Chains popped into NewChain storage stay valid across later Pops; the
// zero Chain's storage is the queue's, shared.
func TestNewChainKeepsBuffers(t *testing.T) {
	r := newRig(t, opts{})
	r.add(virtiotest.R([]byte("first")))
	r.add(virtiotest.R([]byte("second")), virtiotest.W(3))
	a, b := virtio.NewChain(), virtio.NewChain()
	r.pop(a)
	r.pop(b)
	if string(a.Readable[0]) != "first" || len(a.Writable) != 0 {
		t.Errorf("first chain clobbered: %q %d", a.Readable, len(a.Writable))
	}
	if string(b.Readable[0]) != "second" || len(b.Writable) != 1 {
		t.Errorf("second chain: %q %d", b.Readable, len(b.Writable))
	}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	for _, o := range []opts{{size: 16}, {size: 16, eventIdx: true, indirect: true}} {
		r := newRig(t, o)
		// Offer a direct and an indirect chain once; the loop re-offers
		// them by hand, which allocates nothing.
		h1 := r.add(virtiotest.R(data(1, 64)), virtiotest.R(data(2, 64)), virtiotest.W(128))
		h2 := h1
		if o.indirect {
			h2 = r.addIndirect(virtiotest.R(data(3, 8)), virtiotest.W(8), virtiotest.W(8))
		}
		var zero virtio.Chain
		own := virtio.NewChain()
		var c virtio.Chain
		for { // drain what Add offered
			if ok, _ := r.q.Pop(&c); !ok {
				break
			}
			r.q.Push(c.Head, 0)
		}
		idx := r.d.AvailIdx()
		allocs := testing.AllocsPerRun(1000, func() {
			r.d.SetAvailRing(idx, h1)
			r.d.SetAvailRing(idx+1, h2)
			idx += 2
			r.d.SetAvailIdx(idx)
			for _, ch := range []*virtio.Chain{&zero, own} {
				ok, err := r.q.Pop(ch)
				if !ok || err != nil {
					panic("no chain")
				}
				ch.Writable[0][0] = 1
				r.q.Add(ch.Head, uint32(ch.WritableLen()))
			}
			r.q.Publish()
			r.q.NeedInterrupt()
			r.q.DisableNotify()
			r.q.EnableNotify()
			r.q.Pop(&zero) // nothing left
			r.q.Unpop(0)
		})
		if allocs != 0 {
			t.Errorf("%+v: %v allocations per round", o, allocs)
		}
	}
}
