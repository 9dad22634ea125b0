package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/hostout"
	"github.com/vmm-dev/vmm/internal/rawterm"
)

// How much of each stream vmm holds for a reader that is behind. The
// console's is large so a burst (a boot log is some 50 KiB) survives a
// slow terminal without drops; the job's only has to keep write(2)
// calls large, because the guest waits for room; vmm's own messages are
// a few lines.
const (
	consoleQueue = 1 << 20
	jobQueue     = 256 << 10
	messageQueue = 64 << 10
)

// consoleStall is how long, at exit, a console reader may take nothing
// before what it has not read is given up (and counted): a terminal
// stopped with Ctrl-S or a pipe nobody drains must not keep vmm alive.
const consoleStall = time.Second

// Once -timeout, a signal or Ctrl-A x has ended the run, the guest's
// output may still drain for outputGrace and vmm's last messages until
// messageGrace, both counted from that moment, so vmm exits well within
// a second whatever its readers do.
const (
	outputGrace  = 300 * time.Millisecond
	messageGrace = 500 * time.Millisecond
)

// hostIO is vmm's side of its standard output and error while a guest
// runs. Every byte for them, the guest's and vmm's own messages alike,
// goes through a hostout queue, so neither a vCPU nor the exit path ever
// waits on a write(2) to a reader that stopped reading.
//
// In `vmm run`, stdout carries the job's output (its virtio-console port,
// or COM2 at a terminal) and is Paced: while the queue is full the port
// holds the guest's buffers and the UART shows its transmitter busy, so
// the job waits and nothing is lost; stderr carries the console and vmm's
// messages, in the order they were written. Otherwise stdout carries the
// console and stderr vmm's messages. Console output is dropped when its
// queue is full, and the count is reported at exit.
//
// A closed stdout or stderr (EPIPE) ends that stream's output and
// nothing else: vmm ignores SIGPIPE (ignoreSIGPIPE) and the run goes on
// to its normal end. The job's output after its reader went is
// discarded, as if written to /dev/null: the job is not told (a serial
// line has no EPIPE) and its exit status is vmm's, so `vmm run ... |
// head -1` still extracts -out and reports the job's status.
type hostIO struct {
	stdout, stderr *hostout.Queue
	job            *hostout.Paced // stdout, in `vmm run`
	console        *hostout.Queue // stdout, or stderr in `vmm run`

	// sharedTerm is whether stdout and stderr are one terminal, found
	// before the sandbox (whose filter has no fstat) for sep.
	sharedTerm bool

	// The run's context, and the deadlines its end sets for output and
	// for vmm's last messages.
	run                  context.Context
	outputDone, msgDone  context.Context
	stopOutput, stopMsgs context.CancelFunc
}

// newHostIO queues stdout and stderr for the run whose context is ctx.
func newHostIO(ctx context.Context, run bool, stdout, stderr io.Writer) *hostIO {
	h := &hostIO{run: ctx}
	h.outputDone, h.stopOutput = afterGrace(ctx, outputGrace)
	h.msgDone, h.stopMsgs = afterGrace(ctx, messageGrace)
	if run {
		h.job = hostout.NewPaced(stdout, jobQueue)
		h.stdout = h.job.Queue
		h.stderr = hostout.New(stderr, consoleQueue)
		h.console = h.stderr
	} else {
		h.stdout = hostout.New(stdout, consoleQueue)
		h.stderr = hostout.New(stderr, messageQueue)
		h.console = h.stdout
	}
	return h
}

// sep is what goes before one of vmm's last messages on stderr: a
// newline if what was written last where the message goes stopped
// mid-line (a prompt, a panic cut short, a progress bar), else nothing,
// so that the message starts a line of its own and a log file gets
// neither a blank line nor a lone carriage return. Where it goes is
// stderr, and stdout too when both are one terminal: the console's
// queue is one of the two, and in vmm run the job's output is stdout.
// It makes no system call: it runs after the sandbox is installed.
func (h *hostIO) sep() string {
	switch {
	case h.console.MidLine() && (h.console == h.stderr || h.sharedTerm):
		return "\n"
	case h.stdout != h.console && h.stdout.MidLine() && h.sharedTerm:
		return "\n"
	}
	return ""
}

