package guestabi

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      Spec
		wantErr string // "" for success
	}{
		{Spec{Args: []string{"sh", "-c", "exit 3"}, Env: []string{"A=b"}, Out: true}, ""},
		{Spec{Args: []string{"true"}, Dir: "/share"}, ""},
		{Spec{Args: []string{}}, "no command"},
		{Spec{Args: []string{""}}, "no command"},
		{Spec{Args: []string{"true"}, Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
		{Spec{Args: []string{"true"}, Env: []string{"=v"}}, "KEY=VALUE"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "share", Path: "/share"}}, RootTag: "root"}, ""},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "", Path: "/share"}}}, "tag"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "0123456789012345678901234567890123456", Path: "/x"}}}, "tag"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "a,b", Path: "/x"}}}, "tag"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "s", Path: "share"}}}, "mount point"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "s", Path: "/a/../b"}}}, "mount point"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "s", Path: "/"}}}, "mount point"},
		{Spec{Args: []string{"true"}, RootTag: "a\x00b"}, "tag"},
	}
	for _, tt := range tests {
		b, err := EncodeSpec(tt.in)
		if err != nil {
			t.Fatalf("EncodeSpec(%+v): %v", tt.in, err)
		}
		got, err := ParseSpec(b)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ParseSpec(%+v) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, tt.in) {
			t.Errorf("ParseSpec read back %+v, want %+v", got, tt.in)
		}
	}
	good, _ := EncodeSpec(tests[0].in)
	for _, b := range [][]byte{nil, good[:len(good)-1], append(good, 0), []byte(`{"args":["true"]}`)} {
		if _, err := ParseSpec(b); err == nil || !strings.Contains(err.Error(), "job spec") {
			t.Errorf("ParseSpec(%q) = %v, want a job spec error", b, err)
		}
	}
}

// FuzzParseSpec: the guest's init parses whatever arrives at SpecPath. It
// must not panic, and a spec it accepts must survive a round trip.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []Spec{
		{Args: []string{"sh", "-c", "exit 3"}, Env: []string{"A=b"}, Out: true},
		{Args: []string{""}},
		{Args: []string{"x"}, Env: []string{"=", ""}, Mounts: []Mount{{Tag: "t", Path: "/t", ReadOnly: true}}, RootTag: "r"},
	} {
		b, err := EncodeSpec(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		again, err := EncodeSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSpec(again); err != nil {
			t.Fatalf("accepted %q, but not its own encoding %q: %v", b, again, err)
		}
	})
}
