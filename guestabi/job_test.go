package guestabi

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // "" for success
	}{
		{`{"args":["sh","-c","exit 3"],"env":["A=b"],"out":true}`, ""},
		{`{"args":["true"],"dir":"/share"}`, ""},
		{`{"args":[]}`, "no command"},
		{`{"args":[""]}`, "no command"},
		{`{"args":["true"],"env":["NOEQUALS"]}`, "KEY=VALUE"},
		{`{"args":["true"],"env":["=v"]}`, "KEY=VALUE"},
		{`{"args":`, "job spec"},
		{`{"args":["true"],"mounts":[{"tag":"share","path":"/share"}],"root_tag":"root"}`, ""},
		{`{"args":["true"],"mounts":[{"tag":"","path":"/share"}]}`, "tag"},
		{`{"args":["true"],"mounts":[{"tag":"0123456789012345678901234567890123456","path":"/x"}]}`, "tag"},
		{`{"args":["true"],"mounts":[{"tag":"a,b","path":"/x"}]}`, "tag"},
		{`{"args":["true"],"mounts":[{"tag":"s","path":"share"}]}`, "mount point"},
		{`{"args":["true"],"mounts":[{"tag":"s","path":"/a/../b"}]}`, "mount point"},
		{`{"args":["true"],"mounts":[{"tag":"s","path":"/"}]}`, "mount point"},
		{`{"args":["true"],"root_tag":"a\u0000b"}`, "tag"},
		{``, "job spec"},
	}
	for _, tt := range tests {
		_, err := ParseSpec([]byte(tt.in))
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ParseSpec(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

// FuzzParseSpec: the guest's init parses whatever arrives at SpecPath. It
// must not panic, and a spec it accepts must survive a JSON round trip.
func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"args":["sh","-c","exit 3"],"env":["A=b"],"out":true}`))
	f.Add([]byte(`{"args":[""]}`))
	f.Add([]byte(`{"args":["x"],"env":["=",""]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSpec(js); err != nil {
			t.Fatalf("accepted %q, but not its own encoding %s: %v", b, js, err)
		}
	})
}
