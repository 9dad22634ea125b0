package exitport

import "testing"

func TestFirstStatusWins(t *testing.T) {
	var got []uint8
	d := New(func(s uint8) { got = append(got, s) })
	d.Write(1, []byte{9}) // not the port's offset: ignored
	d.Write(0, nil)       // empty: ignored
	d.Write(0, []byte{3, 0xff})
	d.Write(0, []byte{4})
	if len(got) != 1 || got[0] != 3 {
		t.Fatalf("reported %v, want [3]", got)
	}
	b := []byte{0xaa, 0xbb}
	d.Read(0, b)
	if b[0] != 0 || b[1] != 0 {
		t.Errorf("read %x, want zeros", b)
	}
}
