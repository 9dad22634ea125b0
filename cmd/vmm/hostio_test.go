package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/pty"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/runjob"
	"github.com/vmm-dev/vmm/runjob/outtar"
)

// The tests here run vmm's real main path (vmmMain: SIGPIPE handling,
// signals, -timeout, the stdout/stderr queues, the exit path) in a child
// process with real pipes and signals, and a fake guest instead of KVM.

// UART registers and LSR bits the fake guest uses (serial_reg.h).
const (
	uartTHR  = 0
	uartLSR  = 5
	uartTHRE = 0x20
)

// fakeGuest drives the UARTs machine builds (COM1 on Config.Console,
// COM2 on Config.JobOutput) from one goroutine, its "vCPU", following a
// script; like machine.Run, Run returns only once that goroutine has
// stopped, so a write that blocks the vCPU blocks Run.
type fakeGuest struct {
	cfg        machine.Config
	com1, com2 *serial.UART
	script     string
	n          int // bytes the script writes, where it takes a size
	stopping   atomic.Bool
	status     atomic.Int32
	reason     atomic.Int32
	kvmNote    string              // what KVMNote says: envKVMNote
	places     []machine.VCPUPlace // what Places says after a cancel: envPlaces
	ready      *os.File            // told "ready" as Run starts (childMain)
	out        *os.File            // the disk with the out serial (openOut)
}

func (g *fakeGuest) Run(ctx context.Context) error {
	if g.ready != nil {
		g.ready.Write([]byte("ready\n"))
		g.ready.Close()
		g.ready = nil
	}
	if g.script == "bug" {
		// A panic in a device, as machine reports it.
		return &machine.BugError{What: "test device", Panic: "boom", Stack: []byte("goroutine 7 [running]:\nmain.device()\n\tdevice.go:1 +0x1")}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if status, ok := g.run(); ok {
			g.status.Store(int32(status))
			g.reason.Store(int32(machine.StopExit))
		} else if !g.stopping.Load() {
			g.reason.Store(int32(machine.StopPoweroff))
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.stopping.Store(true)
		g.reason.Store(int32(machine.StopCanceled))
		<-done
		return ctx.Err()
	}
}

func (g *fakeGuest) Close() error {
	g.com1.Close()
	if g.com2 != nil {
		g.com2.Close()
	}
	return nil
}

func (g *fakeGuest) ExitStatus() (int, bool) {
	s := g.status.Load()
	return int(s), s >= 0
}

func (g *fakeGuest) Reason() machine.StopReason { return machine.StopReason(g.reason.Load()) }

func (g *fakeGuest) KVMNote() string { return g.kvmNote }

// Places is places once a cancel stopped the fake.
func (g *fakeGuest) Places() []machine.VCPUPlace {
	if g.Reason() != machine.StopCanceled {
		return nil
	}
	return g.places
}

// run is the guest's program. It reports a status as the exit port
// would, or ok false for a poweroff (or a stop).
func (g *fakeGuest) run() (status int, ok bool) {
	line := []byte("[    1.234567] a chatty guest kernel says something\r\n")
	switch g.script {
	case "console-flood":
		for g.console(line) {
		}
		return 0, false
	case "console-burst":
		for i := 0; i < g.n; i += len(line) {
			if !g.console(line) {
				return 0, false
			}
		}
		return 0, false
	case "job-flood":
		for g.job(line) {
		}
		return 0, false
	case "prompt", "line":
		// A console that ends mid-line (a shell's prompt) or at a
		// line's end, then a guest that runs until stopped.
		out := "guest$ "
		if g.script == "line" {
			out = "booted\n"
		}
		g.console([]byte(out))
		for !g.stopping.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		return 0, false
	case "idle":
		// A guest that runs until stopped, making no output: a distro
		// kernel on a KVM that cannot run it.
		for !g.stopping.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		return 0, false
	case "stuck":
		// A machine that never stops: a device holding a request the
		// host never completes looks like this to runMode.
		g.job([]byte("stuck\n"))
		for {
			time.Sleep(time.Hour)
		}
	case "job-then-exit":
		if !g.job(pattern(g.n)) {
			return 0, false
		}
		if err := g.saveOut(map[string]string{"result.txt": "made by the job\n"}); err != nil {
			g.console([]byte("saveOut: " + err.Error()))
			return 1, true
		}
		return 3, true
	}
	panic("unknown script " + g.script)
}

// console writes s to COM1 as Linux's console does once the port has a
// driver: without waiting (the console UART is never busy).
func (g *fakeGuest) console(s []byte) bool {
	for _, b := range s {
		if g.stopping.Load() {
			return false
		}
		g.com1.Write(uartTHR, []byte{b})
	}
	return true
}

// job writes s to COM2, waiting for THRE before each FIFO load of 16
// bytes as serial8250_tx_chars does.
func (g *fakeGuest) job(s []byte) bool {
	lsr := []byte{0}
	for i := 0; i < len(s); i += 16 {
		for g.com2.Read(uartLSR, lsr); lsr[0]&uartTHRE == 0; g.com2.Read(uartLSR, lsr) {
			if g.stopping.Load() {
				return false
			}
			time.Sleep(20 * time.Microsecond)
		}
		for _, b := range s[i:min(i+16, len(s))] {
			g.com2.Write(uartTHR, []byte{b})
		}
	}
	return !g.stopping.Load()
}

// openOut opens the disk with the out serial, if there is one, as the
// machine opens its disks: during setup, before the sandbox.
func (g *fakeGuest) openOut() error {
	for _, d := range g.cfg.Disks {
		if d.Serial == guestabi.OutSerial {
			f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
			g.out = f
			return err
		}
	}
	return nil
}

// saveOut is vmm-init's: a tar stream on the disk with the out serial.
func (g *fakeGuest) saveOut(files map[string]string) error {
	if f := g.out; f != nil {
		defer f.Close()
		tw := tar.NewWriter(f)
		for name, body := range files {
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, body); err != nil {
				return err
			}
		}
		return tw.Close()
	}
	return errors.New("no out disk")
}

