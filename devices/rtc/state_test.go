package rtc

import (
	"reflect"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	then := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	c := New(func() time.Time { return then })
	c.Write(portIndex, []byte{0x30})
	c.Write(portData, []byte{0x42})
	c.Write(portIndex, []byte{regB})
	s := c.State()
	now := time.Date(2024, 6, 7, 8, 9, 10, 0, time.UTC)
	d := New(func() time.Time { return now })
	if err := d.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := d.State(); !reflect.DeepEqual(got, s) {
		t.Errorf("restored %+v, want %+v", got, s)
	}
	d.Write(portIndex, []byte{0x30})
	var b [1]byte
	d.Read(portData, b[:])
	if b[0] != 0x42 {
		t.Errorf("CMOS RAM byte %#x after restore, want 0x42", b[0])
	}
	if got := d.clk.time(); !got.Equal(now) {
		t.Errorf("restored clock reads %v, want the restoring host's %v", got, now)
	}
}

func TestRestoreRefuses(t *testing.T) {
	for _, s := range []State{{RAM: make([]byte, Size-1)}, {RAM: make([]byte, Size), Index: Size}} {
		if err := New(nil).Restore(s); err == nil {
			t.Errorf("Restore(%d bytes, index %#x) accepted", len(s.RAM), s.Index)
		}
	}
}
