//go:build linux && amd64

package main

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseIOMem(t *testing.T) {
	tests := []struct {
		name    string
		iomem   string
		want    []mmioDevice
		wantErr string
	}{
		{
			name: "bound and unbound",
			iomem: `00000000-00000fff : Reserved
00100000-1fffffff : System RAM
d0000000-d00001ff : LNRO0005:00
  d0000000-d00001ff : LNRO0005:00
d0001000-d00011ff : LNRO0005:01
fec00000-fec003ff : IOAPIC 0
`,
			want: []mmioDevice{{"LNRO0005:00", 0xd0000000}, {"LNRO0005:01", 0xd0001000}},
		},
		{
			name:  "out of order",
			iomem: "d0001000-d00011ff : LNRO0005:01\nd0000000-d00001ff : LNRO0005:00\n",
			want:  []mmioDevice{{"LNRO0005:00", 0xd0000000}, {"LNRO0005:01", 0xd0001000}},
		},
		{name: "none", iomem: "00100000-1fffffff : System RAM\n", wantErr: "no LNRO0005 device"},
		{name: "gap", iomem: "d0001000-d00011ff : LNRO0005:01\n", wantErr: "not vmm's layout"},
		{name: "unreadable address (non-root sees zeros)", iomem: "zzzz-d00001ff : LNRO0005:00\n", wantErr: "invalid syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseIOMem(strings.NewReader(tt.iomem))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("device %d: got %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// The port plan never touches KVM's in-kernel devices, never starts an
// access on a port that would end the run, gives every width to vmm's
// ports and their neighbours, and a byte to a sample of the others.
func TestPortPlan(t *testing.T) {
	tests := []struct {
		port        uint16
		width       int
		write, read bool
	}{
		{0x70, 1, true, true},     // RTC
		{0x70, 4, true, true},     // every width
		{0x58, 4, true, true},     // 8 below the i8042
		{0x57, 1, false, false},   // 9 below: not sampled
		{0x50, 1, true, true},     // every 16th is
		{0x50, 2, false, false},   // with a byte only
		{0x80, 1, true, true},     // POST port: a 16th, nothing of vmm's near
		{0x80, 4, false, false},   // so a byte only
		{0x20, 1, false, false},   // PIC
		{0x61, 1, false, false},   // PIT speaker
		{0xf4, 1, false, false},   // exit port
		{0xf4, 2, false, false},   // starts on it
		{0xf2, 4, true, true},     // straddles it: vmm must not route that
		{0xf8, 1, true, true},     // wait port
		{0x64, 1, false, false},   // i8042 command
		{0x3f8, 1, false, false},  // COM1
		{0x3f6, 4, true, true},    // straddles into COM1
		{0x2f8, 2, false, false},  // COM2
		{0x2f0, 2, true, true},    // 8 below COM2
		{0x604, 4, false, false},  // ACPI PM
		{0x617, 4, true, true},    // 8 above it
		{0x5f0, 1, true, true},    // boot timer
		{0x5f0, 4, true, true},    // every width
		{0x1000, 1, true, true},   // every 64th up here
		{0x1000, 2, false, false}, // with a byte only
		{0x1010, 1, false, false}, // a 16th is not enough up here
		{0xffc0, 1, true, true},
		{0xffff, 1, true, true},   // and the last
		{0xffff, 2, false, false}, // past the last port
	}
	for _, tt := range tests {
		w, r := plan(tt.port, tt.width)
		if w != tt.write || r != tt.read {
			t.Errorf("plan(%#x, %d) = %v, %v; want %v, %v", tt.port, tt.width, w, r, tt.write, tt.read)
		}
	}
	written, exits := 0, 0
	for p := 0; p <= 0xffff; p++ {
		for _, w := range []int{1, 2, 4} {
			write, read := plan(uint16(p), w)
			if !write {
				continue
			}
			exits++
			if read {
				exits++
			}
			if w == 1 {
				written++
			}
			if inAny(keepOut, uint16(p), uint16(p+w-1)) {
				t.Fatalf("%d bytes at %#x touch a KVM device", w, p)
			}
			if inAny(noStart, uint16(p), uint16(p)) {
				t.Fatalf("%d bytes at %#x start on a port that ends the run", w, p)
			}
		}
	}
	// Every port of vmm's that garbage may start on gets every width.
	for _, r := range vmmPorts {
		for p := int(r.lo); p <= int(r.hi); p++ {
			if inAny(noStart, uint16(p), uint16(p)) {
				continue
			}
			for _, w := range []int{1, 2, 4} {
				if write, _ := plan(uint16(p), w); !write {
					t.Errorf("%s: no %d-byte access at %#x", r.why, w, p)
				}
			}
		}
	}
	skippedPorts, sampledPorts := 0, 0
	for p := 0; p <= 0xffff; p++ {
		if !sampled(p) {
			continue
		}
		sampledPorts++
		if inAny(keepOut, uint16(p), uint16(p)) || inAny(noStart, uint16(p), uint16(p)) {
			skippedPorts++
		}
	}
	if skippedPorts > 64 {
		t.Errorf("%d ports skipped: the attack should spare only a few", skippedPorts)
	}
	if written != sampledPorts-skippedPorts {
		t.Errorf("%d ports get a byte write, want every sampled port but the %d skipped", written, skippedPorts)
	}
	// The point of sampling: a few thousand exits, not 32,000.
	if exits > 4000 {
		t.Errorf("%d port exits planned", exits)
	}
	t.Logf("%d ports sampled, %d skipped, %d port exits", sampledPorts, skippedPorts, exits)
}

// No garbage value, written to an address register, points into guest
// RAM above 1 MiB (the guest has 512 MiB).
func TestGarbageValueSparesRAM(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		if v := garbageValue(rng); v >= 1<<20 && v < 1<<31 {
			t.Fatalf("garbage value %#x lies in guest RAM", v)
		}
	}
}

// putDesc and offer lay out struct virtq_desc and the avail ring as
// virtio v1.2 §2.7 has them.
func TestRingLayout(t *testing.T) {
	page := dmaPage{b: make([]byte, pageSize), phys: 0x5000}
	r := newRing(page, 8)
	r.setDesc(3, 0x1122334455667788, 0x99aabbcc, descNext|descWrite, 7)
	d := page.b[3*16 : 4*16]
	if binary.LittleEndian.Uint64(d) != 0x1122334455667788 || binary.LittleEndian.Uint32(d[8:]) != 0x99aabbcc ||
		binary.LittleEndian.Uint16(d[12:]) != 3 || binary.LittleEndian.Uint16(d[14:]) != 7 {
		t.Errorf("descriptor bytes % x", d)
	}
	r.offer(3, 1)
	r.offer(5, 0x8000)
	a := page.b[ringAvailOff:]
	if idx := binary.LittleEndian.Uint16(a[2:]); idx != 0x8001 {
		t.Errorf("avail idx %#x, want 0x8001", idx)
	}
	if h0, h1 := binary.LittleEndian.Uint16(a[4:]), binary.LittleEndian.Uint16(a[6:]); h0 != 3 || h1 != 5 {
		t.Errorf("avail ring %d %d, want 3 5", h0, h1)
	}
	if q := r.config(); q.desc != 0x5000 || q.avail != 0x5000+ringAvailOff || q.used != 0x5000+ringUsedOff || q.size != 8 {
		t.Errorf("config %+v", q)
	}
	binary.LittleEndian.PutUint16(page.b[ringUsedOff+2:], 1)
	binary.LittleEndian.PutUint32(page.b[ringUsedOff+4:], 3)
	binary.LittleEndian.PutUint32(page.b[ringUsedOff+8:], 513)
	if id, n := r.usedElem(0); r.usedIdx() != 1 || id != 3 || n != 513 {
		t.Errorf("used idx %d elem %d %d, want 1, 3 513", r.usedIdx(), id, n)
	}
}

// The exact-width accessors read back what they wrote, little-endian.
func TestAccessWidths(t *testing.T) {
	b := make([]byte, 16)
	for _, w := range []int{1, 2, 4, 8} {
		clear(b)
		write(b, 3, w, 0x0807060504030201)
		want := uint64(0x0807060504030201) & (1<<(8*w) - 1)
		if w == 8 {
			want = 0x0807060504030201
		}
		if got := read(b, 3, w); got != want {
			t.Errorf("width %d: read %#x, want %#x", w, got, want)
		}
		if b[3] != 1 || b[2] != 0 || b[3+w] != 0 {
			t.Errorf("width %d: bytes % x", w, b)
		}
	}
}

// The MMIO sweep covers the first window's registers and every window's
// configuration bytes, stays inside the mapping, and makes the accesses
// it counts.
func TestWindowRanges(t *testing.T) {
	const devs = 3
	rs := windowRanges(devs)
	span := (devs + 1) * mmioStride
	covered := make([]bool, span)
	want := 0
	for _, r := range rs {
		if r[0] < 0 || r[1] > span || r[0] >= r[1] {
			t.Fatalf("range %#x-%#x outside the %#x-byte mapping", r[0], r[1], span)
		}
		for i := r[0]; i < r[1]; i++ {
			covered[i] = true
		}
		for _, w := range []int{1, 2, 4, 8} {
			want += 2 * ((r[1] - r[0]) / w)
		}
	}
	for d := 0; d < devs; d++ {
		for off := 0; off < windowSize; off++ {
			if d > 0 && off < configOffset {
				if covered[d*mmioStride+off] {
					t.Fatalf("device %d register offset %#x swept again", d, off)
				}
				continue
			}
			if !covered[d*mmioStride+off] {
				t.Fatalf("device %d offset %#x not swept", d, off)
			}
		}
	}
	if !covered[devs*mmioStride] {
		t.Error("the page after the last window is not swept")
	}
	want += 2 * (span/pageSize - 1) * (1 + 3 + 7) // page-crossing accesses
	b := make([]byte, span)
	if n := sweep(b, rs, rand.New(rand.NewPCG(1, 2))); n != want {
		t.Errorf("sweep made %d accesses, want %d", n, want)
	}
}