// pattern is n bytes that show any loss, repeat or reordering.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// Environment of the child process: which script, vmm's arguments, and
// the fd to say "ready" on once the signal handler is in place.
const (
	envScript = "VMM_TEST_GUEST_SCRIPT"
	envArgs   = "VMM_TEST_GUEST_ARGS"
	envSize   = "VMM_TEST_GUEST_BYTES"
	// envKVMNote is what the fake guest's KVMNote returns.
	envKVMNote = "VMM_TEST_KVM_NOTE"
	// envPlaces, if set, has the fake guest's one vCPU in user space
	// when a cancel stops it (Places); unset, it has no place to say.
	envPlaces = "VMM_TEST_PLACES"
)

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == runjob.OutHelper && len(os.Args) > 1 && os.Args[1] == runjob.OutMode {
		// vmm-unpack out, as cmd/vmm-unpack runs it.
		os.Exit(outtar.HelperMain(os.Args[2:], os.Stdin, os.Stdout, os.NewFile(3, "control"), outtar.Confine))
	}
	if script := os.Getenv(envScript); script != "" {
		os.Exit(childMain(script))
	}
	os.Exit(withOutHelper(m.Run))
}

// withOutHelper runs run with this test binary, under the -out helper's
// name, first in $PATH: the children that play vmm start it to unpack
// their fake guest's -out archive, as vmm starts vmm-unpack.
func withOutHelper(run func() int) int {
	dir, err := os.MkdirTemp("", "vmm-test-helper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err == nil {
		err = os.Symlink(exe, filepath.Join(dir, runjob.OutHelper))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return run()
}

// childMain is main with a fake guest. The fake runs after runMode
// installed its signal handler and learnt the machine is built, so
// "ready" on fd 3, written as it starts to run, tells the parent a
// signal now reaches vmm rather than killing it, and stops the machine
// rather than its setup (the backstop's two cases). The stuck-boot
// script says it from inside setup, which it never leaves.
func childMain(script string) int {
	ignoreSIGPIPE()
	n, _ := strconv.Atoi(os.Getenv(envSize))
	ready := os.NewFile(3, "ready")
	boot := func(cfg machine.Config) (guest, error) {
		if script == "stuck-boot" {
			// Setup that never ends: a kernel read from a pipe whose
			// writer is silent (-kernel <(sleep 1d)) looks like this.
			ready.Write([]byte("ready\n"))
			ready.Close()
			select {}
		}
		g := &fakeGuest{cfg: cfg, script: script, n: n, kvmNote: os.Getenv(envKVMNote), ready: ready}
		if os.Getenv(envPlaces) != "" {
			g.places = []machine.VCPUPlace{{Known: true, RIP: 0x401000, CPL: 3, Interrupts: true}}
		}
		g.status.Store(-1)
		if err := g.openOut(); err != nil {
			return nil, err
		}
		g.com1 = serial.New(nil, cfg.Console)
		if cfg.JobOutput != nil {
			g.com2 = serial.New(nil, cfg.JobOutput)
		}
		return g, nil
	}
	return vmmMain(time.Now(), strings.Split(os.Getenv(envArgs), "\x1f"), nil, os.Stdout, os.Stderr, boot)
}

// child is a vmm process under test.
type child struct {
	cmd    *exec.Cmd
	stdout *os.File // the read end of its stdout pipe
	stderr *os.File // the read end of its stderr pipe, or its stderr file
	tmp    string   // its TMPDIR, where `vmm run` puts the scratch disk
	exited chan struct{}
	err    error
}

// startChild starts vmm with a fake guest running script and waits until
// it handles signals. stdout is always a pipe the test reads (or not);
// so is stderr when stderrPipe, else a file.
func startChild(t *testing.T, script string, size int, stderrPipe bool, args ...string) *child {
	t.Helper()
	c := &child{tmp: t.TempDir(), exited: make(chan struct{})}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var errW *os.File
	if stderrPipe {
		c.stderr, errW, err = os.Pipe()
	} else {
		errW, err = os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err == nil {
			c.stderr, err = os.Open(errW.Name())
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdout = outR
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), envScript+"="+script, envArgs+"="+strings.Join(args, "\x1f"),
		envSize+"="+strconv.Itoa(size), "TMPDIR="+c.tmp)
	c.cmd.Stdout, c.cmd.Stderr = outW, errW
	c.cmd.ExtraFiles = []*os.File{readyW}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	errW.Close()
	readyW.Close()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
		outR.Close()
		c.stderr.Close()
	})
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	if _, err := io.ReadAll(readyR); err != nil {
		t.Fatal(err)
	}
	readyR.Close()
	return c
}

