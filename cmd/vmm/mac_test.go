package main

import (
	"strings"
	"testing"
)

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
		{"5254.0012.3456", [6]byte{}, "six"},
		{"52:54:00:12:34:5g", [6]byte{}, `"5g" is not a hex byte`},
		{"52:54:0x:12:34:56", [6]byte{}, `"0x" is not a hex byte`},
		{" 52:54:00:12:34:5", [6]byte{}, `" 5" is not a hex byte`},
		{"52:54:00:12:34:+5", [6]byte{}, `"+5" is not a hex byte`},
	} {
		got, err := parseMAC(tc.in)
		if tc.errPart == "" {
			if err != nil || got != tc.want {
				t.Errorf("parseMAC(%q) = % x, %v; want % x", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.errPart) || got != ([6]byte{}) {
			t.Errorf("parseMAC(%q) = % x, %v; want an error about %s", tc.in, got, err, tc.errPart)
			continue
		}
		// One line naming the input, for the usage message.
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tc.in) {
			t.Errorf("parseMAC(%q) error %q: want one line naming the input", tc.in, msg)
		}
	}
}
