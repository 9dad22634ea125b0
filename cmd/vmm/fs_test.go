package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/machine"
)

func TestParseFS(t *testing.T) {
	tests := []struct {
		arg     string
		want    machine.Share
		wantErr string
	}{
		{"/srv/data", machine.Share{Dir: "/srv/data", Tag: "data"}, ""},
		{"/srv/data/", machine.Share{Dir: "/srv/data/", Tag: "data"}, ""},
		{"work,tag=ws,ro", machine.Share{Dir: "work", Tag: "ws", ReadOnly: true}, ""},
		{"a,,b,mount_tag=x,readonly=on,rw", machine.Share{Dir: "a,b", Tag: "x"}, ""},
		{"/", machine.Share{}, "tag=NAME"},
		{"/,tag=root", machine.Share{Dir: "/", Tag: "root"}, ""},
		{",tag=x", machine.Share{}, "no directory"},
		{"d,tag=", machine.Share{}, "virtio-fs tag"},
		{"d,tag=" + strings.Repeat("t", 37), machine.Share{}, "virtio-fs tag"},
		{"d,cache=always", machine.Share{}, `unknown option "cache=always"`},
	}
	for _, tt := range tests {
		got, err := parseFS(tt.arg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("parseFS(%q) = %+v, %v; want one line containing %q", tt.arg, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseFS(%q) = %+v, %v; want %+v", tt.arg, got, err, tt.want)
		}
	}
	cfg, _, err := parseArgs([]string{"-kernel", "bz", "-fs", "/a,tag=one", "--fs=/b,ro"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []machine.Share{{Dir: "/a", Tag: "one"}, {Dir: "/b", Tag: "b", ReadOnly: true}}; !reflect.DeepEqual(cfg.Shares, want) {
		t.Errorf("shares %+v, want %+v", cfg.Shares, want)
	}
}

// TestJobShares checks what -share and -rootfs hand the machine and the
// guest: live virtio-fs shares (nothing copied into the initramfs), the
// mount points, and for -rootfs the host's directory, PATH and HOME.
func TestJobShares(t *testing.T) {
	share, root := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "big"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, wd), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/host/bin:/usr/bin")
	t.Setenv("HOME", "/home/ci")
	var cfg machine.Config
	spec := guestabi.Spec{Args: []string{"go", "version"}, Env: []string{"A=b"}}
	if err := addJobShares(&cfg, &spec, options{share: share, rootfs: root}); err != nil {
		t.Fatal(err)
	}
	wantShares := []machine.Share{{Dir: share, Tag: guestabi.JobShareTag}, {Dir: root, Tag: guestabi.JobRootTag, ReadOnly: true}}
	if !reflect.DeepEqual(cfg.Shares, wantShares) {
		t.Errorf("shares %+v, want %+v", cfg.Shares, wantShares)
	}
	if want := []guestabi.Mount{{Tag: guestabi.JobShareTag, Path: guestabi.ShareDir}}; !reflect.DeepEqual(spec.Mounts, want) {
		t.Errorf("mounts %+v, want %+v", spec.Mounts, want)
	}
	if spec.RootTag != guestabi.JobRootTag || spec.Dir != wd {
		t.Errorf("root tag %q, dir %q; want %q and %q", spec.RootTag, spec.Dir, guestabi.JobRootTag, wd)
	}
	if !slices.Equal(spec.Env, []string{"PATH=/host/bin:/usr/bin", "HOME=/home/ci", "A=b"}) {
		t.Errorf("env %q: want the host's PATH and HOME first, then -env", spec.Env)
	}
	if err := spec.Validate(); err != nil {
		t.Errorf("spec does not validate: %v", err)
	}
	var job machine.Config
	j, err := prepareJob(&job, options{command: []string{"true"}, share: share})
	if err != nil {
		t.Fatal(err)
	}
	j.remove()
	if n := len(job.InitrdAppend); n > 64<<10 {
		t.Errorf("initramfs layer %d bytes: -share's 1 MiB file must not be copied into it", n)
	}

	// A root without the current directory: the job starts at /.
	spec = guestabi.Spec{Args: []string{"true"}}
	cfg = machine.Config{}
	if err := addJobShares(&cfg, &spec, options{rootfs: t.TempDir()}); err != nil || spec.Dir != "/" {
		t.Errorf("dir %q, %v; want /", spec.Dir, err)
	}

	for _, o := range []options{{share: filepath.Join(share, "nope")}, {rootfs: filepath.Join(share, "big")}} {
		if err := addJobShares(&machine.Config{}, &guestabi.Spec{Args: []string{"true"}}, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