// wait waits up to d for the child to exit and returns its status, or
// fails the test.
func (c *child) wait(t *testing.T, d time.Duration, what string) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(d):
		t.Fatalf("vmm still running %v after %s", d, what)
	}
	var ee *exec.ExitError
	if c.err != nil && !errors.As(c.err, &ee) {
		t.Fatal(c.err)
	}
	if ws := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("vmm killed by %v (after %s)", ws.Signal(), what)
	}
	return c.cmd.ProcessState.ExitCode()
}

// waitPipeFull waits until the child filled the pipe whose read end is r:
// what it holds (FIONREAD, spelled TIOCINQ) is over half its size
// (F_GETPIPE_SZ; a pipe counts pages, so partly filled ones may keep it
// from the full size) and stopped growing. From then on the child's
// writes block, and bytes it queues stay queued.
func waitPipeFull(t *testing.T, r *os.File) {
	t.Helper()
	size, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	last := -1
	for {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n > size/2 && n == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipe holds %d of %d bytes after 30s", n, size)
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
}

// stderrText reads what the child wrote to stderr (after it exited).
func (c *child) stderrText(t *testing.T) string {
	b, err := io.ReadAll(c.stderr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTimeoutSaysWhyKVMCannotRun: a guest stopped by -timeout on a
// /dev/kvm without hardware virtualization (machine's softwareKVMNote)
// ends with status 124 and one line that gives the deadline and points
// at machine's warning (which the fake guest does not print); on a real
// KVM the line is the deadline alone. The same line ends with where the
// vCPUs were, when the machine could read their registers.
func TestTimeoutSaysWhyKVMCannotRun(t *testing.T) {
	const note = "this host's CPU has no hardware virtualization: run vmm in a nested VM"
	const place = "; vCPU 0 was at RIP=0x401000 in the guest's user space, running, interrupts on"
	for _, tc := range []struct {
		name, note string
		places     bool
		want       string
	}{
		{"software KVM", note, false, "vmm: guest stopped: -timeout 300ms reached (this host's KVM has no hardware virtualization: see the warning above)\n"},
		{"real KVM", "", false, "vmm: guest stopped: -timeout 300ms reached\n"},
		{"software KVM, where the vCPU was", note, true, "vmm: guest stopped: -timeout 300ms reached (this host's KVM has no hardware virtualization: see the warning above)" + place + "\n"},
		{"real KVM, where the vCPU was", "", true, "vmm: guest stopped: -timeout 300ms reached" + place + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envKVMNote, tc.note)
			if tc.places {
				t.Setenv(envPlaces, "1")
			}
			c := startChild(t, "idle", 0, false, "-kernel", "fake", "-timeout", "300ms")
			if status := c.wait(t, 10*time.Second, "-timeout"); status != exitTimeout {
				t.Fatalf("status %d, want %d", status, exitTimeout)
			}
			if got := c.stderrText(t); !strings.HasSuffix(got, tc.want) || strings.Count(got, "vmm:") != 1 {
				t.Errorf("stderr %q, want one vmm: line ending %q", got, tc.want)
			}
		})
	}
}

// TestStalledReaderDoesNotHoldVMM is D2: nobody reads vmm's output, so
// the pipe and then vmm's queue fill, and still -timeout and signals end
// vmm within a second, through its normal exit.
func TestStalledReaderDoesNotHoldVMM(t *testing.T) {
	for _, tc := range []struct {
		name       string
		run        bool
		script     string
		stderrPipe bool // stderr is the stalled one (the console in `vmm run`)
		stop       string
		status     int
		wantErr    string // on stderr, when it is a file
	}{
		{"console on stdout, SIGTERM", false, "console-flood", false, "SIGTERM", 128 + 15, "bytes of console output dropped: stdout was not read fast enough"},
		{"console on stdout, SIGINT", false, "console-flood", false, "SIGINT", 128 + 2, "stopped by interrupt"},
		{"console on stdout, -timeout", false, "console-flood", false, "timeout", exitTimeout, "-timeout 700ms reached"},
		{"job output, SIGTERM", true, "job-flood", false, "SIGTERM", 128 + 15, "bytes of the job's output dropped"},
		{"job output, -timeout", true, "job-flood", false, "timeout", exitTimeout, "-timeout 700ms reached"},
		{"console on stderr, SIGHUP", true, "console-flood", true, "SIGHUP", 128 + 1, ""},
		{"console on stderr, -timeout", true, "console-flood", true, "timeout", exitTimeout, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-kernel", "fake"}
			if tc.stop == "timeout" {
				args = append(args, "-timeout", "700ms")
			}
			if tc.run {
				args = append([]string{"run"}, append(args, "--", "job")...)
			}
			c := startChild(t, tc.script, 0, tc.stderrPipe, args...)
			var stopAt time.Time
			if tc.stop == "timeout" {
				// The child armed -timeout before it said ready.
				stopAt = time.Now().Add(700 * time.Millisecond)
			} else {
				stalled := c.stdout
				if tc.stderrPipe {
					stalled = c.stderr
				}
				waitPipeFull(t, stalled)
				sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGHUP": syscall.SIGHUP}[tc.stop]
				if signal.Ignored(sig) {
					// Inherited by the child, where vmm keeps it
					// ignored (nohup make test).
					c.cmd.Process.Kill()
					t.Skipf("%s is ignored here, and so in vmm", tc.stop)
				}
				stopAt = time.Now()
				if err := c.cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
			}
			status := c.wait(t, time.Until(stopAt)+time.Second, tc.stop)
			if took := time.Since(stopAt); took > time.Second {
				t.Errorf("vmm exited %v after %s, want within a second", took, tc.stop)
			}
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			if !tc.stderrPipe {
				if msg := c.stderrText(t); !strings.Contains(msg, tc.wantErr) {
					t.Errorf("stderr %q, want it to contain %q", msg, tc.wantErr)
				}
			}
		})
	}
}

