package outtar

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/runjob"
)

// TestHelperMain runs the -out helper's main in this process: its
// status and its result lines for each way it can end, vmm's word given
// (or not) on a pipe as vmm gives it.
func TestHelperMain(t *testing.T) {
	var one bytes.Buffer
	tw := tar.NewWriter(&one)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Flush()
	args := func(dir string, more ...string) []string {
		return append([]string{"--wire", runjob.OutWire, "--dir", dir, "--bytes", "1048576"}, more...)
	}
	for _, tt := range []struct {
		name    string
		args    func(dir string) []string
		disk    func(stop func()) io.Reader
		noWord  bool  // vmm ends without asking
		confine error // what confine returns
		status  int
		results string // a regexp
		files   []string
		partial bool // what was unpacked before a stop stays
	}{
		{name: "unpacked", args: func(d string) []string { return args(d) },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\ndone 1\n$`, files: []string{"a"}},
		{name: "a skipped entry", args: func(d string) []string { return args(d) },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "p\nq", typ: tar.TypeFifo}, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\nwarn "-out: p\\nq: skipped: a FIFO"\ndone 1\n$`, files: []string{"a"}},
		{name: "never asked", args: func(d string) []string { return args(d) }, noWord: true,
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\n$`},
		{name: "a hostile name", args: func(d string) []string { return args(d) },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "../x", body: "b", typ: tar.TypeReg}))
			},
			status: 1, results: `^ready\nfail "-out: guest output archive: unsafe name \\"../x\\""\n$`},
		{name: "stopped by vmm", args: func(d string) []string { return args(d) },
			disk:   func(stop func()) io.Reader { return &endless{body: one.Bytes(), cancelAt: 64 << 10, cancel: stop} },
			status: 1, results: `^ready\nstopped [0-9]+\n$`, partial: true},
		{name: "no byte budget", args: func(d string) []string { return args(d)[:4] },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "a", body: "bb", typ: tar.TypeReg}))
			},
			status: 2, results: `^fail "-out: vmm-unpack out: no --bytes \(it is started by vmm, not by hand\)"\n$`},
		{name: "another build", args: func(d string) []string { return []string{"--wire", "out-0", "--dir", d, "--bytes", "1"} },
			disk:   func(func()) io.Reader { return bytes.NewReader(nil) },
			status: 2, results: `^fail "-out: vmm-unpack out: another wire version: vmm speaks \\"out-0\\", this helper \\"out-2\\": vmm and vmm-unpack come from different builds"\n$`},
		{name: "unknown argument", args: func(d string) []string { return args(d, "--x", "1") },
			disk:   func(func()) io.Reader { return bytes.NewReader(nil) },
			status: 2, results: `^fail "-out: vmm-unpack out: unknown argument \\"--x\\"`},
		{name: "no value", args: func(d string) []string { return args(d, "--dir") },
			disk:   func(func()) io.Reader { return bytes.NewReader(nil) },
			status: 2, results: `^fail "-out: vmm-unpack out: --dir needs a value`},
		{name: "no confinement", args: func(d string) []string { return args(d) }, confine: errors.New("sandbox: no seccomp"),
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 1, results: `^fail "-out: vmm-unpack: sandbox: no seccomp"\n$`},
		{name: "confinement declined", args: func(d string) []string { return args(d, "--no-sandbox") }, confine: errors.New("not called"),
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\ndone 1\n$`, files: []string{"a"}},
		{name: "a long link target", args: func(d string) []string { return args(d) },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: "l", typ: tar.TypeSymlink, link: "/" + strings.Repeat("\xff", 1<<16)}, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\nwarn "-out: l: skipped: a symbolic link to \\"/(\\\\xff){99}\\"..., which leads out of the output directory"\ndone 1\n$`, files: []string{"a"}},
		{name: "a long message", args: func(d string) []string { return args(d) },
			disk: func(func()) io.Reader {
				return bytes.NewReader(tarOf(t, entry{name: strings.Repeat("\xff", 1000), typ: tar.TypeFifo}, entry{name: "a", body: "b", typ: tar.TypeReg}))
			},
			status: 0, results: `^ready\nwarn "-out: (\\xff){1000}: skipped: a FIFO"\ndone 1\n$`, files: []string{"a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			ctlR, ctlW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer ctlR.Close()
			if tt.noWord {
				ctlW.Close()
			} else {
				ctlW.Write([]byte{1})
				defer ctlW.Close()
			}
			var results bytes.Buffer
			done := make(chan int)
			go func() {
				done <- HelperMain(tt.args(dir), tt.disk(func() { ctlW.Close() }), &results, ctlR, func() error { return tt.confine })
			}()
			var status int
			select {
			case status = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("HelperMain did not return within 30s")
			}
			if status != tt.status || !regexp.MustCompile(tt.results).MatchString(results.String()) {
				t.Errorf("status %d, results %q; want %d, %s", status, results.String(), tt.status, tt.results)
			}
			for _, f := range tt.files {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("not unpacked: %v", err)
				}
			}
			if tt.files == nil && !tt.partial {
				if ents, _ := os.ReadDir(dir); len(ents) > 0 {
					t.Errorf("unpacked %d entries, want none", len(ents))
				}
			}
		})
	}
}

// A message longer than runjob.MaxOutMessage is cut, and any message is
// one quoted line.
func TestSay(t *testing.T) {
	for _, tt := range []struct{ msg, want string }{
		{"plain", `warn "plain"` + "\n"},
		{"two\nlines", `warn "two\nlines"` + "\n"},
		{strings.Repeat("x", runjob.MaxOutMessage), `warn "` + strings.Repeat("x", runjob.MaxOutMessage) + `"` + "\n"},
		{strings.Repeat("x", runjob.MaxOutMessage+1), `warn "` + strings.Repeat("x", runjob.MaxOutMessage-3) + `..."` + "\n"},
	} {
		var b bytes.Buffer
		say(&b, runjob.OutWarn, tt.msg)
		if b.String() != tt.want {
			t.Errorf("say(%.20q...) = %.60q..., want %.60q...", tt.msg, b.String(), tt.want)
		}
	}
}
