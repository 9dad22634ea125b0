package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
//
// A stop that comes while the machine is being built (between
// startBuilding and started) makes vmm exit at once, with one line and
// no goroutines: the build holds nothing that an orderly stop would
// finish (no guest, no disk written), and it may be waiting on an input
// it cannot be told to give up, a kernel read from a pipe whose writer
// is slow or silent (-kernel <(...)), where a wait of stopBackstop would
// ignore the deadline or the Ctrl-C the user gave, and the build's own
// error, if one came meanwhile, would be lost after the stop's grace for
// messages.
// Everything before the build (the terminal made raw, the job's files)
// is done and registered by then; a stop before it is seen by
// startBuilding, and runMode ends the ordinary way.
type backstop struct {
	stderr *os.File
	exit   func(int)

	mu       sync.Mutex
	disarmed bool
	stopped  bool // the run's context ended with a stop
	building bool // between startBuilding and started
	firing   bool // fireEarly has begun: the process is ending
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
		b.stopped = true
		switch {
		case b.disarmed:
		case b.building:
			b.firing = true
			go b.fireEarly(cause, status)
		default:
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

// startBuilding tells the backstop the machine is being built, from now
// until started: a stop meanwhile ends vmm at once (fireEarly). It
// returns false, and changes nothing, if the run was stopped already:
// runMode then ends it the ordinary way, without building.
func (b *backstop) startBuilding() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.building = true
	return true
}

// started tells the backstop the machine is built: from now on a stop
// gets stopBackstop to finish in order. It returns false if a stop
// during the build has already begun to end vmm (fireEarly), which the
// caller must let finish, doing nothing more.
func (b *backstop) started() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.building = false
	return !b.firing
}

// onExit registers f to run if the backstop fires; it runs the cleanups
// latest first, as defers do.
func (b *backstop) onExit(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}

// cleanUp runs the cleanups, unless runMode has returned; ok says it
// did.
func (b *backstop) cleanUp() (ok bool) {
	b.mu.Lock()
	if b.disarmed {
		b.mu.Unlock()
		return false
	}
	cleanups := b.cleanups
	b.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return true
}

// fireEarly is the backstop for a stop while the machine is being built:
// the cleanups, one line, the stop's status, at once.
func (b *backstop) fireEarly(cause error, status int) {
	if !b.cleanUp() {
		return
	}
	if line := stopBeforeStart(cause); line != "" {
		b.writeLast(line + "\n")
	}
	b.exit(status)
}

// stopBeforeStart is the line for a stop that came before the guest
// started: -timeout's or a signal's; none for a quit from the console
// (status 0, as a quit always is).
func stopBeforeStart(cause error) string {
	var te errTimeout
	var se signalError
	switch {
	case errors.As(cause, &te):
		return fmt.Sprintf("vmm: -timeout %v reached before the guest started", te.d)
	case errors.As(cause, &se):
		return fmt.Sprintf("vmm: stopped by %v before the guest started", se.sig)
	}
	return ""
}

// writeLast writes vmm's last words on stderr, which may be a pipe nobody
// reads: the text gets a moment, the exit does not wait.
func (b *backstop) writeLast(text string) {
	written := make(chan struct{})
	go func() {
		io.WriteString(b.stderr, text)
		close(written)
	}()
	select {
	case <-written:
	case <-time.After(500 * time.Millisecond):
	}
}

func (b *backstop) fire(cause error, status int) {
	if !b.cleanUp() {
		return
	}
	// What held the stop up, for a bug report: every goroutine, as
	// Go's SIGQUIT dump gives them (the sandbox allows nothing more,
	// such as listing /proc/self/task). The one-line reason comes last
	// too, where a reader of the tail sees it. stderr may be a pipe
	// nobody reads: the text gets a moment, the exit does not wait.
	line := fmt.Sprintf("vmm: %v; the machine did not stop within %v after that: exiting without it", cause, stopBackstop)
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	b.writeLast(fmt.Sprintf("\r\n%s; its goroutines:\n%s\n%s\n", line, buf, line))
	b.exit(status)
}
