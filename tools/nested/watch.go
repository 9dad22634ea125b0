package nested

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// A command run through Exec (tools/e2e's redirect, which runs vmm) is
// invisible to the host until it ends, unlike a Job, whose console the
// host reads as it comes and whose timed-out wait looks at L1's CPUs
// (withThreads). When the emulator holds the jobs' CPU inside L2, such a
// run stalls until vmm's own -timeout ends it (status 124) or the
// command's deadline does, and by then the CPU may be running again, so
// a look after the end can find nothing. ExecWatch therefore watches
// the command's progress while it runs and looks at L1's CPUs (the same
// probe and HeldCPUs as a timed-out Job wait) when its output stands
// still; WatchedExec.TimedOut then gives the caller's failure the
// evidence, wrapping ErrCPUHeld when a look found a CPU held, which
// Judge retries as it does a Job's.

// Watch says how ExecWatch watches a command.
type Watch struct {
	// ProgressFile is a file in L1 that the command rewrites whenever
	// its output grows (tools/e2e/cmd/redirect's -progress): any change
	// of its contents is progress. The agent reads it itself
	// (proto.OpReadFile), without starting a process on the jobs' CPU,
	// where the run is. Empty: the command shows no progress, and its
	// output counts as standing still from its start.
	ProgressFile string
	// Deadlines are when, counted from the command's start, something
	// will cut the run off: vmm's own -timeout, the command's. The
	// context's deadline (or Config.ExecTimeout) is one too. A run
	// whose output stands still when one draws near is looked at then,
	// while what stalled it may still be holding the CPU.
	Deadlines []time.Duration
	// Poll is how often the progress file is read; default 5 s. The
	// margins around the deadlines and the run's end scale with it.
	Poll time.Duration
	// Stall is how long the output may stand still before L1's CPUs
	// are looked at; default 45 s.
	Stall time.Duration
}

const (
	// defaultWatchPoll is Watch.Poll's default: a read of the progress
	// file is one small round trip on the control channel, so polling
	// costs next to nothing, and 5 s is fine enough against Stall.
	defaultWatchPoll = 5 * time.Second
	// defaultWatchStall is Watch.Stall's default. It is longer than a
	// healthy `vmm run` in L1 stays quiet: a nested boot prints nothing
	// for 5-15 s, twice that on a shared CPU, and TestRunPipedStdin's
	// job writes a block every few seconds once it runs; so a healthy
	// run is seldom looked at, and a look costs it little anyway (the
	// agent works from the other CPU; the jobs' CPU takes one NMI). It
	// is well below the shortest -timeout the tests give vmm (3
	// minutes), so a stall that starts early enough to cost vmm its
	// deadline is looked at during it, more than once if it goes on;
	// one that starts later, by the look as the deadline draws near.
	defaultWatchStall = 45 * time.Second
	// maxStallLooks bounds the looks one run takes for a stall; those
	// before its deadlines come on top. A run quiet by design (a
	// virtio-fs transfer whose tool reports at its end, ptyends' run)
	// would otherwise take one every Stall for all its minutes, each
	// filling L1's log with backtraces.
	maxStallLooks = 5
)

func (w Watch) withDefaults() Watch {
	if w.Poll <= 0 {
		w.Poll = defaultWatchPoll
	}
	if w.Stall <= 0 {
		w.Stall = defaultWatchStall
	}
	return w
}

// WatchedExec is a command ExecWatch ran: its combined output and
// status (as Exec returns them), and what L1's CPUs showed while its
// output stood still, for TimedOut.
type WatchedExec struct {
	Output string
	Code   int

	l     *L1
	start time.Time
	log   watchLog
}

