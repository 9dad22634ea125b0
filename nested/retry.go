package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// maxAttempts bounds the fresh L1s WithL1 starts for one fn: a freeze
// is retried once, a guest crash twice, and never more than this in all.
// At the hostile test's measured crash rate per attempt (about one in
// ten), three attempts fail on the emulator about once in a thousand
// runs, while a fault of vmm's own, which comes back every time, is
// still reported.
const maxAttempts = 3

// WithL1 runs fn in a fresh L1 and closes it afterwards. If fn fails with
// ErrFrozen or ErrGuestCrashed, it says so on c.Log and tries again in
// another fresh L1: both are QEMU TCG flaws, not the code under test.
// A second freeze, a third crash, or any other error is returned.
func WithL1(ctx context.Context, c Config, fn func(l *L1) error) error {
	log := c.Log
	if log == nil {
		log = io.Discard
	}
	var freezes, crashes int
	for attempt := 1; ; attempt++ {
		l, err := Start(ctx, c)
		if err != nil {
			return err
		}
		err = fn(l)
		cerr := l.Close()
		if err == nil {
			return cerr
		}
		retry := ""
		switch {
		case attempt >= maxAttempts:
		case errors.Is(err, ErrFrozen) && freezes == 0:
			freezes++
			retry = "L1 froze"
		case errors.Is(err, ErrGuestCrashed) && crashes < 2:
			crashes++
			retry = "the guest crashed under emulated nested SVM"
		}
		if retry == "" {
			if attempt > 1 {
				return fmt.Errorf("attempt %d (after %d frozen L1s and %d emulator crashes): %w", attempt, freezes, crashes, err)
			}
			return err
		}
		fmt.Fprintf(log, "nested: %s (%s); retrying in a fresh L1 (attempt %d of at most %d)\n", retry, firstLine(err), attempt+1, maxAttempts)
	}
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
