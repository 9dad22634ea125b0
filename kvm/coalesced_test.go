package kvm

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// put writes entry i of page as KVM's coalesced_mmio_write does.
func put(page []byte, i uint32, addr uint64, data []byte, pio bool) {
	le := binary.LittleEndian
	e := page[ringEntries+int(i)*entrySize:][:entrySize]
	le.PutUint64(e[entryAddr:], addr)
	le.PutUint32(e[entryLen:], uint32(len(data)))
	p := uint32(0)
	if pio {
		p = 1
	}
	le.PutUint32(e[entryPIO:], p)
	copy(e[entryData:], data)
}

func TestCoalescedRing(t *testing.T) {
	le := binary.LittleEndian
	page := make([]byte, 4096)
	r := newCoalescedRing(page)
	if r.max != 170 {
		t.Fatalf("%d entries in a 4 KiB page, want KVM_COALESCED_MMIO_MAX 170", r.max)
	}
	var got []string
	f := func(addr uint64, data []byte, pio bool) { got = append(got, fmt.Sprintf("%#x %x %v", addr, data, pio)) }

	if r.Pending() {
		t.Error("an empty ring is pending")
	}
	// Two entries across the wrap: slots 169 and 0.
	le.PutUint32(page[ringFirst:], 169)
	put(page, 169, 0xcf8, []byte{0x00, 0x10, 0x00, 0x80}, true)
	put(page, 0, 0x70, []byte{0x0a}, true)
	le.PutUint32(page[ringLast:], 1)
	if !r.Pending() {
		t.Fatal("a ring with two entries is not pending")
	}
	if err := r.Drain(f); err != nil {
		t.Fatal(err)
	}
	if want := "0xcf8 00100080 true|0x70 0a true"; strings.Join(got, "|") != want {
		t.Errorf("drained %q, want %q", strings.Join(got, "|"), want)
	}
	if first := le.Uint32(page[ringFirst:]); first != 1 || r.Pending() {
		t.Errorf("first %d after draining, want 1 (= last)", first)
	}

	for _, tc := range []struct {
		name        string
		first, last uint32
		n           uint32
		want        string
	}{
		{"first out of range", 170, 0, 1, "indices 170 and 0"},
		{"last out of range", 0, 4000, 1, "indices 0 and 4000"},
		{"entry too long", 5, 6, 9, "entry 5 is 9 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := make([]byte, 4096)
			le.PutUint32(page[ringFirst:], tc.first)
			le.PutUint32(page[ringLast:], tc.last)
			if tc.first < 170 {
				le.PutUint32(page[ringEntries+int(tc.first)*entrySize+entryLen:], tc.n)
			}
			calls := 0
			err := newCoalescedRing(page).Drain(func(uint64, []byte, bool) { calls++ })
			if err == nil || !strings.Contains(err.Error(), tc.want) || calls != 0 {
				t.Errorf("Drain: %v after %d entries, want an error with %q before any", err, calls, tc.want)
			}
		})
	}
}

// FuzzCoalescedRing drains arbitrary ring pages: no panic, no entry
// longer than its data field, at most one lap.
func FuzzCoalescedRing(f *testing.F) {
	page := make([]byte, 4096)
	binary.LittleEndian.PutUint32(page[ringLast:], 2)
	put(page, 0, 0xcf8, []byte{1, 2, 3, 4}, true)
	put(page, 1, 0x70, []byte{9}, true)
	f.Add(page[:64], uint32(0), uint32(2))
	f.Fuzz(func(t *testing.T, head []byte, first, last uint32) {
		page := make([]byte, 4096)
		copy(page, head)
		binary.LittleEndian.PutUint32(page[ringFirst:], first)
		binary.LittleEndian.PutUint32(page[ringLast:], last)
		r := newCoalescedRing(page)
		calls := 0
		err := r.Drain(func(_ uint64, data []byte, _ bool) {
			calls++
			if len(data) > entryMax {
				t.Fatalf("%d bytes of data", len(data))
			}
		})
		if calls > int(r.max) {
			t.Fatalf("%d entries from a %d-entry ring", calls, r.max)
		}
		if err == nil && r.Pending() && first < r.max && last < r.max {
			t.Fatalf("Drain returned with entries pending (first %d, last %d)", first, last)
		}
	})
}
