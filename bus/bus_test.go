package bus

import (
	"strings"
	"testing"
)

type recorder struct {
	lastOff uint64
	lastW   []byte
	fill    byte
}

func (r *recorder) Read(off uint64, data []byte) {
	r.lastOff = off
	for i := range data {
		data[i] = r.fill
	}
}

func (r *recorder) Write(off uint64, data []byte) {
	r.lastOff = off
	r.lastW = append(r.lastW[:0], data...)
}

func TestInsertRefusesOverlaps(t *testing.T) {
	tests := []struct {
		name       string
		base, size uint64
		wantErr    string
	}{
		{"inside", 0x3f9, 1, "overlaps uart"},
		{"straddles start", 0x3f0, 0x10, "overlaps uart"},
		{"straddles end", 0x3ff, 2, "overlaps uart"},
		{"covers", 0x300, 0x200, "overlaps uart"},
		{"empty", 0x500, 0, "empty range"},
		{"wraps", ^uint64(0), 2, "wraps"},
		{"adjacent below", 0x3f0, 8, ""},
		{"adjacent above", 0x400, 8, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Bus
			if err := b.Insert("uart", 0x3f8, 8, &recorder{}); err != nil {
				t.Fatal(err)
			}
			err := b.Insert("other", tt.base, tt.size, &recorder{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDispatchGivesOffsets(t *testing.T) {
	var b Bus
	a, c := &recorder{fill: 0xaa}, &recorder{fill: 0xcc}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        *recorder
	}{{"c", 0x1000, 0x10, c}, {"a", 0x70, 2, a}} {
		if err := b.Insert(d.name, d.base, d.size, d.dev); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1)
	if !b.Read(0x71, buf) || buf[0] != 0xaa || a.lastOff != 1 {
		t.Fatalf("read 0x71: got %#x off %d", buf[0], a.lastOff)
	}
	if !b.Write(0x100c, []byte{1, 2, 3, 4}) || c.lastOff != 0xc || string(c.lastW) != "\x01\x02\x03\x04" {
		t.Fatalf("write 0x100c: off %#x data %v", c.lastOff, c.lastW)
	}
	tests := []struct {
		addr uint64
		n    int
	}{{0x6f, 1}, {0x72, 1}, {0x71, 2}, {0x100e, 4}, {0x1010, 1}, {0, 1}, {^uint64(0), 1}}
	for _, tt := range tests {
		if b.Read(tt.addr, make([]byte, tt.n)) {
			t.Errorf("read %#x/%d claimed, want unclaimed", tt.addr, tt.n)
		}
	}
}

func TestDispatchAllocatesNothing(t *testing.T) {
	var b Bus
	for i := uint64(0); i < 16; i++ {
		if err := b.Insert("d", i*0x10, 8, &recorder{}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4)
	if n := testing.AllocsPerRun(100, func() { b.Read(0x94, buf) }); n != 0 {
		t.Fatalf("Read allocates %v times", n)
	}
}
