// Command redirect runs a command inside the nested suite's L1 guest and
// reports what the end-to-end tests cannot see through the harness: the
// command's stdout and stderr apart (a job's console and nested.L1.Exec
// both merge them), whether it exited or was killed, and files it left
// behind.
//
//	redirect [-timeout D] [-signal N [-on TEXT] -after D] [-progress FILE] [-cat FILE]... [-sha256 FILE]... [-glob PATTERN]... -- CMD ARGS...
//
// It prints one JSON object (Report) on stdout once CMD has ended and
// exits with CMD's status (128+N if a signal killed it). -signal sends
// signal N to CMD after the given delay: in L1 there is no shell to do
// it, and sending it from the host through the harness adds seconds of
// emulated latency to an already emulated boot. With -on the delay counts
// from the moment CMD's stderr first contains TEXT, so a test can signal
// at a point in CMD's progress rather than at a time, which an emulated
// machine's speed makes a guess. -timeout describes CMD's threads from
// /proc, then sends SIGQUIT (a Go program prints its goroutines), then
// SIGKILL, so a hung command still yields a report with the evidence.
// -progress rewrites FILE with how many bytes CMD has written to its
// stdout and stderr ("OUT ERR\n") whenever that grows, checked every
// second, and removes it at the end: the host reads it while CMD runs
// (package nested, ExecWatch) to tell a run that stalled from one that
// is slow, which the report, printed at the end, cannot.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/tools/procthreads"
)

// Report is what redirect prints.
type Report struct {
	Args   []string `json:"args"`
	Stdout string   `json:"stdout"`
	Stderr string   `json:"stderr"`
	// Exit is CMD's exit status, or -1 when a signal ended it; Signal is
	// that signal, 0 otherwise.
	Exit   int `json:"exit"`
	Signal int `json:"signal"`
	// Sent is the signal -signal delivered, 0 if none was (CMD ended
	// first); TimedOut says -timeout had to stop CMD.
	Sent      int     `json:"sent,omitempty"`
	TimedOut  bool    `json:"timed_out,omitempty"`
	ElapsedMS float64 `json:"elapsed_ms"`
	// Threads describes CMD's threads and its descendants' when -timeout
	// ran out, before the SIGQUIT (see threads.go).
	Threads []string `json:"threads,omitempty"`
	// Files, SHA256 and Glob answer -cat, -sha256 and -glob after CMD
	// ended; an error is reported in place of the value.
	Files  map[string]string   `json:"files,omitempty"`
	SHA256 map[string]string   `json:"sha256,omitempty"`
	Glob   map[string][]string `json:"glob,omitempty"`
	// Error is why redirect could not run CMD at all.
	Error string `json:"error,omitempty"`
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// progressEvery is how often -progress checks whether CMD's output grew.
const progressEvery = time.Second

// killGrace is how long a command gets to print its goroutine dump after
// SIGQUIT before it is killed.
const killGrace = 10 * time.Second

// ioGrace is how long, once CMD has ended, its stdout and stderr may stay
// open before redirect stops reading them and reports. A process CMD
// started can hold them open after CMD is gone (vmm, when -timeout has
// killed the pipeends that ran it): without a bound redirect would wait
// for that process and print no report, and the test would see only
// "no reply to exec".
const ioGrace = 10 * time.Second

func main() {
	var cats, sums, globs list
	timeout := flag.Duration("timeout", 0, "stop CMD (SIGQUIT, then SIGKILL) after this long; 0 means never")
	var sig signalSpec
	flag.IntVar(&sig.num, "signal", 0, "signal number to send CMD after -after")
	flag.DurationVar(&sig.after, "after", 0, "when to send -signal, counted from CMD's start (or from -on)")
	flag.StringVar(&sig.on, "on", "", "count -after from when CMD's stderr first contains this text")
	progress := flag.String("progress", "", "rewrite this file with the byte counts of CMD's stdout and stderr while they grow")
	flag.Var(&cats, "cat", "print this file's contents in the report (repeatable)")
	flag.Var(&sums, "sha256", "print this file's SHA-256 in the report (repeatable)")
	flag.Var(&globs, "glob", "list the files matching this pattern in the report (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: redirect [flags] -- CMD ARGS...")
		os.Exit(2)
	}
	if sig.on != "" && sig.num == 0 {
		fmt.Fprintln(os.Stderr, "redirect: -on needs -signal")
		os.Exit(2)
	}
	rep := run(flag.Args(), *timeout, sig, ioGrace, progressSpec{path: *progress, every: progressEvery})
	collect(&rep, cats, sums, globs)
	b, err := json.Marshal(rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redirect:", err)
		os.Exit(2)
	}
	os.Stdout.Write(append(b, '\n'))
	switch {
	case rep.Error != "":
		os.Exit(2)
	case rep.Signal != 0:
		os.Exit(128 + rep.Signal)
	}
	os.Exit(rep.Exit)
}

// signalSpec is -signal, -after and -on.
type signalSpec struct {
	num   int // 0: none
	after time.Duration
	on    string
}

