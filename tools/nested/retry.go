package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
)

// defaultGuestCrashRetries is Config.GuestCrashRetries when unset: a
// normal boot rarely meets the emulator's guest crashes, and two retries
// make one a non-event while a fault of vmm's own, which comes back
// every time, is still reported.
const defaultGuestCrashRetries = 2

// WithL1 runs fn in a fresh L1 and closes it afterwards. If fn fails with
// ErrFrozen (retried once) or ErrGuestCrashed (retried up to
// c.GuestCrashRetries times), it says so on c.Log and tries again in
// another fresh L1: both are QEMU TCG flaws, not the code under test.
// Any other error, or one retry too many, is returned.
func WithL1(ctx context.Context, c Config, fn func(l *L1) error) error {
	log := c.Log
	if log == nil {
		log = io.Discard
	}
	crashRetries := c.GuestCrashRetries
	if crashRetries <= 0 {
		crashRetries = defaultGuestCrashRetries
	}
	var freezes, crashes int
	for attempt := 1; ; attempt++ {
		l, err := Start(ctx, c)
		if err != nil {
			return err
		}
		err = fn(l)
		if err != nil && !errors.Is(err, ErrGuestCrashed) {
			if why := GuestCrash(l.ConsoleTail(400)); why != "" {
				err = fmt.Errorf("%w (%s on the job console): %w", ErrGuestCrashed, why, err)
			}
		}
		cerr := l.Close()
		if err == nil {
			return cerr
		}
		retry := ""
		switch {
		case errors.Is(err, ErrFrozen) && freezes == 0:
			freezes++
			retry = "L1 froze"
		case errors.Is(err, ErrGuestCrashed) && crashes < crashRetries:
			crashes++
			retry = "the guest crashed under emulated nested SVM"
		}
		if retry == "" {
			if attempt > 1 {
				return fmt.Errorf("attempt %d (after %d frozen L1s and %d emulator crashes): %w", attempt, freezes, crashes, err)
			}
			return err
		}
		fmt.Fprintf(log, "nested: %s (%s); retrying in a fresh L1 (attempt %d)\n", retry, firstLine(err), attempt+1)
	}
}

// guestCrashRE finds the two ways emulated nested SVM kills a guest
// (ErrGuestCrashed): vmm's report of a triple fault, and the guest
// kernel's report of a CPU that stopped taking interrupts.
var guestCrashRE = regexp.MustCompile(`vmm: vCPU \d+: guest triple fault \(KVM_EXIT_SHUTDOWN\)|rcu: INFO: rcu_preempt (detected stalls on CPUs/tasks|self-detected stall on CPU)`)

// goCrashRE finds a Go runtime crash: a panic, a fatal error, or the
// goroutine dump either prints.
var goCrashRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[)`)

// GoCrash reports whether output holds a Go runtime crash.
func GoCrash(output string) bool { return goCrashRE.MatchString(output) }

// GuestCrash returns the line of a vmm run's output (console or stderr)
// that shows the emulator killed its guest, or "" if there is none or if
// vmm itself crashed: a Go crash is never the emulator's.
func GuestCrash(output string) string {
	if GoCrash(output) {
		return ""
	}
	return guestCrashRE.FindString(output)
}

// Retry is WithL1 for tests: progress goes to t.Log and failure is fatal.
func Retry(t testing.TB, c Config, fn func(l *L1) error) {
	t.Helper()
	if c.Log == nil {
		c.Log = testLog{t}
	}
	if err := WithL1(t.Context(), c, fn); err != nil {
		t.Fatal(err)
	}
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
