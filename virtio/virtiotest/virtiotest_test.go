package virtiotest

import (
	"errors"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/virtio"
)

func TestMemSlice(t *testing.T) {
	m := NewMem(0x1000, 0x100)
	tests := []struct {
		addr, n uint64
		ok      bool
	}{
		{0x1000, 0x100, true},
		{0x1000, 0, true},
		{0x10ff, 1, true},
		{0x10ff, 2, false},
		{0x1100, 0, false}, // like guestmem: the address itself must be RAM
		{0xfff, 1, false},
		{0, 0, false},
		{0x1080, ^uint64(0), false},
		{^uint64(0), 2, false},
	}
	for _, tc := range tests {
		b, err := m.Slice(tc.addr, tc.n)
		if (err == nil) != tc.ok {
			t.Errorf("Slice(%#x, %#x) = %v, want ok=%v", tc.addr, tc.n, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Slice(%#x, %#x) error %v does not wrap ErrOutOfRange", tc.addr, tc.n, err)
			}
			continue
		}
		if uint64(len(b)) != tc.n || uint64(cap(b)) != tc.n || !m.IsAt(b, tc.addr) {
			t.Errorf("Slice(%#x, %#x): len %d cap %d", tc.addr, tc.n, len(b), cap(b))
		}
	}
}

func TestMemGuards(t *testing.T) {
	m := NewMem(0, 16)
	if err := m.CheckGuards(); err != nil {
		t.Fatal(err)
	}
	clear(m.RAM())
	if err := m.CheckGuards(); err != nil {
		t.Fatalf("writing all of RAM tripped a guard: %v", err)
	}
	m.whole[guardLen+16] = 0
	if m.CheckGuards() == nil {
		t.Fatal("a write just past RAM went unnoticed")
	}
	m = NewMem(0, 16)
	m.whole[guardLen-1] = 0
	if m.CheckGuards() == nil {
		t.Fatal("a write just below RAM went unnoticed")
	}
}

func TestMemContains(t *testing.T) {
	m := NewMem(0x1000, 64)
	other := make([]byte, 8)
	switch {
	case !m.Contains(m.Bytes(0x1008, 8)):
		t.Error("Contains missed a slice of RAM")
	case m.Contains(other):
		t.Error("Contains accepted foreign memory")
	case m.Contains(m.whole[guardLen-1 : guardLen+1]):
		t.Error("Contains accepted a slice starting in the guard")
	case m.IsAt(m.Bytes(0x1008, 8), 0x1009):
		t.Error("IsAt accepted the wrong address")
	}
}

func TestNewDriverBounds(t *testing.T) {
	m := NewMem(0x1000, 0x1000)
	if _, err := NewDriver(m, 16, 0x1000, 0x1000); err == nil {
		t.Error("driver whose data area passes the end of RAM was accepted")
	}
	if _, err := NewDriver(m, 16, 0, 0); err == nil {
		t.Error("driver below RAM was accepted")
	}
	d, err := NewDriver(m, 16, 0x1001, 0x100)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	if c.Desc%16 != 0 || c.Avail%2 != 0 || c.Used%4 != 0 || c.Desc < 0x1001 || d.End() > m.End() {
		t.Errorf("layout %+v, end %#x", c, d.End())
	}
}

// A long run with out-of-order completion must recycle descriptors and
// data, and report ErrNoSpace only when the queue is really full.
func TestDriverRecycles(t *testing.T) {
	m := NewMem(0x10000, 64<<10)
	d, err := NewDriver(m, 8, 0x10000, 1024)
	if err != nil {
		t.Fatal(err)
	}
	q := virtio.NewQueue(8)
	if err := q.Setup(m, d.Config(), false, true); err != nil {
		t.Fatal(err)
	}
	var c virtio.Chain
	for round := range 2000 {
		var heads []uint16
		for k := range 3 {
			var h uint16
			var err error
			if k == 1 {
				h, err = d.AddIndirect(R([]byte{byte(round)}), W(100))
			} else {
				h, err = d.Add(R([]byte{byte(round)}), W(100))
			}
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			heads = append(heads, h)
		}
		for range heads {
			if ok, err := q.Pop(&c); !ok || err != nil {
				t.Fatalf("round %d: Pop = %v, %v", round, ok, err)
			}
			c.Writable[0][0] = byte(c.Head)
		}
		// Complete the last chain first.
		for i := len(heads) - 1; i >= 0; i-- {
			q.Push(heads[i], 1)
		}
		for i := len(heads) - 1; i >= 0; i-- {
			h, n, ok := d.Used()
			if !ok || h != heads[i] || n != 1 || d.Written(h)[0][0] != byte(h) {
				t.Fatalf("round %d: Used = %d, %d, %v", round, h, n, ok)
			}
		}
		if d.Outstanding() != 0 || d.Free() != 8 {
			t.Fatalf("round %d: %d outstanding, %d free", round, d.Outstanding(), d.Free())
		}
	}
	// Full: 8 descriptors, then nothing.
	for range 4 {
		if _, err := d.Add(R([]byte{1}), W(1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Add(R([]byte{1})); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Add to a full queue = %v, want ErrNoSpace", err)
	}
	if _, err := d.AddIndirect(W(2000)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Add larger than the data area = %v, want ErrNoSpace", err)
	}
}

func TestNotifier(t *testing.T) {
	n := NewNotifier()
	n.Signal()
	n.Notify()
	if err := n.Wait(); err != nil {
		t.Fatal(err)
	}
	// Both notifications coalesced into one Wait.
	done := make(chan error, 1)
	go func() { done <- n.Wait() }()
	if !n.Idle(5 * time.Second) {
		t.Fatal("worker never went idle")
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v without a notification", err)
	default:
	}
	n.Signal()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n.Idle(10 * time.Millisecond) {
		t.Fatal("Idle with nobody waiting")
	}
	go func() { done <- n.Wait() }()
	n.Idle(5 * time.Second)
	n.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close = %v", err)
	}
	n.Signal()
	if err := n.Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait on a closed notifier with a signal pending = %v", err)
	}
	if n.Signals() != 4 {
		t.Fatalf("Signals = %d, want 4", n.Signals())
	}
}

func TestInterrupt(t *testing.T) {
	i := NewInterrupt()
	if i.Wait(time.Millisecond) {
		t.Fatal("Wait before any Trigger")
	}
	if a := testing.AllocsPerRun(100, i.Trigger); a != 0 {
		t.Fatalf("Trigger allocates %v", a)
	}
	if i.Count() != 101 { // AllocsPerRun runs once more to warm up
		t.Fatalf("Count = %d, want 101", i.Count())
	}
	if !i.Wait(time.Second) || i.Wait(time.Millisecond) {
		t.Fatal("triggers did not coalesce into one Wait")
	}
	go i.Trigger()
	if !i.Wait(5 * time.Second) {
		t.Fatal("Wait missed a Trigger")
	}
}

func TestNotifierAllocatesNothing(t *testing.T) {
	n := NewNotifier()
	a := testing.AllocsPerRun(100, func() {
		n.Signal()
		if n.Wait() != nil {
			panic("closed")
		}
	})
	if a != 0 {
		t.Fatalf("Signal+Wait allocate %v", a)
	}
}
