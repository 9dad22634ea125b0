package i8042

import (
	"reflect"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	c := New(nil)
	c.Write(4, []byte{0x60}) // write command byte: waits for its data
	s := c.State()
	if s.Pending == 0 {
		t.Fatalf("state %+v: want a pending command", s)
	}
	d := New(nil)
	if err := d.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := d.State(); !reflect.DeepEqual(got, s) {
		t.Errorf("restored %+v, want %+v", got, s)
	}
	if err := d.Restore(State{RAM: []byte{1}}); err == nil {
		t.Error("Restore took a short RAM")
	}
}
