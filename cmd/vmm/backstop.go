package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

// stopBackstop is how long vmm may take to stop once -timeout, a signal
// or Ctrl-A x has ended the run, before it exits without waiting for the
// rest. The ordinary stop takes milliseconds: the vCPUs leave the guest,
// the devices finish the requests they hold, the disks are flushed, the
// output drains (within a second, see hostio.go). Something that never
// lets go (a device request the host side never completes, a thread the
// host does not schedule) must not turn a deadline the user gave into a
// hang: a CI runner that gets no exit status cannot even tell a hung job
// from a hung vmm. Ten seconds leaves a flush of a busy disk its time;
// what the guest wrote is in the host's page cache either way.
const stopBackstop = 10 * time.Second

// backstop makes vmm exit stopBackstop after the run was stopped, with
// the stop's exit status and one line on stderr saying so, if runMode
// has not returned by then. It first runs what must not be skipped even
// then: the terminal's mode put back, the scratch files removed.
type backstop struct {
	stderr *os.File
	exit   func(int)

	mu       sync.Mutex
	disarmed bool
	timer    *time.Timer
	cleanups []func()
}

// armBackstop watches ctx, the run's context: when it ends with a stop
// cause (stoppedStatus, or a quit from the console), the clock starts.
// disarm, which runMode defers, stops it.
func armBackstop(ctx context.Context, stderr *os.File, exit func(int)) (b *backstop, disarm func()) {
	b = &backstop{stderr: stderr, exit: exit}
	stopWatch := context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		status, ok := stoppedStatus(cause)
		if errors.Is(cause, errQuit) {
			status, ok = 0, true
		}
		if !ok {
			return // runMode is returning on its own
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.disarmed {
			b.timer = time.AfterFunc(stopBackstop, func() { b.fire(cause, status) })
		}
	})
	return b, func() {
		stopWatch()
		b.mu.Lock()
		defer b.mu.Unlock()
		b.disarmed = true
		if b.timer != nil {
			b.timer.Stop()
		}
	}
}

// onExit registers f to run if the backstop fires; it runs the cleanups
// latest first, as defers do.
func (b *backstop) onExit(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}

func (b *backstop) fire(cause error, status int) {
	b.mu.Lock()
	if b.disarmed {
		b.mu.Unlock()
		return
	}
	cleanups := b.cleanups
	b.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	// What held the stop up, for a bug report: every goroutine, as
	// Go's SIGQUIT dump gives them (the sandbox allows nothing more,
	// such as listing /proc/self/task). The one-line reason comes last
	// too, where a reader of the tail sees it. stderr may be a pipe
	// nobody reads: the text gets a moment, the exit does not wait.
	line := fmt.Sprintf("vmm: %v; the machine did not stop within %v after that: exiting without it", cause, stopBackstop)
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	written := make(chan struct{})
	go func() {
		fmt.Fprintf(b.stderr, "\r\n%s; its goroutines:\n%s\n%s\n", line, buf, line)
		close(written)
	}()
	select {
	case <-written:
	case <-time.After(500 * time.Millisecond):
	}
	b.exit(status)
}
