package net

import "testing"

func TestDefaultMAC(t *testing.T) {
	// Expected values computed independently (FNV-1a 32 of the name).
	for _, tc := range []struct {
		name string
		want [6]byte
	}{
		{"tap0", [6]byte{0x52, 0x54, 0x00, 0x4a, 0x63, 0xd6}},
		{"vmm0", [6]byte{0x52, 0x54, 0x00, 0x55, 0xbf, 0xd9}},
		{"", [6]byte{0x52, 0x54, 0x00, 0x1c, 0x9d, 0xc5}},
	} {
		got := DefaultMAC(tc.name)
		if got != tc.want {
			t.Errorf("DefaultMAC(%q) = % x, want % x", tc.name, got, tc.want)
		}
		if got[0]&1 != 0 || got[0]&2 == 0 {
			t.Errorf("DefaultMAC(%q) = % x is not locally administered unicast", tc.name, got)
		}
	}
	if DefaultMAC("tap1") == DefaultMAC("tap2") {
		t.Error("tap1 and tap2 share a MAC")
	}
}
