package net

import (
	"strings"
	"testing"
)

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

func TestParseMAC(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    [6]byte
		errPart string
	}{
		{"52:54:00:12:34:56", [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}, ""},
		{"02:AB:cd:EF:00:01", [6]byte{0x02, 0xab, 0xcd, 0xef, 0, 1}, ""},
		{"00:00:00:00:00:01", [6]byte{0, 0, 0, 0, 0, 1}, ""},
		{"01:00:5e:00:00:01", [6]byte{}, "multicast"},
		{"ff:ff:ff:ff:ff:ff", [6]byte{}, "multicast"},
		{"00:00:00:00:00:00", [6]byte{}, "all-zero"},
		{"", [6]byte{}, "six"},
		{"52:54:00:12:34", [6]byte{}, "six"},
		{"52:54:00:12:34:56:78", [6]byte{}, "six"},
		{"52-54-00-12-34-56", [6]byte{}, "':'"},
		{"525400123456abcde", [6]byte{}, "':'"},
		{"52:54:00:12:34:5g", [6]byte{}, "hex"},
		{"52:54:0x:12:34:56", [6]byte{}, "hex"},
		{" 52:54:00:12:34:5", [6]byte{}, "hex"},
	} {
		got, err := ParseMAC(tc.in)
		if tc.errPart == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseMAC(%q) = % x, %v; want % x", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.errPart) || got != ([6]byte{}) {
			t.Errorf("ParseMAC(%q) = % x, %v; want an error about %s", tc.in, got, err, tc.errPart)
		}
	}
}
