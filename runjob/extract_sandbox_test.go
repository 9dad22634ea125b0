//go:build linux && amd64 && !race

package runjob

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/sandbox"
)

// sandboxedEnv makes this test binary extract an archive under vmm's
// seccomp filter for -out (TestExtractSandboxed), as vmm does once the
// guest has stopped. Not under the race detector, whose runtime makes
// calls the filter denies.
const sandboxedEnv = "VMM_RUNJOB_SANDBOXED_EXTRACT"

func init() {
	if name := os.Getenv(sandboxedEnv); name != "" {
		os.Exit(sandboxedExtract(name, os.Getenv(sandboxedEnv+"_DIR")))
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
	}
}

func sandboxedExtract(name, dir string) int {
	data := sandboxedArchives(nil)[name]
	// vmm has Go's network poller running long before its sandbox (its
	// eventfds and terminal); a pipe starts it here too.
	if r, w, err := os.Pipe(); err == nil {
		defer r.Close()
		defer w.Close()
	}
	if err := sandbox.Install(sandbox.Options{Extract: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	n, err := Extract(context.Background(), bytes.NewReader(data), dir, DefaultLimits(1<<20), func(m string) { fmt.Println(m) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	fmt.Printf("extracted %d\n", n)
	return 0
}

// Extract works under the sandbox vmm runs it in, through symbolic links
// the archive made or the output directory already had: os.Root reads
// a link with readlinkat, which the filter once denied, killing vmm
// with the job's output half written.
func TestExtractSandboxed(t *testing.T) {
	for name := range sandboxedArchives(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if name == "reused-dir" {
				os.Mkdir(filepath.Join(dir, "v1"), 0o755)
				os.Symlink("v1", filepath.Join(dir, "latest"))
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), sandboxedEnv+"="+name, sandboxedEnv+"_DIR="+dir)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err != nil || !strings.Contains(stdout.String(), "extracted") {
				t.Fatalf("%v; stdout %q, stderr %q", err, stdout.String(), stderr.String())
			}
		})
	}
}
