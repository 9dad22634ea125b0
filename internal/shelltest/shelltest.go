// Package shelltest plays a shell with job control for tests of what a
// program does at its terminal when the shell takes the terminal back
// (a stop, then `bg`): rawterm's restore and the sandbox's SIGSYS
// handler both must leave a mode the shell set alone. It is a package of
// its own because both tests need the same stand-in, and the tools that
// link package pty need none of it.
//
// The test runs itself as the shell, in a session of its own with a
// pseudo-terminal as its controlling terminal (descriptor 0), and starts
// the job, itself again, in the terminal's foreground in a process group
// of its own, as an interactive shell does; the job's group is then not
// orphaned (its parent, the shell, is in the same session in another
// group), so a job that sets the terminal's mode in the background is
// stopped by SIGTTOU as under a real shell.
package shelltest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Wait bounds every wait on the job.
const Wait = 10 * time.Second

// Job is a job started by Start. It writes lines to the shell on its
// descriptor 3 (ToShell) and reads what the shell tells it on 4
// (FromShell).
type Job struct {
	Cmd    *exec.Cmd
	Ended  <-chan struct{} // closed once the job has exited and been waited for
	Before unix.Termios    // the terminal's mode before the job
	lines  chan string
	tell   *os.File
}

// The job's ends of the pipes.
const (
	ToShell   = 3
	FromShell = 4
)

// Start starts cmd as a job in the terminal's foreground. Its stdin is
// the terminal; its stdout and stderr are cmd's, or the shell's if unset.
// Close kills and reaps it.
func Start(cmd *exec.Cmd) (*Job, error) {
	before, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	toShellR, toShellW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromShellR, fromShellW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = os.Stdin
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.ExtraFiles = []*os.File{toShellW, fromShellR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Foreground: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ended := make(chan struct{})
	go func() {
		cmd.Wait()
		close(ended)
	}()
	// To take the terminal back from the job; only now, as an ignored
	// signal stays ignored across exec, and the job must not inherit it.
	signal.Ignore(unix.SIGTTOU)
	toShellW.Close()
	fromShellR.Close()
	j := &Job{Cmd: cmd, Ended: ended, Before: *before, lines: make(chan string, 2), tell: fromShellW}
	go func() {
		sc := bufio.NewScanner(toShellR)
		for sc.Scan() {
			j.lines <- sc.Text()
		}
		close(j.lines)
	}()
	return j, nil
}

// Close kills the job, if it has not ended, and waits for it.
func (j *Job) Close() {
	j.Cmd.Process.Kill()
	<-j.Ended
}

// State is the job's state as /proc shows it: T for stopped, "?" if
// it cannot be read.
func (j *Job) State() string {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", j.Cmd.Process.Pid)); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) {
			return string(b[i+2])
		}
	}
	return "?"
}

// Await waits for the job to write want, a line, to the shell.
func (j *Job) Await(want string) error {
	select {
	case l := <-j.lines:
		if l != want {
			return fmt.Errorf("job said %q, want %q", l, want)
		}
		return nil
	case <-time.After(Wait):
		return fmt.Errorf("job did not say %q within %v (its state %s; T is stopped, as by SIGTTOU)", want, Wait, j.State())
	}
}

// Tell lets the job go on: it writes a byte to the job's FromShell.
func (j *Job) Tell() error {
	_, err := j.tell.Write([]byte("g"))
	return err
}

// TakeTerminal makes the shell's group the terminal's foreground again,
// which puts the job in the background; with ownMode the shell also sets
// a mode of its own (raw but for echo), as bash, zsh and fish do, where
// dash sets none. It returns the mode the terminal should have once the
// job is done with it: the shell's, or the one from before the job.
func (j *Job) TakeTerminal(ownMode bool) (unix.Termios, error) {
	if err := unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, unix.Getpgrp()); err != nil {
		return unix.Termios{}, fmt.Errorf("TIOCSPGRP: %w", err)
	}
	if !ownMode {
		return j.Before, nil
	}
	shell, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return unix.Termios{}, err
	}
	shell.Lflag |= unix.ECHO
	if err := unix.IoctlSetTermios(0, unix.TCSETS, shell); err != nil {
		return unix.Termios{}, err
	}
	return *shell, nil
}

// Foreground is the shell's `fg`: the job's group gets the terminal and
// is continued.
func (j *Job) Foreground() error {
	if err := unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, j.Cmd.Process.Pid); err != nil {
		return fmt.Errorf("TIOCSPGRP: %w", err)
	}
	return unix.Kill(-j.Cmd.Process.Pid, unix.SIGCONT)
}

// Mode is the terminal's mode now.
func Mode() (unix.Termios, error) {
	t, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return unix.Termios{}, err
	}
	return *t, nil
}
