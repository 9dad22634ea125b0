package runjob

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/vmm-dev/vmm/guestabi"
)

func TestLayerReadsBackWithURootCPIO(t *testing.T) {
	spec := guestabi.Spec{Args: []string{"sh", "-c", "exit 3"}, Env: []string{"A=b"}, Out: true,
		Mounts: []guestabi.Mount{{Tag: guestabi.JobShareTag, Path: guestabi.ShareDir}}}
	b, err := Layer(spec)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var job []byte
	for _, r := range recs {
		names = append(names, r.Name)
		if "/"+r.Name == guestabi.SpecPath {
			if job, err = io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(names, []string{"vmm", strings.TrimPrefix(guestabi.SpecPath, "/")}) {
		t.Errorf("archive holds %q, want the job spec and its directory only", names)
	}
	var s guestabi.Spec
	err = json.Unmarshal(job, &s)
	if err == nil {
		err = s.Validate()
	}
	if err != nil || s.Args[2] != "exit 3" || !s.Out || s.Env[0] != "A=b" || len(s.Mounts) != 1 {
		t.Errorf("spec read back as %+v, %v", s, err)
	}
	if len(b)%4 != 0 {
		t.Errorf("archive length %d not 4-byte aligned", len(b))
	}
}

func TestLayerErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec guestabi.Spec
		want string
	}{
		{"no command", guestabi.Spec{}, "no command"},
		{"bad env", guestabi.Spec{Args: []string{"x"}, Env: []string{"=1"}}, "KEY=VALUE"},
		{"bad mount", guestabi.Spec{Args: []string{"x"}, Mounts: []guestabi.Mount{{Tag: "t", Path: "rel"}}}, "mount point"},
	} {
		if _, err := Layer(tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}
