package serial

import (
	"reflect"
	"testing"
)

type levelIRQ struct{ sets []bool }

func (l *levelIRQ) SetLevel(h bool) { l.sets = append(l.sets, h) }

// A UART driven into a non-trivial state (open for receiving, input
// queued, scratch and divisor written) saves and restores to the same
// State, without a spurious interrupt edge.
func TestStateRoundTrip(t *testing.T) {
	u := New(nil, nil)
	for _, w := range [][2]byte{{3, 0x80}, {0, 0x01}, {1, 0x00}, {3, 0x03}, {7, 0x5a}, {4, mcrOUT2 | 0x03}, {1, 0x01}, {2, 0xc7}} {
		u.Write(uint64(w[0]), []byte{w[1]})
	}
	if _, err := u.Receive([]byte("job")); err != nil {
		t.Fatal(err)
	}
	s := u.State()
	if string(s.RX) != "job" || !s.Level {
		t.Fatalf("saved state %+v: want RX %q and the line high", s, "job")
	}
	irq := &levelIRQ{}
	v := New(irq, nil)
	if err := v.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := v.State(); !reflect.DeepEqual(got, s) {
		t.Errorf("restored state\n%+v, want\n%+v", got, s)
	}
	if len(irq.sets) != 0 {
		t.Errorf("restore drove the line %v; the irqchip's state holds it", irq.sets)
	}
	var b [1]byte
	v.Read(0, b[:])
	if b[0] != 'j' {
		t.Errorf("first byte read after restore %q, want 'j'", b[0])
	}
}

func TestRestoreRefusesOversizedInput(t *testing.T) {
	u := New(nil, nil)
	if err := u.Restore(State{RX: make([]byte, RXBufferSize+1)}); err == nil {
		t.Fatal("Restore took more input than the buffer holds")
	}
}
