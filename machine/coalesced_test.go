package machine

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
)

// fakeRing is a coalesced ring holding scripted writes.
type fakeRing struct {
	mu      sync.Mutex
	entries []fakeRunWrite
	err     error
}

type fakeRunWrite struct {
	addr uint64
	data []byte
	pio  bool
}

func (r *fakeRing) Pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries) > 0 || r.err != nil
}

func (r *fakeRing) Drain(f func(addr uint64, data []byte, pio bool)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		f(e.addr, e.data, e.pio)
	}
	r.entries = nil
	return r.err
}

// TestCoalescedWritesServedFirst: a write KVM coalesced (here, PCI's
// CONFIG_ADDRESS selecting the host bridge's ID) is applied before the
// next exit is served, so that exit (a read of CONFIG_DATA) sees it.
func TestCoalescedWritesServedFirst(t *testing.T) {
	tests := []struct {
		name    string
		entries []fakeRunWrite
		want    []byte
	}{
		{"without the write the data port reads all ones", nil, []byte{0xff, 0xff, 0xff, 0xff}},
		{"with it, the host bridge's vendor and device", []fakeRunWrite{{pciConfigPort, []byte{0, 0, 0, 0x80}, true}},
			[]byte{0x86, 0x80, 0x37, 0x12}},
		{"in order: the last CONFIG_ADDRESS wins", []fakeRunWrite{
			{pciConfigPort, []byte{0, 0, 0, 0x80}, true}, {pciConfigPort, []byte{0, 0, 0, 0}, true}},
			[]byte{0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read, buf := ioIn(pciConfigPort+4, 4, 1)
			v := newFakeVCPU(0, read, exitWith(0))
			m, _ := newFakeMachine(t, Config{}, v)
			ring := &fakeRing{entries: tt.entries}
			m.coalesced.ring, m.coalesced.apply = ring, m.applyCoalesced
			if err := runFake(t, m); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if !bytes.Equal(buf, tt.want) {
				t.Errorf("CONFIG_DATA read %#x, want %#x", buf, tt.want)
			}
		})
	}
}

// TestCoalescedRingError: a ring KVM left inconsistent stops the machine
// with an error that says so.
func TestCoalescedRingError(t *testing.T) {
	v := newFakeVCPU(0, ioOut(unclaimedPort, 1, 0), exitWith(0))
	m, _ := newFakeMachine(t, Config{}, v)
	m.coalesced.ring = &fakeRing{err: errors.New("coalesced ring: indices 200 and 0, want below 170")}
	m.coalesced.apply = m.applyCoalesced
	err := runFake(t, m)
	if err == nil || !strings.Contains(err.Error(), "vCPU 0: KVM coalesced ring: indices 200") {
		t.Fatalf("Run: %v, want the ring's error", err)
	}
}
