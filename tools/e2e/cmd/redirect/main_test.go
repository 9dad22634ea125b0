package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name             string
		args             []string
		timeout          time.Duration
		sig              signalSpec
		stdout, stderr   string
		exit, signal     int
		sent             int
		timedOut, hasErr bool
		threads          []string // commands whose threads the report must describe
	}{
		{name: "streams apart", args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, stdout: "out\n", stderr: "err\n", exit: 3},
		{name: "killed", args: []string{"sh", "-c", "kill -TERM $$"}, exit: -1, signal: int(syscall.SIGTERM)},
		{name: "signal sent", args: []string{"sleep", "10"}, sig: signalSpec{num: int(syscall.SIGTERM), after: 50 * time.Millisecond}, exit: -1, signal: int(syscall.SIGTERM), sent: int(syscall.SIGTERM)},
		{name: "exits before the signal", args: []string{"true"}, sig: signalSpec{num: int(syscall.SIGTERM), after: 10 * time.Second}},
		// -on: the signal waits for the text, which comes in two
		// writes, so it lands after "ready" and before "too late".
		{name: "signal on text", args: []string{"sh", "-c", "printf 'rea' >&2; sleep 0.3; echo dy >&2; sleep 2; echo too late"},
			sig: signalSpec{num: int(syscall.SIGTERM), on: "ready"}, stderr: "ready\n", exit: -1, signal: int(syscall.SIGTERM), sent: int(syscall.SIGTERM)},
		{name: "text never comes", args: []string{"sh", "-c", "echo other >&2"}, sig: signalSpec{num: int(syscall.SIGTERM), on: "ready"}, stderr: "other\n"},
		{name: "timeout", args: []string{"sleep", "10"}, timeout: 50 * time.Millisecond, exit: -1, signal: int(syscall.SIGQUIT), timedOut: true, threads: []string{"sleep"}},
		{name: "no such command", args: []string{"/no/such/command"}, exit: -1, hasErr: true},
		// The sleeps sh started keep the streams open for 3 s after
		// the timeout killed sh; the report comes after ioGrace.
		{name: "timeout with the streams held", args: []string{"sh", "-c", "echo out; sleep 3 & sleep 3"}, timeout: 50 * time.Millisecond,
			stdout: "out\n", exit: -1, signal: int(syscall.SIGQUIT), timedOut: true, threads: []string{"sh", "sleep"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := run(tt.args, tt.timeout, tt.sig, 200*time.Millisecond, progressSpec{})
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("report after %v: redirect waited for streams a process other than CMD held", d)
			}
			if (r.Error != "") != tt.hasErr {
				t.Fatalf("error %q", r.Error)
			}
			if r.Stdout != tt.stdout || r.Stderr != tt.stderr || r.Exit != tt.exit || r.Signal != tt.signal || r.Sent != tt.sent || r.TimedOut != tt.timedOut {
				t.Errorf("got %+v", r)
			}
			if !tt.timedOut && len(r.Threads) > 0 {
				t.Errorf("threads described without a timeout: %q", r.Threads)
			}
			for _, comm := range tt.threads {
				if !slices.ContainsFunc(r.Threads, func(l string) bool { return strings.Contains(l, " "+comm+" state=") }) {
					t.Errorf("no thread of %s in %q", comm, r.Threads)
				}
			}
		})
	}
}

// -progress: the file holds CMD's stdout and stderr byte counts as they
// grow, each version whole, and is gone once CMD has ended; a file that
// cannot be written does not stop the run.
func TestProgress(t *testing.T) {
	tests := []struct {
		name string
		args []string
		dir  string // the file's directory under a temporary one
		want []string
	}{
		{name: "stdout, then stderr", args: []string{"sh", "-c", "sleep 0.3; printf abc; sleep 0.3; printf de >&2; sleep 0.3"},
			want: []string{"0 0\n", "3 0\n", "3 2\n"}},
		{name: "silent", args: []string{"sleep", "0.5"}, want: []string{"0 0\n"}},
		{name: "unwritable", args: []string{"sh", "-c", "printf abc"}, dir: "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.dir, "progress")
			// Read it as the host does, often enough to see each
			// version, until the run is over.
			var seen []string
			stop, stopped := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(stopped)
				for {
					if b, err := os.ReadFile(path); err == nil && (len(seen) == 0 || seen[len(seen)-1] != string(b)) {
						seen = append(seen, string(b))
					}
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			}()
			r := run(tt.args, 0, signalSpec{}, 200*time.Millisecond, progressSpec{path: path, every: 50 * time.Millisecond})
			close(stop)
			<-stopped
			if r.Error != "" || r.Exit != 0 {
				t.Fatalf("run: %+v", r)
			}
			if !slices.Equal(seen, tt.want) {
				t.Errorf("the file held %q in turn, want %q", seen, tt.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("the file is still there after the run: %v", err)
			}
		})
	}
}

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	var r Report
	collect(&r, []string{f, missing}, []string{f}, []string{filepath.Join(dir, "*"), filepath.Join(dir, "x*")})
	if r.Files[f] != "abc" || r.Files[missing] == "" || r.Files[missing][:7] != "error: " {
		t.Errorf("files %q", r.Files)
	}
	// SHA-256 of "abc" (FIPS 180-2, appendix B.1).
	if got := r.SHA256[f]; got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("sha256 %s", got)
	}
	if g := r.Glob[filepath.Join(dir, "*")]; len(g) != 1 || g[0] != f {
		t.Errorf("glob %q", g)
	}
	if g, ok := r.Glob[filepath.Join(dir, "x*")]; !ok || len(g) != 0 {
		t.Errorf("empty glob %q, %v: want an empty list", g, ok)
	}
}
