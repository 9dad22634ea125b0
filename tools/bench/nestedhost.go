package bench

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"time"

	"github.com/vmm-dev/vmm/tools/nested"
)

// NestedHost runs the VMMs as jobs in an L1 guest.
type NestedHost struct {
	L1 *nested.L1
	// L1Tool is l1init's path in L1; its "signal" tool stops a VMM
	// after a failure.
	L1Tool string
}

// Start runs args as L1's job with the job console as its terminal, as a
// user would run it; both VMMs put it in raw mode.
func (h *NestedHost) Start(ctx context.Context, args []string) (Console, error) {
	j, err := h.L1.Run(ctx, args, nested.StdinTTY)
	if err != nil {
		return nil, err
	}
	c := &nestedConsole{Job: j, h: h, name: vmmComm(args)}
	if c.name != commName(args[0]) {
		c.before = commName(args[0]) // benchtool daemon-exec, until it execs the VMM
	}
	return c, nil
}

// Exec runs a command in L1.
func (h *NestedHost) Exec(ctx context.Context, args ...string) (string, int, error) {
	return h.L1.Exec(ctx, args...)
}

// Tails is the end of the job console and of L1's kernel log.
func (h *NestedHost) Tails() string {
	return fmt.Sprintf("--- job console (tail) ---\n%s\n--- L1 kernel log (tail) ---\n%s\n---", h.L1.ConsoleTail(40), h.L1.KernelLogTail(40))
}

// commName is the kernel's name of a process started from file p
// (/proc/PID/comm): the base name cut to TASK_COMM_LEN-1 = 15 bytes.
func commName(p string) string {
	b := path.Base(p)
	if len(b) > 15 {
		b = b[:15]
	}
	return b
}

type nestedConsole struct {
	*nested.Job
	h    *NestedHost
	name string
	// before is the job's name before it becomes the VMM, if it has
	// another (benchtool's daemon-exec waiting for its daemon).
	before string
}

var _ Console = (*nestedConsole)(nil)

// Expect is the Job's; restated so nestedConsole satisfies Console.
func (c *nestedConsole) Expect(re *regexp.Regexp, timeout time.Duration) (string, error) {
	return c.Job.Expect(re, timeout)
}

// Kill sends SIGKILL to the VMM by name: the agent has no request for
// signalling a job, and only one VMM runs at a time. A job that has not
// become its VMM yet is killed by its own name.
func (c *nestedConsole) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, code, err := c.h.L1.Exec(ctx, c.h.L1Tool, "signal", "9", c.name)
	if err == nil && code != 0 && c.before != "" {
		out, code, err = c.h.L1.Exec(ctx, c.h.L1Tool, "signal", "9", c.before)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return errors.New("l1tool signal: " + out)
	}
	return nil
}
