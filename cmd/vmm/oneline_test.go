package main

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestOneLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"kernel: open /boot/vmlinuz: no such file or directory", "kernel: open /boot/vmlinuz: no such file or directory"},
		{"open a\nb: no such file", `open a\nb: no such file`},
		{"\r\x1b[31mred\x1b[0m\x7f", `\r\x1b[31mred\x1b[0m\x7f`},
		{"tab\there", `tab\there`},
		{"ünïcødé ok, 漢字", "ünïcødé ok, 漢字"},
		{"C1 \u009b2J", `C1 \u009b2J`},
		{"bad \xff\xfe utf-8", `bad \xff\xfe utf-8`},
		{"", ""},
	} {
		if got := oneLine(tc.in); got != tc.want {
			t.Errorf("oneLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := errLine(errors.New("x\ny")); got != `x\ny` {
		t.Errorf("errLine: %q", got)
	}
}

// FuzzOneLine: whatever goes in, one line comes out, with no control
// character, and text without any comes out unchanged.
func FuzzOneLine(f *testing.F) {
	for _, s := range []string{"plain", "a\nb", "\x1b[2J", "\xff", "\u0085", "tab\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := oneLine(s)
		for _, r := range got {
			if isControl(r) {
				t.Fatalf("oneLine(%q) = %q keeps control %U", s, got, r)
			}
		}
		if !utf8.ValidString(s) || strings.ContainsFunc(s, isControl) {
			return
		}
		if got != s {
			t.Fatalf("oneLine(%q) = %q, want it unchanged", s, got)
		}
	})
}
