package nested

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A command run under ExecWatch whose output stops (fakeWatched) while
// the fake L1 shows CPU 1 held inside its guest is retried as the
// emulator's, whether vmm's -timeout ended it or it never answered by
// its deadline, though the CPU ticks again by then; in an L1 whose CPUs
// all tick the same stall fails the test, with the consoles' tails and
// the looks at L1's CPUs, and is not retried. So does a run whose
// output moved on after a look found the CPU held and then stalled
// with every CPU ticking.
//
// A command with no answer by the Exec's deadline ends with "no reply to
// exec within" or "waiting for reply to exec: context deadline
// exceeded", whichever of the request's timer and its context fires
// first: both are that deadline.
func TestFakeWatchedRun(t *testing.T) {
	tests := []struct {
		name     string
		mode     string        // fakeQEMU's; "held-once" is held in the first L1 only
		how      string        // fakeWatched's "forever" or "recovers", or ""
		limit    time.Duration // the Exec's deadline
		attempts int
		wantErr  []string // what the final error says; none: success
		notHeld  bool     // the final error must not wrap ErrCPUHeld
		wantLog  []string // what WithL1 logged
	}{
		{name: "held, vmm's -timeout", mode: "held-once", limit: time.Minute, attempts: 2,
			wantLog: []string{"nested: RETRY", "an L1 CPU held inside its guest (CPU 1 took no timer tick in 2s, its NMI backtrace in KVM_RUN (looked ", "status 124"}},
		{name: "held, no answer by the deadline", mode: "held-once", how: "forever", limit: 2500 * time.Millisecond, attempts: 2,
			wantLog: []string{"nested: RETRY", "an L1 CPU held inside its guest (CPU 1 took no timer tick", "reply to exec"}},
		{name: "stall, every CPU ticking", mode: "stall", limit: time.Minute, attempts: 1, notHeld: true,
			wantErr: []string{"ended by vmm's -timeout (status 124)", "--- job console (tail) ---", "--- L1 kernel log (tail) ---",
				"--- L1's CPUs while the run's output stood still ---", "; its output moved ", ": no CPU held", "L1's CPU times (/proc/stat)"}},
		{name: "stall, no answer, every CPU ticking", mode: "stall", how: "forever", limit: 2500 * time.Millisecond, attempts: 1, notHeld: true,
			wantErr: []string{"reply to exec", "--- job console (tail) ---", "--- L1 kernel log (tail) ---",
				"--- L1's CPUs while the run's output stood still ---", ": no CPU held"}},
		{name: "held, moved on, then stalled with every CPU ticking", mode: "held", how: "recovers", limit: time.Minute, attempts: 1, notHeld: true,
			wantErr: []string{"ended by vmm's -timeout (status 124)", "--- L1's CPUs while the run's output stood still ---",
				": held: CPU 1 took no timer tick in 2s, its NMI backtrace in KVM_RUN (the output moved after it)", ": no CPU held\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mode := tt.mode
			if mode == "held-once" {
				mode = "held-once:" + filepath.Join(t.TempDir(), "held")
			}
			c := fakeConfig(t, mode)
			// No freeze here: fakeConfig's 300 ms of silence would
			// take a busy test machine's hiccup for one, and these
			// runs last seconds.
			c.FreezeTimeout = 10 * time.Second
			var log bytes.Buffer
			c.Log = &log
			attempts := 0
			err := WithL1(t.Context(), c, func(l *L1) error {
				attempts++
				progress := filepath.Join(t.TempDir(), "progress")
				args := []string{"watched", progress}
				if tt.how != "" {
					args = append(args, tt.how)
				}
				ctx, cancel := context.WithTimeout(t.Context(), tt.limit)
				defer cancel()
				run, err := l.ExecWatch(ctx, Watch{ProgressFile: progress, Poll: 20 * time.Millisecond, Stall: 300 * time.Millisecond}, args...)
				if err != nil {
					return err
				}
				switch run.Code {
				case 0:
					return nil
				case 124:
					return run.TimedOut(fmt.Errorf("the command ended by vmm's -timeout (status 124), want 0; it printed %q", run.Output))
				}
				return fmt.Errorf("the command ended with status %d, want 0", run.Code)
			})
			if attempts != tt.attempts {
				t.Errorf("%d attempts, want %d; error: %v", attempts, tt.attempts, err)
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("WithL1 = %v, want success", err)
			}
			if len(tt.wantErr) > 0 && err == nil {
				t.Fatalf("WithL1 succeeded, want an error saying %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if tt.notHeld && errors.Is(err, ErrCPUHeld) {
				t.Errorf("error wraps ErrCPUHeld with every CPU ticking: %v", err)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(log.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, log.String())
				}
			}
		})
	}
}

