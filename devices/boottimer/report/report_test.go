package report

import (
	"strings"
	"testing"
)

func TestParseLineErrors(t *testing.T) {
	tests := []struct {
		line   string
		ok     bool
		hasErr bool
	}{
		{"hello", false, false},
		{"boot-timer: ready 1.000ms", true, false},
		{"boot-timer: ready 1.000ms\r\n", true, false},
		{"boot-timer: ready", true, true},
		{"boot-timer: ready 1s", true, true},
		{"boot-timer: ready -1ms", true, true},
		{"boot-timer: ready NaNms", true, true},
		{"boot-timer: ready 1e300ms", true, true},
		{"boot-timer: bogus 1ms", true, true},
	}
	for _, tt := range tests {
		_, ok, err := ParseLine(tt.line)
		if ok != tt.ok || (err != nil) != tt.hasErr {
			t.Errorf("ParseLine(%q) = ok %v, err %v", tt.line, ok, err)
		}
	}
}

// FuzzParseLine feeds ParseLine what a VMM's stderr may hold: it must not
// panic, and a line it accepts must format back to a line that parses to
// the same stamp.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"boot-timer: ready 1.000ms", "boot-timer: guest-0x42 900.000ms", "boot-timer: bogus 1ms", "vmm: hello", "boot-timer: ready 1e300ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, ok, err := ParseLine(line)
		if !ok || err != nil {
			return
		}
		back, ok, err := ParseLine(s.Format())
		if !ok || err != nil || back.Phase != s.Phase {
			t.Fatalf("%q parsed to %+v, formatted %q, parsed back to %+v, %v, %v", line, s, s.Format(), back, ok, err)
		}
		if !strings.HasPrefix(s.Format(), linePrefix) {
			t.Fatalf("Format %q lacks the prefix", s.Format())
		}
	})
}
