package main

import "testing"

func TestParseHistLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		key  string
		n    int64
		ok   bool
	}{
		{"{ exit_reason:        123 } hitcount:      45173", "123", 45173, true},
		{"{ port:       1016, rw:          1 } hitcount:      22488", "1016/1", 22488, true},
		{"{ gpa: 3489661024, type:          0 } hitcount:        275", "3489661024/0", 275, true},
		{"# event histogram", "", 0, false},
		{"Totals:", "", 0, false},
		{"    Hits: 12", "", 0, false},
		{"{ port: 1 } hitcount: x", "", 0, false},
	} {
		key, n, ok := parseHistLine(tc.line)
		if key != tc.key || n != tc.n || ok != tc.ok {
			t.Errorf("parseHistLine(%q) = %q, %d, %v; want %q, %d, %v", tc.line, key, n, ok, tc.key, tc.n, tc.ok)
		}
	}
}
