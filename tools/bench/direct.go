package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// DirectHost runs the VMMs as child processes of this program, on the
// machine's own /dev/kvm: the nested path minus L1. TAPs need
// CAP_NET_ADMIN, so in practice it runs as root.
type DirectHost struct {
	// Console, if set, gets a copy of every VMM's console output.
	Console io.Writer

	mu   sync.Mutex
	last *localConsole
}

// Start runs args with its console on pipes: stdin for typing, stdout and
// stderr merged for reading. Both VMMs take a pipe as their console.
func (h *DirectHost) Start(ctx context.Context, args []string) (Console, error) {
	c := &localConsole{changed: make(chan struct{}), exited: make(chan struct{}), copy: h.Console}
	cmd := exec.Command(args[0], args[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	cmd.Stdout = c
	cmd.Stderr = c
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	c.cmd, c.stdin = cmd, stdin
	go func() {
		cmd.Wait() // the status is all that matters
		c.mu.Lock()
		c.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			c.code = 128 + int(ws.Signal()) // as a shell reports it
		}
		c.mu.Unlock()
		close(c.exited)
		c.broadcast()
	}()
	h.mu.Lock()
	h.last = c
	h.mu.Unlock()
	return c, nil
}

// Exec runs a command here.
func (h *DirectHost) Exec(ctx context.Context, args ...string) (string, int, error) {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), 0, fmt.Errorf("exec %q: %w", args, err)
	}
	return string(out), 0, nil
}

// Tails is the end of the last VMM's console.
func (h *DirectHost) Tails() string {
	h.mu.Lock()
	c := h.last
	h.mu.Unlock()
	if c == nil {
		return "--- console: no VMM started ---"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return "--- console (tail) ---\n" + tail(string(c.all), 4000) + "\n---"
}

// localConsole collects a child's output for Expect.
type localConsole struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	copy   io.Writer // nil: none

	mu      sync.Mutex
	buf     []byte // not yet consumed by Expect
	all     []byte // the last bytes, for Tails
	changed chan struct{}
	code    int
}

const maxConsoleBuffer = 16 << 20

func (c *localConsole) Write(p []byte) (int, error) {
	if c.copy != nil {
		c.copy.Write(p)
	}
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	if len(c.buf) > maxConsoleBuffer {
		c.buf = append(c.buf[:0:0], c.buf[len(c.buf)-maxConsoleBuffer/2:]...)
	}
	c.all = append(c.all, p...)
	if len(c.all) > 64<<10 {
		c.all = append(c.all[:0:0], c.all[len(c.all)-32<<10:]...)
	}
	c.mu.Unlock()
	c.broadcast()
	return len(p), nil
}

func (c *localConsole) broadcast() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *localConsole) Send(s string) error {
	if _, err := io.WriteString(c.stdin, s); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

func (c *localConsole) Expect(re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if loc := re.FindIndex(c.buf); loc != nil {
			out := string(c.buf[:loc[1]])
			c.buf = c.buf[loc[1]:]
			c.mu.Unlock()
			return out, nil
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-c.exited:
			// Output written before the exit is in buf already
			// (Wait returns after the copying goroutines finish).
			c.mu.Lock()
			loc := re.FindIndex(c.buf)
			var out string
			if loc != nil {
				out = string(c.buf[:loc[1]])
				c.buf = c.buf[loc[1]:]
			}
			code := c.code
			c.mu.Unlock()
			if loc != nil {
				return out, nil
			}
			return "", fmt.Errorf("expecting %q: exited with status %d first", re, code)
		case <-changed:
		case <-deadline.C:
			return "", fmt.Errorf("expecting %q: timed out after %v", re, timeout)
		}
	}
}

func (c *localConsole) Wait(timeout time.Duration) (int, error) {
	select {
	case <-c.exited:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.code, nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("waiting for exit: timed out after %v", timeout)
	}
}

func (c *localConsole) Kill() error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

var _ Console = (*localConsole)(nil)