// TestOutHelperNotReady: a vmm-unpack that cannot unpack (here one that
// exits at once, as another build's does with arguments it does not
// know) fails the run before the guest starts, in one line with status
// 1, rather than after the job, with its output lost.
func TestOutHelperNotReady(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, runjob.OutHelper), []byte("#!/bin/sh\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out := t.TempDir()
	c := startChild(t, "job-then-exit", 16, false, "run", "-kernel", "fake", "-timeout", "60s", "-out", out, "--", "job")
	status := c.wait(t, 60*time.Second, "vmm refused the helper")
	msg := c.stderrText(t)
	if want := "vmm: -out: vmm-unpack ended before the job (exit status 2)\n"; status != 1 || msg != want {
		t.Errorf("status %d, stderr %q; want 1, %q", status, msg, want)
	}
	if b, _ := io.ReadAll(c.stdout); len(b) > 0 {
		t.Errorf("the job ran: it wrote %d bytes to stdout", len(b))
	}
}

// TestClosedStdout is D3: the reader of stdout goes away (`vmm ... |
// head -c1`). vmm is not killed by SIGPIPE; it runs to the guest's end,
// extracts -out, removes its scratch disk, reports the job's status and
// says on stderr how much output was discarded.
func TestClosedStdout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		run    bool
		script string
		size   int
		status int
		want   string // on stderr
	}{
		// More than the pipe and vmm's queue hold, so the writes after
		// the reader left see EPIPE.
		{"console", false, "console-burst", consoleQueue + 512<<10, 0, "vmm: stdout closed: "},
		{"vmm run", true, "job-then-exit", jobQueue + 512<<10, 3, "vmm: stdout closed: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"-kernel", "fake", "-timeout", "100s"}
			if tc.run {
				args = append([]string{"run"}, append(args, "-out", out, "--", "job")...)
			}
			c := startChild(t, tc.script, tc.size, false, args...)
			if _, err := io.ReadFull(c.stdout, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			c.stdout.Close() // head -c1 exits
			status := c.wait(t, 90*time.Second, "the guest ended")
			msg := c.stderrText(t)
			if status != tc.status {
				t.Errorf("status %d, want %d; stderr %q", status, tc.status, msg)
			}
			if !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr %q, want one line containing %q", msg, tc.want)
			}
			if !tc.run {
				return
			}
			if b, err := os.ReadFile(filepath.Join(out, "result.txt")); err != nil || string(b) != "made by the job\n" {
				t.Errorf("-out not extracted: %q, %v", b, err)
			}
			if left, _ := filepath.Glob(filepath.Join(c.tmp, "vmm-out-*")); len(left) > 0 {
				t.Errorf("scratch disk left behind: %v", left)
			}
		})
	}
}

