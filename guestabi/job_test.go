package guestabi

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestEncodeSpecIsJSON: EncodeSpec's hand-written JSON reads back with
// encoding/json (as the guest reads it) to the same spec, with
// encoding/json's own treatment of invalid UTF-8.
func TestEncodeSpecIsJSON(t *testing.T) {
	for _, s := range []Spec{
		{Args: []string{"true"}},
		{Args: []string{"sh", "-c", "echo \"$1\" \\ done\n\r\t", "\x00\x1f\x7f", "ü€😀\uFFFD"}, Env: []string{"A=b", "C="}, Dir: "/share", Out: true,
			Mounts: []Mount{{Tag: "t", Path: "/t", ReadOnly: true}, {Tag: "u", Path: "/u"}}, RootTag: "r", StdoutPort: true, StderrPipe: true, StdinPort: true},
		{Args: []string{"bad \xff utf-8 \xc3", "\xed\xa0\x80"}},
	} {
		// Byte for byte what encoding/json writes (none of these
		// strings has what it escapes for HTML).
		b := EncodeSpec(s)
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(j) != string(b) {
			t.Errorf("EncodeSpec(%+v) = %s, encoding/json writes %s", s, b, j)
		}
		var got Spec
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("EncodeSpec(%+v) = %s: not JSON: %v", s, b, err)
		}
		// Valid UTF-8 reads back exactly.
		if utf8.ValidString(strings.Join(s.Args, "")) && !reflect.DeepEqual(got, s) {
			t.Errorf("EncodeSpec(%+v) reads back as %+v", s, got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		in      Spec
		wantErr string // "" for success
	}{
		{Spec{Args: []string{"sh", "-c", "exit 3"}, Env: []string{"A=b"}, Out: true}, ""},
		{Spec{Args: []string{}}, "no command"},
		{Spec{Args: []string{""}}, "no command"},
		{Spec{Args: []string{"true"}, Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "a,b", Path: "/x"}}}, "tag"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "s", Path: "/a/../b"}}}, "mount point"},
		{Spec{Args: []string{"true"}, RootTag: "a\x00b"}, "tag"},
		{Spec{Args: []string{"cat", "\xe9t\xe9.txt"}}, "argument 1"},
		{Spec{Args: []string{"cat", "été.txt"}, Dir: "/caf\xe9"}, "working directory"},
		{Spec{Args: []string{"true"}, Env: []string{"A=\xff"}}, "not valid UTF-8"},
		{Spec{Args: []string{"true"}, Mounts: []Mount{{Tag: "s", Path: "/m\xe9"}}}, "mount point"},
	} {
		err := tt.in.Validate()
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%+v) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}