// A look at L1's CPUs falls due after Stall of still output (counted
// from its last move or the last look's end, a bounded number of
// times), and as a deadline draws near with the output still; never
// again once a look since the output's last move found a CPU held.
func TestWatchLogDue(t *testing.T) {
	s := time.Second
	held := cpuSample{held: []string{"1"}}
	tests := []struct {
		name       string
		progress   []time.Duration
		looks      []look
		stallLooks int
		deadlines  []time.Duration
		now        time.Duration
		want       bool
	}{
		{name: "quiet from the start, short of Stall", now: 44 * s},
		{name: "quiet from the start, Stall reached", now: 45 * s, want: true},
		{name: "moved lately", progress: []time.Duration{10 * s, 30 * s}, now: 60 * s},
		{name: "still since the last move", progress: []time.Duration{10 * s, 30 * s}, now: 75 * s, want: true},
		{name: "looked lately", looks: []look{{at: 45 * s, done: 48 * s}}, now: 90 * s},
		{name: "Stall since the last look ended", looks: []look{{at: 45 * s, done: 48 * s}}, now: 93 * s, want: true},
		{name: "stall looks used up", looks: []look{{at: 45 * s, done: 48 * s}}, stallLooks: maxStallLooks, now: 200 * s},
		{name: "held found since the last move", looks: []look{{cpuSample: held, at: 45 * s, done: 48 * s}}, now: 200 * s},
		{name: "held found, then the output moved", progress: []time.Duration{50 * s}, looks: []look{{cpuSample: held, at: 45 * s, done: 48 * s}}, now: 95 * s, want: true},
		{name: "deadline near, still long enough", progress: []time.Duration{150 * s}, deadlines: []time.Duration{240 * s}, now: 225 * s, want: true},
		{name: "deadline near, moved lately", progress: []time.Duration{215 * s}, deadlines: []time.Duration{240 * s}, now: 225 * s},
		{name: "deadline not near yet", progress: []time.Duration{150 * s}, stallLooks: maxStallLooks, deadlines: []time.Duration{240 * s}, now: 215 * s},
		{name: "deadline near, looked since", progress: []time.Duration{150 * s}, looks: []look{{at: 222 * s, done: 224 * s}}, deadlines: []time.Duration{240 * s}, now: 230 * s},
		{name: "deadline near, looked before it came near", progress: []time.Duration{150 * s}, looks: []look{{at: 195 * s, done: 198 * s}}, deadlines: []time.Duration{240 * s}, now: 230 * s, want: true},
		{name: "deadline near, stall looks used up", progress: []time.Duration{150 * s}, stallLooks: maxStallLooks, deadlines: []time.Duration{240 * s}, now: 225 * s, want: true},
		{name: "deadline passed", progress: []time.Duration{150 * s}, stallLooks: maxStallLooks, deadlines: []time.Duration{240 * s}, now: 245 * s},
		{name: "the second of two deadlines", progress: []time.Duration{150 * s}, looks: []look{{at: 225 * s, done: 228 * s}}, stallLooks: maxStallLooks, deadlines: []time.Duration{240 * s, 300 * s}, now: 285 * s, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := watchLog{poll: 5 * s, stall: 45 * s, deadlines: tt.deadlines, progress: tt.progress, looks: tt.looks, stallLooks: tt.stallLooks}
			if got := w.due(tt.now); got != tt.want {
				t.Errorf("due(%v) = %v, want %v", tt.now, got, tt.want)
			}
		})
	}
}

// The looks that speak for how a run ended are those since its output
// last moved, but for moves in its last endGrace (vmm's last words).
func TestWatchLogCounted(t *testing.T) {
	s := time.Second
	tests := []struct {
		name     string
		progress []time.Duration
		looks    []time.Duration // when each began
		end      time.Duration
		want     []time.Duration
	}{
		{name: "no look", progress: []time.Duration{10 * s}, end: 240 * s},
		{name: "all since the last move", progress: []time.Duration{10 * s}, looks: []time.Duration{55 * s, 100 * s}, end: 240 * s, want: []time.Duration{55 * s, 100 * s}},
		{name: "one before a move", progress: []time.Duration{10 * s, 60 * s}, looks: []time.Duration{55 * s, 105 * s}, end: 240 * s, want: []time.Duration{105 * s}},
		{name: "vmm's last words", progress: []time.Duration{10 * s, 236 * s}, looks: []time.Duration{55 * s, 220 * s}, end: 240 * s, want: []time.Duration{55 * s, 220 * s}},
		{name: "moves until the end", progress: []time.Duration{10 * s, 220 * s, 236 * s}, looks: []time.Duration{55 * s}, end: 240 * s},
		{name: "a look after the end", progress: []time.Duration{10 * s, 220 * s}, looks: []time.Duration{55 * s, 241 * s}, end: 240 * s, want: []time.Duration{241 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := watchLog{poll: 5 * s, stall: 45 * s, progress: tt.progress, end: tt.end}
			for _, at := range tt.looks {
				w.add(at, at+3*s, cpuSample{})
			}
			var got []time.Duration
			for _, l := range w.counted() {
				got = append(got, l.at)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("counted looks began at %v, want %v", got, tt.want)
			}
		})
	}
}