// TestJobOutputArrivesWhole: a reader slower than the guest makes the
// job wait (THRE back-pressure), it never loses a byte, and vmm's exit
// waits until the last byte is written.
func TestJobOutputArrivesWhole(t *testing.T) {
	const size = 1 << 20 // four times the job queue
	c := startChild(t, "job-then-exit", size, false, "run", "-kernel", "fake", "-timeout", "60s", "-out", t.TempDir(), "--", "job")
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := c.stdout.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		if got.Len() < size/2 {
			time.Sleep(time.Millisecond) // slow for the first half
		}
	}
	status := c.wait(t, 10*time.Second, "stdout reached EOF")
	if msg := c.stderrText(t); status != 3 || msg != "" {
		t.Errorf("status %d, stderr %q; want 3 and nothing", status, msg)
	}
	if want := pattern(size); !bytes.Equal(got.Bytes(), want) {
		t.Errorf("stdout: %d bytes, want %d intact", got.Len(), len(want))
	}
}

// TestFinishStatus: the status finish returns when -timeout or a signal
// cut the job's output short, and when nothing did.
func TestFinishStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause error
		want  int
	}{
		{"job output drained", nil, 3},
		{"-timeout during the drain", errTimeout{time.Second}, exitTimeout},
		{"SIGTERM during the drain", signalError{syscall.SIGTERM}, 128 + 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			var stderr bytes.Buffer
			ctx, cancel := context.WithCancelCause(context.Background())
			h := newHostIO(ctx, true, w, &lockedWriter{w: &stderr})
			if tc.cause != nil {
				// A reader that never reads: the drain can only end by
				// the cause.
				h.job.Write(bytes.Repeat([]byte("x"), 200<<10))
				cancel(tc.cause)
			} else {
				go io.Copy(io.Discard, r)
				h.job.Write([]byte("all of it"))
			}
			start := time.Now()
			if got := h.finish(3, nil); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
			msg := (&stderr).String()
			if tc.cause == nil && msg != "" || tc.cause != nil && !strings.Contains(msg, "vmm: writing the job's output: "+tc.cause.Error()) {
				t.Errorf("stderr %q", msg)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("finish took %v", took)
			}
			cancel(nil)
		})
	}
}