// sameTerminal reports whether a and b are one terminal (its device
// number), as stdout and stderr are in an interactive shell.
func sameTerminal(a, b *os.File) bool {
	if !rawterm.IsTerminal(int(a.Fd())) || !rawterm.IsTerminal(int(b.Fd())) {
		return false
	}
	var sa, sb unix.Stat_t
	return unix.Fstat(int(a.Fd()), &sa) == nil && unix.Fstat(int(b.Fd()), &sb) == nil && sa.Rdev == sb.Rdev
}

// drainConsole waits for the console's queued output, before vmm puts
// the terminal back out of raw mode, for as long as the reader keeps
// taking it.
func (h *hostIO) drainConsole() {
	_ = h.console.Drain(h.outputDone, consoleStall)
}

// finish ends vmm's output: all of the job's (while the run is live: a
// job's output is never dropped to hurry an ordinary exit), the
// console's while its reader keeps up, then one line for each stream
// that lost bytes and the boot-timer report, if any, on stderr. It
// returns the exit status, changed to -timeout's or the signal's when
// one of them cut the job's output short.
func (h *hostIO) finish(status int, report func(io.Writer)) int {
	defer h.stopOutput()
	defer h.stopMsgs()
	if h.job != nil && h.job.Drain(h.outputDone, 0) != nil {
		cause := context.Cause(h.run)
		if s, ok := stoppedStatus(cause); ok && s != status {
			// The guest had ended; its output had not yet all gone.
			status = s
			fmt.Fprintf(h.stderr, "vmm: writing the job's output: %v\n", cause)
		}
	}
	_ = h.console.Drain(h.outputDone, consoleStall)
	h.stdout.Close() // what is left now is lost, and counted
	if h.job != nil {
		h.reportLoss("the job's output", "stdout", h.stdout)
		h.reportLoss("console output", "stderr", h.stderr)
	} else {
		h.reportLoss("console output", "stdout", h.stdout)
	}
	if report != nil {
		report(h.stderr)
	}
	_ = h.stderr.Drain(h.msgDone, consoleStall)
	h.stderr.Close()
	return status
}

// reportLoss writes one line on stderr if q lost bytes, saying why.
func (h *hostIO) reportLoss(what, name string, q *hostout.Queue) {
	n := q.Dropped()
	if n == 0 {
		return
	}
	err := q.Err()
	switch {
	case err == nil:
		fmt.Fprintf(h.stderr, "vmm: %d bytes of %s dropped: %s was not read fast enough\n", n, what, name)
	case errors.Is(err, unix.EPIPE):
		fmt.Fprintf(h.stderr, "vmm: %s closed: %d bytes of %s discarded\n", name, n, what)
	default:
		fmt.Fprintf(h.stderr, "vmm: %d bytes of %s lost: %s\n", n, what, errLine(err))
	}
}

// stoppedStatus is the exit status for a run that -timeout or a signal
// ended, from its context's cause.
func stoppedStatus(cause error) (int, bool) {
	var te errTimeout
	var se signalError
	switch {
	case errors.As(cause, &te):
		return exitTimeout, true
	case errors.As(cause, &se):
		return 128 + int(se.sig), true
	}
	return 0, false
}

// afterGrace returns a context that is done grace after parent is (and
// never before), for waits that should end soon, not at once, after
// -timeout or a signal.
func afterGrace(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(parent, func() { time.AfterFunc(grace, cancel) })
	return ctx, func() {
		stop()
		cancel()
	}
}

// ignoreSIGPIPE makes a closed stdout or stderr an error that the write
// returns (EPIPE) instead of the end of vmm: Go's runtime kills a program
// with SIGPIPE when a write to fd 1 or 2 fails so, unless the program
// asked for SIGPIPE with signal.Notify (os/signal, "SIGPIPE"). Killed,
// vmm would leave the terminal raw, the disks unsynced, -out not
// extracted and its scratch image in /tmp. Notify rather than Ignore:
// an ignored SIGPIPE would be inherited by anything vmm ever started.
// The registration lasts for the life of the process, through the very
// last write.
func ignoreSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
}
