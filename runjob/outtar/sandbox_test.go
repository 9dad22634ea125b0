//go:build linux && amd64 && !race

package outtar

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/runjob"
)

// sandboxedEnv makes this test binary the -out helper, HelperMain under
// the filter it confines itself with (TestExtractSandboxed), as
// vmm-unpack is. Not under the race detector, whose runtime makes calls
// the filter denies.
const sandboxedEnv = "VMM_OUTTAR_SANDBOXED_EXTRACT"

func init() {
	if os.Getenv(sandboxedEnv) != "" {
		os.Exit(sandboxedExtract(os.Getenv(sandboxedEnv + "_DIR")))
	}
}

// sandboxedArchives are the archives TestExtractSandboxed extracts; each
// goes through a symbolic link, which os.Root resolves with readlinkat.
func sandboxedArchives(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"plain":        tarOf(t, entry{name: "d/f", body: "x", typ: tar.TypeReg}),
		"through-link": tarOf(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "s", typ: tar.TypeSymlink, link: "d"}, entry{name: "s/f", body: "x", typ: tar.TypeReg}),
		"link-in-link": tarOf(t, entry{name: "d/", typ: tar.TypeDir}, entry{name: "s", typ: tar.TypeSymlink, link: "d"}, entry{name: "s/l", typ: tar.TypeSymlink, link: "x"}),
		// An output directory reused from an earlier run, where latest
		// was a link to v1.
		"reused-dir": tarOf(t, entry{name: "latest/f", body: "x", typ: tar.TypeReg}),
		// A skipped entry's warning goes out under the filter too.
		"fifo": tarOf(t, entry{name: "p", typ: tar.TypeFifo}, entry{name: "f", body: "x", typ: tar.TypeReg}),
	}
}

// sandboxedExtract is the helper as vmm-unpack runs it: the disk on
// stdin, the control pipe on descriptor 3.
func sandboxedExtract(dir string) int {
	args := []string{"--wire", runjob.OutWire, "--dir", dir, "--bytes", "1048576"}
	return HelperMain(args, os.Stdin, os.Stdout, os.NewFile(3, "control"), Confine)
}

// HelperMain works under the sandbox it confines itself with, through
// symbolic links the archive made or the output directory already had:
// os.Root reads a link with readlinkat, which vmm's filter once denied,
// killing vmm with the job's output half written.
func TestExtractSandboxed(t *testing.T) {
	for name := range sandboxedArchives(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if name == "reused-dir" {
				os.Mkdir(filepath.Join(dir, "v1"), 0o755)
				os.Symlink("v1", filepath.Join(dir, "latest"))
			}
			disk, err := os.Create(filepath.Join(t.TempDir(), "out.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer disk.Close()
			disk.Write(sandboxedArchives(t)[name])
			disk.Seek(0, io.SeekStart)
			ctlR, ctlW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer ctlW.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), sandboxedEnv+"=1", sandboxedEnv+"_DIR="+dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdin, cmd.Stdout, cmd.Stderr = disk, &stdout, &stderr
			cmd.ExtraFiles = []*os.File{ctlR}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ctlR.Close()
			ctlW.Write([]byte{1})
			err = cmd.Wait()
			if err != nil || !regexp.MustCompile("(^|\n)"+runjob.OutDone+" [1-9]\n$").MatchString(stdout.String()) {
				t.Fatalf("%v; stdout %q, stderr %q", err, stdout.String(), stderr.String())
			}
			if name == "fifo" && !strings.HasPrefix(stdout.String(), runjob.OutReady+"\n"+runjob.OutWarn+` "-out: p: skipped: a FIFO"`) {
				t.Errorf("stdout %q, want the FIFO's warning first", stdout.String())
			}
		})
	}
}