// lockedWriter lets the queue's goroutine write a buffer the test may
// read.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestGuestOutputAllocatesNothing is the vCPU's path for every byte a
// guest prints, as vmm wires it: a THR write to the real UART in front of
// the real console queue or the job's Paced one.
func TestGuestOutputAllocatesNothing(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go io.Copy(io.Discard, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHostIO(ctx, true, w, io.Discard)
	defer h.finish(0, nil)
	for _, tc := range []struct {
		name string
		out  io.Writer
	}{
		{"console", h.console},
		{"job", h.job},
	} {
		u := serial.New(nil, tc.out)
		b, lsr := []byte{'x'}, []byte{0}
		if n := testing.AllocsPerRun(10000, func() {
			u.Write(uartTHR, b)
			u.Read(uartLSR, lsr)
		}); n != 0 {
			t.Errorf("%s: %v allocations per byte", tc.name, n)
		}
	}
}

// TestBackstop: a machine that does not stop when -timeout or a signal
// ends the run still lets vmm exit, stopBackstop later, with the stop's
// status and a line saying why, and the scratch disk removed.
func TestBackstop(t *testing.T) {
	t.Parallel() // it waits out the backstop's 10 s
	for _, tc := range []struct {
		name   string
		stop   string
		status int
		want   string
	}{
		{"-timeout", "timeout", exitTimeout, "-timeout 500ms reached; the machine did not stop within 10s after that: exiting without it"},
		{"SIGTERM", "SIGTERM", 128 + 15, "the machine did not stop within 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"run", "-kernel", "fake"}
			if tc.stop == "timeout" {
				args = append(args, "-timeout", "500ms")
			}
			args = append(args, "-out", t.TempDir(), "--", "job")
			// stopAt is the earliest the stop can have come: vmm's
			// -timeout starts counting after the child starts, which
			// is before startChild returns; a signal arrives after it
			// is sent.
			stopAt := time.Now().Add(500 * time.Millisecond)
			c := startChild(t, "stuck", 0, false, args...)
			if tc.stop == "SIGTERM" {
				stopAt = time.Now()
				if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			status := c.wait(t, time.Until(stopAt)+stopBackstop+5*time.Second, tc.stop)
			if took := time.Since(stopAt); took < stopBackstop {
				t.Errorf("vmm exited %v after %s, before the backstop's %v", took, tc.stop, stopBackstop)
			}
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			msg := c.stderrText(t)
			lines := strings.Split(strings.TrimSpace(msg), "\n")
			if last := lines[len(lines)-1]; !strings.Contains(last, tc.want) {
				t.Errorf("stderr ends %q, want it to contain %q", last, tc.want)
			}
			// The evidence: the goroutine that held the stop.
			for _, want := range []string{"(*fakeGuest).run("} {
				if !strings.Contains(msg, want) {
					t.Errorf("stderr lacks %q:\n%s", want, msg)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(c.tmp, "*")); len(left) > 0 {
				t.Errorf("left in TMPDIR: %q", left)
			}
		})
	}
}

// A stop while the machine is being built (a kernel read from a silent
// pipe) ends vmm at once with the stop's status and one line, without
// the backstop's wait or its goroutines, and leaves no files.
func TestStopBeforeGuestStarted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stop   string
		status int
		want   string
	}{
		{"-timeout", "timeout", exitTimeout, "vmm: -timeout 500ms reached before the guest started"},
		{"SIGTERM", "SIGTERM", 128 + 15, "vmm: stopped by terminated before the guest started"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"run", "-kernel", "fake"}
			if tc.stop == "timeout" {
				args = append(args, "-timeout", "500ms")
			}
			args = append(args, "-out", t.TempDir(), "--", "job")
			c := startChild(t, "stuck-boot", 0, false, args...)
			stopAt := time.Now()
			if tc.stop == "SIGTERM" {
				if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			status := c.wait(t, stopBackstop/2, tc.stop)
			if took := time.Since(stopAt); took > stopBackstop/2 {
				t.Errorf("vmm exited %v after %s", took, tc.stop)
			}
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			if msg := c.stderrText(t); msg != tc.want+"\n" {
				t.Errorf("stderr %q, want %q", msg, tc.want+"\n")
			}
			if left, _ := filepath.Glob(filepath.Join(c.tmp, "*")); len(left) > 0 {
				t.Errorf("left in TMPDIR: %q", left)
			}
		})
	}
}