// ExecWatch is Exec for a command that shows its progress in
// w.ProgressFile. While the command runs it reads that file every
// w.Poll, and looks at L1's CPUs (probeCPUs, then HeldCPUs) when the
// output has stood still for w.Stall, again each further w.Stall it
// stands still (at most maxStallLooks times), and once more as each
// deadline draws near with the output still: vmm's -timeout ends a
// stalled run after the emulator may have let go of the CPU. A look
// takes a few seconds of the agent's (up to about 26 s); the command
// runs on meanwhile.
//
// If the command gave no answer by the Exec's deadline (the command's
// own deadline, seen from the host) with L1 alive, the error has
// already been through TimedOut. Otherwise the caller, which knows how
// the command ended, calls TimedOut for a run that a timeout ended.
func (l *L1) ExecWatch(ctx context.Context, w Watch, args ...string) (*WatchedExec, error) {
	w = w.withDefaults()
	run := &WatchedExec{l: l, start: l.now()}
	limit := l.cfg.ExecTimeout
	if d, ok := ctx.Deadline(); ok {
		limit = d.Sub(run.start)
	}
	run.log = watchLog{poll: w.Poll, stall: w.Stall, deadlines: append(slices.Clone(w.Deadlines), limit)}

	type result struct {
		out  string
		code int
		err  error
		end  time.Time
	}
	done := make(chan result, 1)
	go func() {
		out, code, err := l.Exec(ctx, args...)
		done <- result{out, code, err, l.now()}
	}()
	tick := time.NewTicker(w.Poll)
	defer tick.Stop()
	progress, seen := "", false
	for {
		select {
		case r := <-done:
			run.log.end = r.end.Sub(run.start)
			run.Output, run.Code = r.out, r.code
			if r.err != nil && l.deadErr() == nil && run.log.end >= limit {
				return run, run.TimedOut(r.err)
			}
			return run, r.err
		case <-tick.C:
		}
		if w.ProgressFile != "" {
			// A failed read (the file not written yet, L1 busy) is
			// neither progress nor its absence. The read is not cut
			// short by the Exec's deadline either: its answer would
			// come anyway, to a request no longer waited for.
			if b, err := l.readFile(context.WithoutCancel(ctx), w.ProgressFile); err == nil {
				if seen && string(b) != progress {
					run.log.progress = append(run.log.progress, l.now().Sub(run.start))
				}
				progress, seen = string(b), true
			}
		}
		if run.log.due(l.now().Sub(run.start)) {
			// Not cut short by the command's deadline: the look
			// before it is one of the point.
			run.look(context.WithoutCancel(ctx))
		}
	}
}

// readFileTimeout bounds a read of a file in L1 (proto.OpReadFile).
const readFileTimeout = 10 * time.Second

// readFile returns the start of a small file in L1, read by the agent.
func (l *L1) readFile(ctx context.Context, path string) ([]byte, error) {
	r, err := l.request(ctx, proto.Msg{Op: proto.OpReadFile, Args: []string{path}}, readFileTimeout)
	if err != nil {
		return nil, fmt.Errorf("nested: read %s in L1: %w", path, err)
	}
	if r.Op == proto.OpError {
		return nil, fmt.Errorf("nested: read %s in L1: %s", path, r.Error)
	}
	return r.Output, nil
}

// look takes one look at L1's CPUs and records it.
func (run *WatchedExec) look(ctx context.Context) {
	at := run.l.now().Sub(run.start)
	s := run.l.finishProbe(run.l.probeCPUs(ctx))
	run.log.add(at, run.l.now().Sub(run.start), s)
}

// TimedOut returns err, the caller's failure of this run, which a
// timeout ended (vmm's own -timeout, the command's deadline), with what
// L1's CPUs showed. If a look taken since the output last moved found
// a CPU held inside its guest (HeldCPUs), err wraps ErrCPUHeld, which
// Judge retries as the emulator's, as it does a timed-out Job wait's.
// With no look since then it takes one now, before concluding: a CPU
// still held shows so. Every look goes into the error with the tails
// of L1's consoles, so a stall without that evidence still fails with
// what there was to see.
//
// The caller rules out a crash of its own programs first (vmm's Go
// runtime crash is not the emulator's): Judge looks for one only on
// the job console, where an Exec's output never goes. A dead L1 gets
// no look: its death is Judge's evidence.
func (run *WatchedExec) TimedOut(err error) error {
	l := run.l
	var te *tailError
	if errors.Is(err, ErrCPUHeld) || errors.As(err, &te) && te.cpus != "" {
		return err // this run's evidence is in already
	}
	if l.deadErr() != nil {
		return l.withTails(err)
	}
	counted := run.log.counted()
	if len(counted) == 0 {
		run.look(context.Background())
		counted = run.log.counted()
	}
	for _, s := range counted {
		if len(s.held) > 0 {
			err = fmt.Errorf("%w: %s (looked %s): %w", ErrCPUHeld, heldSummary(s.held), run.log.when(s), err)
			break
		}
	}
	err = l.withTails(err)
	if errors.As(err, &te) {
		te.cpus = run.log.report()
	}
	return err
}

// watchLog is what ExecWatch saw of one run, in time since its start.
type watchLog struct {
	poll, stall time.Duration
	deadlines   []time.Duration

	progress   []time.Duration // when a read of the progress file found it changed
	looks      []look
	stallLooks int           // looks due to Stall alone
	end        time.Duration // when the command ended; 0 while it runs
}

