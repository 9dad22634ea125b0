package nested

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// StdinMode selects what a job reads.
type StdinMode string

const (
	// StdinTTY makes the job console the job's controlling terminal, in
	// cooked mode: the job sees what an interactive user's program sees.
	StdinTTY StdinMode = proto.StdinTTY
	// StdinPipe feeds console bytes to the job through a pipe. The console
	// is raw in both directions, so bytes pass exactly as sent.
	StdinPipe StdinMode = proto.StdinPipe
	// StdinNull gives the job /dev/null; the console is raw.
	StdinNull StdinMode = proto.StdinNull
)

// JobSpec is a job with the optional details Run does not ask for.
type JobSpec struct {
	Args  []string
	Stdin StdinMode
	Env   []string // added to L1's minimal environment (PATH, HOME, TERM)
	Rows  uint16   // terminal size for tty jobs; 0 leaves it unset
	Cols  uint16
}

// startTimeout bounds the wait for the agent to confirm a job started.
const startTimeout = 60 * time.Second

// maxJobBuffer bounds what a job keeps for Expect; a job nobody calls
// Expect on (an interactive session) must not grow without limit.
const maxJobBuffer = 16 << 20

// Job is a program running on L1's job console.
type Job struct {
	l  *L1
	id uint64

	// Guarded by l.mu.
	buf  []byte // console output not yet consumed by Expect
	done bool
	code int
}

func (j *Job) appendLocked(b []byte) {
	j.buf = append(j.buf, b...)
	if len(j.buf) > maxJobBuffer {
		j.buf = append(j.buf[:0:0], j.buf[len(j.buf)-maxJobBuffer/2:]...)
	}
}

// Run starts args in L1 on the job console. Only one job runs at a time.
func (l *L1) Run(ctx context.Context, args []string, stdin StdinMode) (*Job, error) {
	return l.RunJob(ctx, JobSpec{Args: args, Stdin: stdin})
}

// RunJob is Run with the options of a JobSpec.
func (l *L1) RunJob(ctx context.Context, spec JobSpec) (*Job, error) {
	if len(spec.Args) == 0 {
		return nil, errors.New("nested: run: no command")
	}
	if spec.Stdin == "" {
		spec.Stdin = StdinTTY
	}
	l.mu.Lock()
	if l.dead != nil {
		err := l.dead
		l.mu.Unlock()
		return nil, l.withTails(fmt.Errorf("nested: run %q: %w", spec.Args, err))
	}
	if l.job != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("nested: run %q: job %d is still running", spec.Args, l.job.id)
	}
	l.nextID++
	j := &Job{l: l, id: l.nextID}
	// Registered before the request so that the job's first output,
	// which can beat the "started" reply, lands in its buffer.
	l.job = j
	l.wd.arm(l.now())
	c := make(chan proto.Msg, 1)
	l.pending[j.id] = c
	l.mu.Unlock()

	fail := func(err error) (*Job, error) {
		l.mu.Lock()
		delete(l.pending, j.id)
		if l.job == j {
			l.job = nil
			l.wd.disarm()
		}
		l.mu.Unlock()
		return nil, l.withTails(fmt.Errorf("nested: run %q: %w", spec.Args, err))
	}
	err := l.send(proto.Msg{Op: proto.OpRun, ID: j.id, Args: spec.Args, Env: spec.Env,
		Stdin: string(spec.Stdin), Rows: spec.Rows, Cols: spec.Cols})
	if err != nil {
		return fail(err)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case r := <-c:
		if r.Op == proto.OpError {
			return fail(errors.New(r.Error))
		}
		return j, nil
	case <-l.deadCh:
		return fail(l.deadErr())
	case <-timer.C:
		return fail(fmt.Errorf("agent did not start the job within %v", startTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
}

// finishJob marks j done once the job's output has been delivered. The
// agent drains ttyS0 before reporting the exit, so by the time the exit
// message is read every console byte is in the console socket or in the
// console reader's hands; wait until neither holds any.
func (l *L1) finishJob(j *Job, code int) {
	deadline := l.now().Add(2 * time.Second)
	for clear := 0; clear < 2 && l.now().Before(deadline); {
		if l.consolePending() {
			clear = 0
		} else {
			clear++
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if j.done {
		return
	}
	j.done, j.code = true, code
	if l.job == j {
		l.job = nil
		l.wd.disarm()
	}
	l.broadcastLocked()
}

// Send writes s to the job console, as typed on a terminal: "\r" is Enter
// for tty jobs, "\x03" is ^C.
func (j *Job) Send(s string) error {
	return j.l.writeConsole([]byte(s))
}

func (l *L1) writeConsole(b []byte) error {
	if err := l.deadErr(); err != nil {
		return l.withTails(fmt.Errorf("nested: send to job console: %w", err))
	}
	l.con.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := l.con.Write(b); err != nil {
		return l.withTails(fmt.Errorf("nested: send to job console: %w", err))
	}
	return nil
}

// CloseStdin ends a pipe job's input, so it sees end of file.
func (j *Job) CloseStdin() error {
	return j.l.send(proto.Msg{Op: proto.OpEOF, ID: j.id})
}

// waitFor calls check under l.mu until it reports done, the timeout
// passes, or L1 dies. check's error ends the wait. A timeout on a
// running job returns late: after the watchdog's verdict if L1 had gone
// silent (freezeVerdict), else after the agent's report on vmm's
// threads (withThreads), up to about 35 s.
func (j *Job) waitFor(timeout time.Duration, what string, check func() (bool, error)) error {
	l := j.l
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		ok, err := check()
		dead := l.dead
		changed := l.changed
		l.mu.Unlock()
		if ok || err != nil {
			if err != nil {
				return l.withTails(err)
			}
			return nil
		}
		if dead != nil {
			return l.withTails(fmt.Errorf("nested: %s: %w", what, dead))
		}
		select {
		case <-changed:
		case <-deadline.C:
			l.mu.Lock()
			done := j.done
			l.mu.Unlock()
			if done {
				return l.withTails(fmt.Errorf("nested: %s: timed out after %v", what, timeout))
			}
			if err := l.freezeVerdict(); err != nil {
				return l.withTails(fmt.Errorf("nested: %s: timed out after %v with L1 silent, which then: %w", what, timeout, err))
			}
			return l.withThreads(l.withTails(fmt.Errorf("nested: %s: timed out after %v", what, timeout)))
		}
	}
}

// Expect waits until the job's console output since the previous match
// matches re, and returns that output up to the end of the match.
func (j *Job) Expect(re *regexp.Regexp, timeout time.Duration) (string, error) {
	var out string
	what := fmt.Sprintf("expecting %q", re)
	err := j.waitFor(timeout, what, func() (bool, error) {
		if loc := re.FindIndex(j.buf); loc != nil {
			out = string(j.buf[:loc[1]])
			j.buf = j.buf[loc[1]:]
			return true, nil
		}
		if j.done {
			return false, fmt.Errorf("nested: %s: job exited with status %d first", what, j.code)
		}
		return false, nil
	})
	return out, err
}

// Wait returns the job's exit status: its own, or 128+signal.
func (j *Job) Wait(timeout time.Duration) (int, error) {
	var code int
	err := j.waitFor(timeout, "waiting for job exit", func() (bool, error) {
		code = j.code
		return j.done, nil
	})
	return code, err
}
