package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// daemonExecArgs is daemon-exec's command line split into its parts:
//
//	SOCKET LOG DAEMON [ARG...] -- VMM [ARG...]
type daemonExecArgs struct {
	socket, log string
	daemon, vmm []string
}

func parseDaemonExec(args []string) (daemonExecArgs, error) {
	const usage = "daemon-exec SOCKET LOG DAEMON [ARG...] -- VMM [ARG...]"
	if len(args) < 2 {
		return daemonExecArgs{}, fmt.Errorf("usage: %s", usage)
	}
	a := daemonExecArgs{socket: args[0], log: args[1]}
	rest := args[2:]
	i := -1
	for j, s := range rest {
		if s == "--" {
			i = j
			break
		}
	}
	if i < 0 {
		return daemonExecArgs{}, fmt.Errorf("daemon-exec: no -- before the VMM's command line (usage: %s)", usage)
	}
	a.daemon, a.vmm = rest[:i], rest[i+1:]
	if len(a.daemon) == 0 || len(a.vmm) == 0 {
		return daemonExecArgs{}, fmt.Errorf("daemon-exec: the daemon's and the VMM's command lines must not be empty (usage: %s)", usage)
	}
	if a.socket == "" || a.log == "" {
		return daemonExecArgs{}, fmt.Errorf("daemon-exec: empty socket or log path (usage: %s)", usage)
	}
	return a, nil
}

// startDaemon starts a.daemon with its output in a.log and waits, up to
// wait, for it to listen on a.socket (removed first, so a socket an
// earlier daemon left behind does not count). A daemon that exits first
// is an error quoting the end of its log.
func startDaemon(a daemonExecArgs, wait time.Duration) (*os.Process, error) {
	if err := os.Remove(a.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("daemon-exec: %w", err)
	}
	log, err := os.OpenFile(a.log, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("daemon-exec: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(a.daemon[0], a.daemon[1:]...)
	cmd.Stdout, cmd.Stderr = log, log // not the VMM's console: its bytes are the benchmark's
	// The daemon ends with the thread that started it: the VMM's main
	// thread once daemonExec has exec'd on it (it locks itself to it),
	// or benchtool's if the exec never comes. A daemon waits for its
	// connection for ever otherwise, so a VMM that fails before it
	// connects, or a benchtool killed while waiting, would leave it
	// behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("daemon-exec: %w", err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(wait)
	for {
		if st, err := os.Stat(a.socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			return cmd.Process, nil
		}
		var ws unix.WaitStatus
		if n, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && n == pid {
			b, _ := os.ReadFile(a.log)
			return nil, fmt.Errorf("daemon-exec: %s exited (%s) before listening on %s: %s", a.daemon[0], describeStatus(ws), a.socket, lastLine(string(b)))
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("daemon-exec: %s did not listen on %s within %s", a.daemon[0], a.socket, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describeStatus(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// daemonExec starts the daemon, then becomes the VMM (execve: the same
// process, so the daemon is the VMM's child and its CPU time counts
// with the VMM's in vmstat's sample, as vmm's own vmm-net does).
func daemonExec(args []string) error {
	a, err := parseDaemonExec(args)
	if err != nil {
		return err
	}
	vmm, err := exec.LookPath(a.vmm[0])
	if err != nil {
		return fmt.Errorf("daemon-exec: %w", err)
	}
	// Start the daemon and exec on one thread, so that its parent
	// thread (Pdeathsig's) is the VMM's for as long as the VMM runs.
	runtime.LockOSThread()
	// Nested under TCG a daemon takes a second or two to start.
	d, err := startDaemon(a, time.Minute)
	if err != nil {
		return err
	}
	err = syscall.Exec(vmm, a.vmm, os.Environ())
	d.Kill()
	d.Wait()
	return fmt.Errorf("daemon-exec: exec %s: %w", vmm, err)
}