// look is one look at L1's CPUs during (or after) a run.
type look struct {
	cpuSample
	at, done time.Duration // when it began and ended
	still    time.Duration // how long the output had stood still when it began
}

// nearDeadline is how long before a deadline a run whose output has
// stood still that long is looked at: four polls, 20 s by default, so
// that the look starts (at the next poll) with time to read the CPU
// counters for 2 s and get the backtraces while the run is still in
// KVM_RUN.
func (w *watchLog) nearDeadline() time.Duration { return 4 * w.poll }

// endGrace is the end of a run whose output moves do not count as
// progress (counted): three polls, 15 s by default. vmm's last words
// come then (its -timeout line, -out's extraction, the end of the
// guest's console), and say nothing of whether its guest was moving
// before.
func (w *watchLog) endGrace() time.Duration { return 3 * w.poll }

// lastProgress is when the output last moved up to t, or 0.
func (w *watchLog) lastProgress(t time.Duration) time.Duration {
	last := time.Duration(0)
	for _, p := range w.progress {
		if p <= t {
			last = p
		}
	}
	return last
}

// due says whether to look at L1's CPUs now (into the run), and counts
// the look if Stall made it due: when the output has stood still for
// stall since it last moved or the last look ended (at most
// maxStallLooks times), or when a deadline is nearDeadline away, the
// output has stood still that long, and no look began since that
// deadline came near. Once a look since the output last moved found a
// CPU held, there is nothing more to find.
func (w *watchLog) due(now time.Duration) bool {
	moved := w.lastProgress(now)
	lastBegan, lastEnded := time.Duration(-1), time.Duration(-1)
	for _, l := range w.looks {
		if l.at >= moved && len(l.held) > 0 {
			return false
		}
		lastBegan, lastEnded = l.at, l.done
	}
	if w.stallLooks < maxStallLooks && now-max(moved, lastEnded) >= w.stall {
		w.stallLooks++
		return true
	}
	near := w.nearDeadline()
	for _, d := range w.deadlines {
		if now >= d-near && now < d && now-moved >= near && lastBegan < d-near {
			return true
		}
	}
	return false
}

// add records a look that began at at and ended at done.
func (w *watchLog) add(at, done time.Duration, s cpuSample) {
	w.looks = append(w.looks, look{cpuSample: s, at: at, done: done, still: at - w.lastProgress(at)})
}

// counted returns the looks that speak for how the run ended: those
// taken since its output last moved, not counting moves within
// endGrace of its end. An earlier look that found a CPU held is no
// evidence: the run went on after it.
func (w *watchLog) counted() []look {
	moved := w.lastProgress(w.end - w.endGrace())
	var out []look
	for _, l := range w.looks {
		if l.at >= moved {
			out = append(out, l)
		}
	}
	return out
}

// when says when a look was taken.
func (w *watchLog) when(l look) string {
	if w.end > 0 && l.at >= w.end {
		return fmt.Sprintf("after the run ended at %.1fs, its output still since %.1fs", w.end.Seconds(), (l.at - l.still).Seconds())
	}
	return fmt.Sprintf("%.1fs into the run, its output still for %.1fs", l.at.Seconds(), l.still.Seconds())
}

// report is every look in one line each, then the whole of the one
// that decides (the first counted look that found a CPU held, else the
// last look): the agent's readings and L1's kernel log after them.
func (w *watchLog) report() string {
	var b strings.Builder
	counted := w.counted()
	var decisive *look
	for i := range counted {
		if len(counted[i].held) > 0 {
			decisive = &counted[i]
			break
		}
	}
	if decisive == nil && len(w.looks) > 0 {
		decisive = &w.looks[len(w.looks)-1]
	}
	fmt.Fprintf(&b, "%d look(s), %d since the output last moved; the run ended at %.1fs; its output moved %d time(s), last at %.1fs\n",
		len(w.looks), len(counted), w.end.Seconds(), len(w.progress), w.lastProgress(w.end).Seconds())
	for i, l := range w.looks {
		held := "no CPU held"
		if len(l.held) > 0 {
			held = "held: " + heldSummary(l.held)
		}
		if i < len(w.looks)-len(counted) {
			held += " (the output moved after it)"
		}
		fmt.Fprintf(&b, "  %s: %s\n", w.when(l), held)
	}
	if decisive != nil {
		fmt.Fprintf(&b, "--- the look %s ---\n%s--- L1 kernel log since ---\n%s\n",
			w.when(*decisive), decisive.note, lastLines([]byte(decisive.klog), threadsLogLines))
	}
	return b.String()
}
