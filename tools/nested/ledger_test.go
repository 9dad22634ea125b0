package nested

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLedgerFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Ledger
		wantErr bool
	}{
		{"unset", nil, Ledger{}, false},
		{"budget without ledger", map[string]string{BudgetEnv: "5"}, Ledger{}, false},
		{"default budget", map[string]string{LedgerEnv: "/x"}, Ledger{Path: "/x", Budget: DefaultBudget}, false},
		{"budget", map[string]string{LedgerEnv: "/x", BudgetEnv: "3"}, Ledger{Path: "/x", Budget: 3}, false},
		{"no retries", map[string]string{LedgerEnv: "/x", BudgetEnv: "0"}, Ledger{Path: "/x", Budget: 0}, false},
		{"negative", map[string]string{LedgerEnv: "/x", BudgetEnv: "-1"}, Ledger{}, true},
		{"junk", map[string]string{LedgerEnv: "/x", BudgetEnv: "two"}, Ledger{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LedgerFromEnv(func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("LedgerFromEnv = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLedgerTake(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		budget int
		takes  int
		grants int
	}{
		{"none allowed", 0, 2, 0},
		{"within budget", 2, 2, 2},
		{"over budget", 2, 5, 2},
		{"one", 1, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := Ledger{Path: filepath.Join(t.TempDir(), "ledger"), Budget: tt.budget, Owner: "TestX/sub"}
			grants := 0
			for i := range tt.takes {
				earlier, err := l.Take(now, fmt.Sprintf("reason %d\nsecond line", i))
				switch {
				case err == nil:
					grants++
					if len(earlier) != i {
						t.Errorf("take %d: %d earlier lines, want %d", i, len(earlier), i)
					}
				case errors.Is(err, ErrBudgetSpent):
					if len(earlier) != tt.budget {
						t.Errorf("refusal lists %d lines, want %d", len(earlier), tt.budget)
					}
				default:
					t.Fatal(err)
				}
			}
			if grants != tt.grants {
				t.Errorf("%d retries granted, want %d", grants, tt.grants)
			}
			lines, err := l.Lines()
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != tt.grants {
				t.Fatalf("ledger has %d lines, want %d: %q", len(lines), tt.grants, lines)
			}
			for i, line := range lines {
				want := fmt.Sprintf("2026-01-02T03:04:05Z TestX/sub: reason %d second line", i)
				if line != want {
					t.Errorf("line %d = %q, want %q", i, line, want)
				}
			}
		})
	}
}

// Test binaries of one suite take from the same ledger at once; the
// lock keeps them within the budget.
func TestLedgerConcurrent(t *testing.T) {
	l := Ledger{Path: filepath.Join(t.TempDir(), "ledger"), Budget: 2}
	var wg sync.WaitGroup
	var mu sync.Mutex
	grants := 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Take(time.Now(), fmt.Sprint("racer ", i))
			if err != nil && !errors.Is(err, ErrBudgetSpent) {
				t.Error(err)
			}
			if err == nil {
				mu.Lock()
				grants++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	lines, err := l.Lines()
	if err != nil {
		t.Fatal(err)
	}
	if grants != 2 || len(lines) != 2 {
		t.Errorf("%d grants, %d lines; want 2 of each", grants, len(lines))
	}
}

func TestLedgerZeroAndErrors(t *testing.T) {
	var zero Ledger
	for range 5 {
		if _, err := zero.Take(time.Now(), "x"); err != nil {
			t.Fatalf("zero ledger refused: %v", err)
		}
	}
	if lines, err := (Ledger{Path: filepath.Join(t.TempDir(), "never")}).Lines(); err != nil || lines != nil {
		t.Errorf("missing ledger: %q %v", lines, err)
	}
	bad := Ledger{Path: filepath.Join(t.TempDir(), "no", "such", "dir"), Budget: 2}
	if _, err := bad.Take(time.Now(), "x"); err == nil || errors.Is(err, ErrBudgetSpent) || !strings.Contains(err.Error(), "retry ledger") {
		t.Errorf("unwritable ledger: %v", err)
	}
	if _, err := os.Stat(bad.Path); err == nil {
		t.Error("unwritable ledger was created")
	}
}
