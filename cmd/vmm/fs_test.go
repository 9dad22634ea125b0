package main

import (
	"bytes"
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
		{"/srv/data", machine.Share{Dir: "/srv/data", Tag: "data", Flag: "-fs"}, ""},
		{"/srv/data/", machine.Share{Dir: "/srv/data/", Tag: "data", Flag: "-fs"}, ""},
		{"work,tag=ws,ro", machine.Share{Dir: "work", Tag: "ws", ReadOnly: true, Flag: "-fs"}, ""},
		{"a,,b,mount_tag=x,readonly=off", machine.Share{Dir: "a,b", Tag: "x", Flag: "-fs"}, ""},
		{"a,mount_tag=x,readonly=on,rw", machine.Share{}, `"rw" after "readonly=on"`},
		{"a,ro,ro", machine.Share{}, "say once whether the share is read-only"},
		{"/", machine.Share{}, "tag=NAME"},
		{"/,tag=root", machine.Share{Dir: "/", Tag: "root", Flag: "-fs"}, ""},
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
	if want := []machine.Share{{Dir: "/a", Tag: "one", Flag: "-fs"}, {Dir: "/b", Tag: "b", ReadOnly: true, Flag: "-fs"}}; !reflect.DeepEqual(cfg.Shares, want) {
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
	wantShares := []machine.Share{{Dir: share, Tag: guestabi.JobShareTag, Flag: "-share"}, {Dir: root, Tag: guestabi.JobRootTag, ReadOnly: true, Flag: "-rootfs"}}
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

// TestJobInputPortFits: piped input gets the job its input port only
// where the port fits beside the VM's other virtio devices; otherwise the
// spec says so too, and the input takes the serial port.
func TestJobInputPortFits(t *testing.T) {
	for _, tc := range []struct {
		disks    int
		stdin    bool
		wantPort bool
	}{
		{0, true, true},
		{6, true, true}, // 6 disks, the output port and the input port: 8
		{7, true, false},
		{0, false, false},
	} {
		cfg := machine.Config{JobOutput: io.Discard, Disks: make([]machine.Disk, tc.disks)}
		j, err := prepareJob(&cfg, options{command: []string{"true"}, stdinPort: tc.stdin})
		if err != nil {
			t.Fatal(err)
		}
		j.remove()
		inSpec := bytes.Contains(cfg.InitrdAppend, []byte(`"stdin_port":true`))
		if cfg.JobInputPort != tc.wantPort || inSpec != tc.wantPort {
			t.Errorf("%d disks, piped %v: input port %v, in the spec %v; want %v", tc.disks, tc.stdin, cfg.JobInputPort, inSpec, tc.wantPort)
		}
	}
}

// TestPipedInput: pipes, sockets and files take the job's input port;
// character devices (/dev/null, a terminal) do not.
func TestPipedInput(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		want bool
	}{{"pipe", r, true}, {"file", file, true}, {"/dev/null", null, false}} {
		if got := pipedInput(tc.f); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
