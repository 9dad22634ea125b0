package guestmem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSliceBounds(t *testing.T) {
	m, err := FromRegions(Region{GPA: 0, Mem: make([]byte, 0x1000)}, Region{GPA: 0x10000, Mem: make([]byte, 0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 0x1000, true},
		{0xfff, 1, true},
		{0xfff, 2, false},        // straddles the end of region 0
		{0x1000, 1, false},       // in the gap
		{0xffff, 2, false},       // from the gap into region 1
		{0x10000, 0x1000, true},  // all of region 1
		{0x10000, 0x1001, false}, // one byte too many
		{0x11000, 0, false},      // just past the end, even empty
		{^uint64(0), 2, false},   // wrap-around
		{0x10, ^uint64(0), false},
	}
	for _, tt := range tests {
		b, err := m.Slice(tt.gpa, tt.n)
		if tt.ok {
			if err != nil || uint64(len(b)) != tt.n {
				t.Errorf("Slice(%#x, %#x): %v, len %d", tt.gpa, tt.n, err, len(b))
			}
			continue
		}
		if !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Slice(%#x, %#x): got %v, want ErrOutOfRange", tt.gpa, tt.n, err)
		}
	}
}

func TestSliceCannotGrowPastRequest(t *testing.T) {
	m, _ := FromRegions(Region{GPA: 0, Mem: make([]byte, 64)})
	b, err := m.Slice(8, 8)
	if err != nil {
		t.Fatal(err)
	}
	if cap(b) != 8 {
		t.Fatalf("cap %d: a caller could append into neighbouring guest memory", cap(b))
	}
}

func TestNewMapsLazily(t *testing.T) {
	m, err := New([]Range{{GPA: 0, Size: 1 << 20}, {GPA: 1 << 32, Size: 2 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() != 3<<20 {
		t.Fatalf("size %d", m.Size())
	}
	if err := m.WriteAt([]byte("hi"), 1<<32+5); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2)
	if err := m.ReadAt(p, 1<<32+5); err != nil || string(p) != "hi" {
		t.Fatalf("read back %q, %v", p, err)
	}
	if _, err := New([]Range{{GPA: 0x2000, Size: 0x1000}, {GPA: 0x1000, Size: 0x2000}}); err == nil {
		t.Fatal("overlapping ranges accepted")
	}
}

func TestSliceAllocatesNothing(t *testing.T) {
	m, _ := FromRegions(Region{GPA: 0, Mem: make([]byte, 4096)})
	if n := testing.AllocsPerRun(100, func() { m.Slice(16, 16) }); n != 0 {
		t.Fatalf("Slice allocates %v", n)
	}
}

// A file-backed memory reads the file and keeps the guest's writes to
// itself: the file is unchanged and a second mapping sees the original.
func TestNewFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mem")
	data := make([]byte, 3*4096)
	data[0], data[4096], data[2*4096+1] = 1, 2, 3
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ranges := []Range{{GPA: 0, Size: 4096}, {GPA: 0x10000, Size: 2 * 4096}}
	m, err := NewFromFile(ranges, f)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var b [2]byte
	if err := m.ReadAt(b[:], 0x10000+4096); err != nil || b != [2]byte{0, 3} {
		t.Fatalf("read %v, %v; want the file's bytes at offset 8192", b, err)
	}
	if err := m.WriteAt([]byte{9}, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); got[0] != 1 {
		t.Error("a guest write reached the file")
	}
	m2, err := NewFromFile(ranges, f)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if m2.ReadAt(b[:1], 0); b[0] != 1 {
		t.Errorf("second mapping reads %d, want the file's 1", b[0])
	}
	if _, err := NewFromFile([]Range{{GPA: 0, Size: 4 * 4096}}, f); err == nil {
		t.Error("a file shorter than the ranges was accepted")
	}
}

// Every mapping's host address agrees with its guest-physical address
// modulo 2 MiB, for anonymous RAM and RAM mapped from a file alike, and
// all of it is usable.
func TestRAMAlignedForHugePages(t *testing.T) {
	ranges := []Range{{GPA: 0, Size: 6 << 20}, {GPA: 0x10100000, Size: 3 << 20}, {GPA: 1 << 32, Size: 2 << 20}}
	var total uint64
	for _, r := range ranges {
		total += r.Size
	}
	file := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(file, make([]byte, total), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	anon, err := New(ranges)
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := NewFromFile(ranges, f)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*Memory{"anonymous": anon, "from a file": fromFile} {
		for _, r := range m.Regions() {
			if got, want := hostAddr(r.Mem)%hugePage, uintptr(r.GPA%hugePage); got != want {
				t.Errorf("%s RAM at %#x: host address %#x, %#x into a 2 MiB page, want %#x", name, r.GPA, hostAddr(r.Mem), got, want)
			}
			r.Mem[0], r.Mem[len(r.Mem)-1] = 1, 2
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
	}
}

// Ranges that are not whole pages are refused, anonymous or from a file
// of the right length, before anything is mapped.
func TestNewRejectsPartialPages(t *testing.T) {
	for i, ranges := range [][]Range{
		{{GPA: 0, Size: 4096 + 1}},
		{{GPA: 0x800, Size: 4096}},
		{{GPA: 0, Size: 4096}, {GPA: 0x10000, Size: 100}},
	} {
		if m, err := New(ranges); err == nil || !strings.Contains(err.Error(), "not whole 4 KiB pages") {
			t.Errorf("New(%+v): err %v", ranges, err)
			if m != nil {
				m.Close()
			}
		}
		var total uint64
		for _, r := range ranges {
			total += r.Size
		}
		path := filepath.Join(t.TempDir(), fmt.Sprint("mem", i))
		if err := os.WriteFile(path, make([]byte, total), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if m, err := NewFromFile(ranges, f); err == nil || !strings.Contains(err.Error(), "not whole 4 KiB pages") {
			t.Errorf("NewFromFile(%+v): err %v", ranges, err)
			if m != nil {
				m.Close()
			}
		}
		f.Close()
	}
}
