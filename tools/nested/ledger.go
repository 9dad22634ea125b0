package nested

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables through which `make e2e` gives every test binary
// of the suite the same retry ledger (see Ledger and LedgerFromEnv).
const (
	LedgerEnv = "NESTED_RETRY_LEDGER"
	BudgetEnv = "NESTED_RETRY_BUDGET"
)

// DefaultBudget is Ledger.Budget when BudgetEnv is unset: two retries in
// a whole suite keep a rare emulator fault from failing CI, while a
// fault that keeps coming back (more likely vmm's than the emulator's)
// fails the run instead of being retried away.
const DefaultBudget = 2

// ErrBudgetSpent means WithL1 did not retry because the suite's ledger
// already holds its budget of retries.
var ErrBudgetSpent = errors.New("the suite's retry budget is spent")

// Ledger is a file, shared by all the test binaries of one suite run,
// with one line per retry any of them made. It exists because `go test`
// runs each package as a separate process (in parallel), so no in-memory
// counter sees the whole suite. Appends take an exclusive flock, so two
// binaries retrying at once cannot both take the last unit of budget.
//
// The zero Ledger (no Path) records nothing and never refuses: WithL1's
// per-call bounds still apply.
type Ledger struct {
	Path   string
	Budget int    // retries the whole suite may make; 0 allows none
	Owner  string // who records, e.g. the test's name; written on each line
}

// LedgerFromEnv is the ledger `make e2e` configures through LedgerEnv
// and BudgetEnv (DefaultBudget if unset); the zero Ledger if LedgerEnv
// is unset.
func LedgerFromEnv(getenv func(string) string) (Ledger, error) {
	l := Ledger{Path: getenv(LedgerEnv), Budget: DefaultBudget}
	if l.Path == "" {
		return Ledger{}, nil
	}
	if s := getenv(BudgetEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Ledger{}, fmt.Errorf("nested: %s=%q: want a retry count >= 0", BudgetEnv, s)
		}
		l.Budget = n
	}
	return l, nil
}

// Take records one retry for reason, if the budget allows. It returns
// the ledger's lines before this one; with ErrBudgetSpent when the
// budget does not allow it, in which case nothing is written.
func (l Ledger) Take(now time.Time, reason string) ([]string, error) {
	if l.Path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("nested: retry ledger: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("nested: retry ledger %s: lock: %w", l.Path, err)
	}
	// Closing the file releases the lock.
	b, err := os.ReadFile(l.Path)
	if err != nil {
		return nil, fmt.Errorf("nested: retry ledger: %w", err)
	}
	lines := ledgerLines(b)
	if len(lines) >= l.Budget {
		return lines, fmt.Errorf("%w (%d of %d, ledger %s)", ErrBudgetSpent, len(lines), l.Budget, l.Path)
	}
	owner := l.Owner
	if owner == "" {
		owner = "-"
	}
	line := fmt.Sprintf("%s %s: %s\n", now.UTC().Format(time.RFC3339), owner, oneLine(reason))
	if _, err := f.WriteString(line); err != nil {
		return lines, fmt.Errorf("nested: retry ledger %s: %w", l.Path, err)
	}
	return lines, nil
}

// Lines returns the retries recorded so far.
func (l Ledger) Lines() ([]string, error) {
	if l.Path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nested: retry ledger: %w", err)
	}
	return ledgerLines(b), nil
}

func ledgerLines(b []byte) []string {
	var lines []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, string(l))
		}
	}
	return lines
}

// oneLine keeps a ledger entry on its line: a reason quoting guest
// output may hold newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
