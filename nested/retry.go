package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// WithL1 runs fn in a fresh L1 and closes it afterwards. If fn fails with
// ErrFrozen, it says so on c.Log and tries once more in another fresh L1:
// freezes are a QEMU TCG flaw, not the code under test, but a second one
// in a row is reported rather than hidden.
func WithL1(ctx context.Context, c Config, fn func(l *L1) error) error {
	log := c.Log
	if log == nil {
		log = io.Discard
	}
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
		if errors.Is(err, ErrFrozen) && attempt == 1 {
			fmt.Fprintf(log, "nested: L1 froze (%s); retrying once in a fresh L1\n", firstLine(err))
			continue
		}
		if attempt > 1 {
			return fmt.Errorf("attempt %d (after a frozen L1): %w", attempt, err)
		}
		return err
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