// A bug in vmm (a device's panic) ends it with status 1, one line saying
// what, and the stack after it as the lines it is, for the report.
func TestBugReport(t *testing.T) {
	c := startChild(t, "bug", 0, false, "-kernel", "fake")
	if status := c.wait(t, 10*time.Second, "the bug"); status != 1 {
		t.Errorf("status %d, want 1", status)
	}
	want := "vmm: test device: internal error, a bug in vmm: boom\ngoroutine 7 [running]:\nmain.device()\n\tdevice.go:1 +0x1\n"
	if got := c.stderrText(t); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// A job's guest that stops without its status ends the run with 125 and
// a line saying so; without -initrd the line also says that the job
// needs vmm's init from an initramfs, the likeliest reason a new user's
// run got none.
func TestNoStatusSaysWhy(t *testing.T) {
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := os.WriteFile(initrd, []byte("07070"), 0o644); err != nil {
		t.Fatal(err)
	}
	const stopped = "vmm: guest stopped (poweroff) without reporting the job's exit status"
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"with-initrd", []string{"-initrd", initrd}, stopped + "\n"},
		{"without-initrd", nil, stopped + "; no -initrd was given, and vmm run's job is started by vmm's init from its initramfs (make guest builds build/guest-cloud/initrd.cpio)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "-kernel", "fake", "-timeout", "60s"}, tc.flags...)
			c := startChild(t, "console-burst", 0, false, append(args, "--", "job")...)
			if status := c.wait(t, 30*time.Second, "a guest's poweroff"); status != exitNoStatus {
				t.Errorf("status %d, want %d", status, exitNoStatus)
			}
			if got := c.stderrText(t); got != tc.want {
				t.Errorf("stderr %q, want %q", got, tc.want)
			}
		})
	}
}

// vmm's last message starts a line of its own: after a newline of its
// own where the console stopped mid-line, right after the console's
// where it did not, and with no carriage return or blank line in a log
// file (the console on stderr, as in vmm run).
func TestLastMessageStartsALine(t *testing.T) {
	const stopped = "vmm: guest stopped: -timeout 300ms reached\n"
	for _, tc := range []struct {
		script, want string
	}{
		{"prompt", "guest$ \n" + stopped},
		{"line", "booted\n" + stopped},
		{"idle", stopped},
	} {
		t.Run(tc.script, func(t *testing.T) {
			c := startChild(t, tc.script, 0, false, "run", "-kernel", "fake", "-timeout", "300ms", "--", "job")
			if status := c.wait(t, 10*time.Second, "-timeout"); status != exitTimeout {
				t.Fatalf("status %d, want %d", status, exitTimeout)
			}
			if got := c.stderrText(t); got != tc.want {
				t.Errorf("stderr %q, want %q", got, tc.want)
			}
		})
	}
}

// sep, the newline before vmm's last message, looks at what was written
// last where the message goes: stderr, and stdout too when both are one
// terminal (the job's output in vmm run, the console otherwise).
func TestSepFollowsTheTerminal(t *testing.T) {
	master, term, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer master.Close()
	defer term.Close()
	go io.Copy(io.Discard, master)
	other, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, tc := range []struct {
		name           string
		run            bool
		job, console   string
		stdout, stderr *os.File
		want           string
	}{
		{"run: job mid-line at the terminal", true, "progress 50%", "", term, term, "\n"},
		{"run: job's line ended", true, "done\n", "", term, term, ""},
		{"run: job mid-line into a file", true, "progress 50%", "", other, term, ""},
		{"run: console mid-line in the log", true, "", "login: ", other, other, "\n"},
		{"console mid-line at the terminal", false, "", "login: ", term, term, "\n"},
		{"console mid-line into a file", false, "", "login: ", other, term, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := newHostIO(ctx, tc.run, io.Discard, io.Discard)
			h.sharedTerm = sameTerminal(tc.stdout, tc.stderr)
			defer h.finish(0, nil)
			if tc.job != "" {
				h.stdout.Write([]byte(tc.job))
			}
			if tc.console != "" {
				h.console.Write([]byte(tc.console))
			}
			if got := h.sep(); got != tc.want {
				t.Errorf("sep %q, want %q", got, tc.want)
			}
		})
	}
}