// progressSpec is -progress: the file, and how often to check.
type progressSpec struct {
	path  string // "": none
	every time.Duration
}

// counter passes writes to w and counts the bytes.
type counter struct {
	w io.Writer
	n atomic.Int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// progressFile is -progress's file as CMD runs.
type progressFile struct {
	path    string
	written string // what the file holds
	failed  bool   // a write failed and was said on stderr
}

// update rewrites the file if the counts changed. It writes a new file
// and renames it over the old, so a reader sees one whole or the other.
func (f *progressFile) update(stdout, stderr int64) {
	s := fmt.Sprintf("%d %d\n", stdout, stderr)
	if f.path == "" || s == f.written {
		return
	}
	tmp := f.path + ".new"
	err := os.WriteFile(tmp, []byte(s), 0o644)
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		if !f.failed {
			fmt.Fprintf(os.Stderr, "redirect: -progress: %v\n", err)
			f.failed = true
		}
		return
	}
	f.written = s
}

// remove takes the file away once CMD has ended.
func (f *progressFile) remove() {
	if f.path != "" {
		os.Remove(f.path)
		os.Remove(f.path + ".new")
	}
}

// watchBuffer is CMD's stderr: it keeps what CMD wrote and closes seen
// once that contains text (never, when text is empty).
type watchBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	text []byte
	seen chan struct{}
}

func newWatchBuffer(text string) *watchBuffer {
	return &watchBuffer{text: []byte(text), seen: make(chan struct{})}
}

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.text) == 0 {
		return w.buf.Write(p)
	}
	// TEXT can straddle two writes: search from len(TEXT)-1 bytes back.
	from := max(0, w.buf.Len()-len(w.text)+1)
	n, err := w.buf.Write(p)
	if bytes.Contains(w.buf.Bytes()[from:], w.text) {
		close(w.seen)
		w.text = nil
	}
	return n, err
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func run(args []string, timeout time.Duration, sig signalSpec, ioGrace time.Duration, progress progressSpec) Report {
	rep := Report{Args: args, Exit: -1}
	var stdout bytes.Buffer
	stderr := newWatchBuffer(sig.on)
	outN, errN := &counter{w: &stdout}, &counter{w: stderr}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = os.Stdin
	cmd.Stdout, cmd.Stderr = outN, errN
	cmd.WaitDelay = ioGrace
	start := time.Now()
	if err := cmd.Start(); err != nil {
		rep.Error = err.Error()
		return rep
	}
	pf := &progressFile{path: progress.path}
	defer pf.remove()
	var progressC <-chan time.Time
	if pf.path != "" {
		pf.update(0, 0)
		t := time.NewTicker(progress.every)
		defer t.Stop()
		progressC = t.C
	}
	done := make(chan struct{})
	var signalC, timeoutC, killC <-chan time.Time
	var seenC <-chan struct{}
	switch {
	case sig.num > 0 && sig.on != "":
		seenC = stderr.seen
	case sig.num > 0:
		signalC = time.After(sig.after)
	}
	if timeout > 0 {
		timeoutC = time.After(timeout)
	}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-seenC:
			signalC = time.After(sig.after)
			seenC = nil
		case <-signalC:
			if cmd.Process.Signal(syscall.Signal(sig.num)) == nil {
				rep.Sent = sig.num
			}
			signalC = nil
		case <-timeoutC:
			rep.TimedOut = true
			rep.Threads = procthreads.Describe("/proc", cmd.Process.Pid, time.Second)
			cmd.Process.Signal(syscall.SIGQUIT)
			killC = time.After(killGrace)
			timeoutC = nil
		case <-killC:
			cmd.Process.Kill()
			killC = nil
		case <-progressC:
			pf.update(outN.n.Load(), errN.n.Load())
		}
	}
	rep.ElapsedMS = float64(time.Since(start).Microseconds()) / 1000
	rep.Stdout, rep.Stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
		rep.Exit = 0
	case errors.As(waitErr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			rep.Signal = int(ws.Signal())
		} else {
			rep.Exit = ee.ExitCode()
		}
	default:
		rep.Error = waitErr.Error()
	}
	return rep
}

func collect(rep *Report, cats, sums, globs []string) {
	for _, p := range cats {
		if rep.Files == nil {
			rep.Files = map[string]string{}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			rep.Files[p] = "error: " + err.Error()
			continue
		}
		rep.Files[p] = string(b)
	}
	for _, p := range sums {
		if rep.SHA256 == nil {
			rep.SHA256 = map[string]string{}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			rep.SHA256[p] = "error: " + err.Error()
			continue
		}
		h := sha256.Sum256(b)
		rep.SHA256[p] = hex.EncodeToString(h[:])
	}
	for _, g := range globs {
		if rep.Glob == nil {
			rep.Glob = map[string][]string{}
		}
		m, err := filepath.Glob(g)
		if err != nil {
			m = []string{"error: " + err.Error()}
		}
		rep.Glob[g] = append([]string{}, m...)
	}
}
