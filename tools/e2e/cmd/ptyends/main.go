// Command ptyends runs a command on a pseudo-terminal, as its controlling
// terminal, types into it what a test says when the test says it, and
// reports the terminal's mode before, during and after: what the
// end-to-end tests need to check vmm on a real terminal, which L1 (no
// shell, no terminal emulator) cannot give them otherwise.
//
//	ptyends [-step-timeout D] [-exit-timeout D] STEP... -- CMD ARGS...
//
// The steps run in order:
//
//	expect:REGEXP  wait until the terminal's output since the last match
//	               matches REGEXP (Go syntax), at most -step-timeout
//	send:"TEXT"    type TEXT, a Go string literal ("\x03" is Ctrl-C)
//	pause:D        wait D (a time.ParseDuration string)
//	mode           record whether the terminal is in raw mode now
//	signal:NAME    send CMD the signal NAME (TERM, INT, HUP)
//
// After the last step ptyends waits up to -exit-timeout for CMD to exit
// (then kills it) and prints one line of JSON (package report) on stdout. It exits
// 0 when it could run CMD at all, whatever CMD did: judging is the test's.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/pty"
	"github.com/vmm-dev/vmm/tools/e2e/cmd/ptyends/report"
)

// outputTail bounds Report.Output.
const outputTail = 4 << 10

func main() {
	stepTimeout := flag.Duration("step-timeout", 3*time.Minute, "longest wait of one expect step")
	exitTimeout := flag.Duration("exit-timeout", time.Minute, "longest wait for CMD to exit after the last step")
	flag.Parse()
	args := flag.Args()
	i := indexOf(args, "--")
	if i < 0 || i == len(args)-1 {
		fmt.Fprintln(os.Stderr, "usage: ptyends [-step-timeout D] [-exit-timeout D] STEP... -- CMD ARGS...")
		os.Exit(2)
	}
	steps, cmdArgs := args[:i], args[i+1:]
	r := run(steps, cmdArgs, *stepTimeout, *exitTimeout)
	b, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ptyends: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(b))
	if r.Error != "" {
		os.Exit(1)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// output collects what CMD writes to the terminal.
type output struct {
	mu   sync.Mutex
	b    bytes.Buffer
	more chan struct{} // closed and replaced at every write
}

func (o *output) write(p []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	close(o.more)
	o.more = make(chan struct{})
}

// since returns the output from offset off and a channel closed at the
// next write.
func (o *output) since(off int) (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()[off:], o.more
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.b.String()
	return s[max(0, len(s)-outputTail):]
}

func run(steps, cmdArgs []string, stepTimeout, exitTimeout time.Duration) (r report.Report) {
	r.Exit = -1
	master, slave, err := pty.Open()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer master.Close()
	defer slave.Close()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		r.Error = fmt.Sprintf("read the terminal's mode: %v", err)
		return r
	}
	r.Before = before.Lflag

	out := &output{more: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p := make([]byte, 4096)
		for {
			n, err := master.Read(p)
			if n > 0 {
				out.write(p[:n])
			}
			if err != nil {
				return // EIO once CMD and every other holder of the slave are gone
			}
		}
	}()

	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A session of its own with the pty as controlling terminal, as a
	// login shell gives the commands typed into it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		r.Error = fmt.Sprintf("start %s: %v", cmdArgs[0], err)
		return r
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	off := 0
	for _, s := range steps {
		start := time.Now()
		if err := step(s, master, slave, cmd, out, &off, &r, stepTimeout, exited); err != nil {
			r.Failed = fmt.Sprintf("%s: %v", s, err)
			break
		}
		r.Steps = append(r.Steps, report.Step{Step: s, MS: float64(time.Since(start).Microseconds()) / 1000})
	}

	select {
	case <-exited:
		r.Exit = status(cmd.ProcessState)
	case <-time.After(exitTimeout):
		_ = cmd.Process.Kill()
		<-exited // r.Exit stays -1: CMD did not end by itself
	}
	if after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); err == nil {
		r.After = after.Lflag
		r.Restored = *after == *before
	}
	// What CMD wrote last is still in the pty: drain it into the report.
	_ = master.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	slave.Close()
	<-readDone
	r.Output = out.tail()
	return r
}

// step runs one step; off is where the next expect starts matching.
func step(s string, master, slave *os.File, cmd *exec.Cmd, out *output, off *int, r *report.Report, timeout time.Duration, exited <-chan struct{}) error {
	kind, arg, _ := strings.Cut(s, ":")
	switch kind {
	case "expect":
		re, err := regexp.Compile(arg)
		if err != nil {
			return err
		}
		deadline := time.After(timeout)
		for {
			text, more := out.since(*off)
			if loc := re.FindStringIndex(text); loc != nil {
				*off += loc[1]
				return nil
			}
			select {
			case <-more:
			case <-exited:
				// One last look: the match may be in the final output.
				time.Sleep(200 * time.Millisecond)
				if text, _ := out.since(*off); re.MatchString(text) {
					return nil
				}
				return errors.New("the command exited first")
			case <-deadline:
				return fmt.Errorf("no match after %v", timeout)
			}
		}
	case "send":
		text, err := strconv.Unquote(arg)
		if err != nil {
			return fmt.Errorf("want a Go string literal: %w", err)
		}
		_, err = master.Write([]byte(text))
		return err
	case "pause":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return err
		}
		time.Sleep(d)
		return nil
	case "mode":
		t, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			return err
		}
		r.Raw = append(r.Raw, t.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0)
		return nil
	case "signal":
		sig := unix.SignalNum("SIG" + arg)
		if sig == 0 {
			return fmt.Errorf("unknown signal %q", arg)
		}
		return cmd.Process.Signal(sig)
	}
	return fmt.Errorf("unknown step %q", kind)
}

// status is a process's exit status as a shell reports it.
func status(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
