package jobspec

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guestabi"
)

func TestParse(t *testing.T) {
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
		_, err := Parse([]byte(tt.in))
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

// TestReadsEncodeSpec: what vmm writes (guestabi.EncodeSpec) is what the
// guest reads back.
func TestReadsEncodeSpec(t *testing.T) {
	want := guestabi.Spec{Args: []string{"sh", "-c", "echo \"$1\"\tdone\n", "\x01ü"}, Env: []string{"A=b"}, Dir: "/share", Out: true,
		Mounts: []guestabi.Mount{{Tag: "t", Path: "/t", ReadOnly: true}, {Tag: "u", Path: "/u"}}, RootTag: "r", StdoutPort: true, StderrPipe: true, StdinPort: true}
	got, err := Parse(guestabi.EncodeSpec(want))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse(EncodeSpec(%+v)) = %+v, %v", want, got, err)
	}
}

// FuzzParse: the guest's init parses whatever arrives at SpecPath. It
// must not panic, and a spec it accepts must read back the same from
// vmm's encoding of it.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"args":["sh","-c","exit 3"],"env":["A=b"],"out":true}`))
	f.Add([]byte(`{"args":[""]}`))
	f.Add([]byte(`{"args":["x"],"env":["=",""],"mounts":[{"tag":"t","path":"/t","ro":true}],"root_tag":"r"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		again, err := Parse(guestabi.EncodeSpec(s))
		if err != nil {
			t.Fatalf("accepted %q, but not vmm's encoding of it %s: %v", b, guestabi.EncodeSpec(s), err)
		}
		if !reflect.DeepEqual(normal(again), normal(s)) {
			t.Fatalf("%q read back as %+v from vmm's encoding, want %+v", b, again, s)
		}
	})
}

// normal makes empty and nil slices alike, as JSON's omitempty does.
func normal(s guestabi.Spec) guestabi.Spec {
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Mounts) == 0 {
		s.Mounts = nil
	}
	if len(s.Args) == 0 {
		s.Args = nil
	}
	return s
}
