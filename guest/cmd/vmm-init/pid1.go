package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// pid1Mount is one file system the guest gets before anything runs.
type pid1Mount struct {
	source, target, fstype, data string
	// optional file systems are skipped without a word on a kernel
	// built without them (the minimal kernel of make bench-boot has
	// neither cgroups nor debugfs): sysfs then has no mount point for
	// them, or the mount fails with ENODEV.
	optional bool
}

// hostName is the guest's name when the kernel gave it none: the kernel's
// "(none)" resolves nowhere, and programs that look their own host up
// (Java's InetAddress.getLocalHost, `hostname -f`, sudo) fail or wait
// on it. /etc/hosts names it (guest.baseRamfs; a -rootfs job's copy,
// addHostName), as docker and virtme-ng name theirs.
const hostName = "vmm"

// nameHost sets the host name unless one was given (the kernel's
// hostname= parameter).
func nameHost() {
	if n := nodeName(); n != "" && n != "(none)" {
		return
	}
	if err := unix.Sethostname([]byte(hostName)); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: sethostname: %v\n", err)
	}
}

// nodeName is the host name the guest has now, "" if uname fails.
func nodeName() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Nodename[:])
}

// pid1Mounts returns the file systems vmm-init mounts as the first
// process. In a VM: devtmpfs for the device nodes (the job port,
// /dev/urandom, the -out disk), proc and sysfs, a tmpfs /tmp, devpts for
// ptys (a system's usual options: tty group 5, mode 620, a private
// instance whose ptmx every user may open; the ptmx node devtmpfs has
// finds it, Linux 4.7 and later), a tmpfs /dev/shm, and cgroup2 and
// debugfs for a user looking at the guest's processes or tracing a
// driver. In a container (tools/container), whose manager gives it /dev,
// /proc and /sys, only /tmp, devpts and /dev/shm: the manager leaves
// those to the container's init, and maps no tty group.
func pid1Mounts(inContainer bool) []pid1Mount {
	if inContainer {
		return []pid1Mount{
			{"tmpfs", "/tmp", "tmpfs", "", false},
			{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=666,mode=620", false},
			{"tmpfs", "/dev/shm", "tmpfs", "", false},
		}
	}
	return []pid1Mount{
		{"devtmpfs", "/dev", "devtmpfs", "", false},
		{"proc", "/proc", "proc", "", false},
		{"sysfs", "/sys", "sysfs", "", false},
		{"tmpfs", "/tmp", "tmpfs", "", false},
		{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=666,gid=5,mode=620", false},
		{"tmpfs", "/dev/shm", "tmpfs", "", false},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", "", true},
		{"debugfs", "/sys/kernel/debug", "debugfs", "", true},
	}
}

// pid1Path is the guest's PATH: the usual system directories, then
// /bbin, where u-root's busybox links its commands.
const pid1Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/bbin"

// consoleLogLevel is the console log level vmm-init sets (syslog(2),
// SYSLOG_ACTION_CONSOLE_LEVEL): only messages more urgent than
// KERN_NOTICE (5, include/linux/kern_levels.h) reach the console. The
// informational lines of module loading and of the drivers they bring up
// would otherwise go out on the 8250, one trapped write per byte, and
// into the middle of the shell's prompt; dmesg still has them. A command
// line that chose its own level ("loglevel=", "debug") keeps it.
const consoleLogLevel = 5

// syslogActionConsoleLevel is SYSLOG_ACTION_CONSOLE_LEVEL
// (include/linux/syslog.h).
const syslogActionConsoleLevel = 8

// setUpPID1 prepares the guest as its first process: signals, PATH,
// mounts, the /dev links and the console log level. Failures are
// reported a line each and do not stop the boot: a guest missing
// /dev/shm is still a guest. In a container (see main) only the
// environment and the container's share of the mounts.
func setUpPID1(inContainer bool) {
	// Most signals end a Go program (SIGTERM, SIGQUIT, SIGABRT, ...),
	// and the first process ending panics the kernel: every signal is
	// taken and dropped. Handled (not ignored) signals go back to their
	// default in the programs init starts, so the shell and the job
	// can still be interrupted.
	signal.Notify(make(chan os.Signal, 1))
	os.Setenv("PATH", pid1Path)
	if os.Getenv("HOME") == "" {
		os.Setenv("HOME", "/")
	}
	os.Setenv("USER", "root")
	for _, m := range pid1Mounts(inContainer) {
		if err := mountOnce(m); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		}
	}
	if inContainer {
		return
	}
	if err := devLinks("/dev"); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err == nil && !choosesLogLevel(string(cmdline)) {
		if _, _, e := unix.Syscall(unix.SYS_SYSLOG, syslogActionConsoleLevel, 0, consoleLogLevel); e != 0 {
			fmt.Fprintf(os.Stderr, "vmm-init: console log level: %v\n", e)
		}
	}
}

// mountOnce mounts m, making its mount point first (an optional one
// must exist already: mkdir in sysfs fails). It returns nil for what
// needs no mount: a mount point that already has a file system of its
// own (EBUSY), or an optional file system the kernel lacks.
func mountOnce(m pid1Mount) error {
	if m.optional {
		if _, err := os.Stat(m.target); err != nil {
			return nil
		}
	} else if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("mount %s at %s: %w", m.fstype, m.target, err)
	}
	err := unix.Mount(m.source, m.target, m.fstype, unix.MS_NOSUID, m.data)
	if mountNeedless(m, err) {
		return nil
	}
	return fmt.Errorf("mount %s at %s: %w", m.fstype, m.target, err)
}

// mountNeedless reports whether mount(2)'s err for m leaves nothing to
// say: success, a file system already there (EBUSY), or an optional one
// the kernel was built without (ENODEV).
func mountNeedless(m pid1Mount, err error) bool {
	return err == nil || errors.Is(err, unix.EBUSY) || (m.optional && errors.Is(err, unix.ENODEV))
}

// choosesLogLevel reports whether the kernel command line sets the
// console log level itself.
func choosesLogLevel(cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == "debug" || f == "quiet" || f == "ignore_loglevel" || strings.HasPrefix(f, "loglevel=") {
			return true
		}
	}
	return false
}

// shellPath is the console shell (u-root's gosh in vmm's initramfs).
const shellPath = "/bin/sh"

// runConsoleShell runs the shell on the console until it exits and then
// powers the machine off, so `exit` in the guest ends vmm with status 0.
// The shell leads its own session with the console as its controlling
// terminal, which is what makes Ctrl-C reach the command it runs.
func runConsoleShell() {
	cmd := exec.Command(shellPath)
	cmd.Args[0] = shellPath // u-root's busybox resolves the command from it
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if status := runReaping(cmd); status != 0 {
		fmt.Fprintf(os.Stderr, "vmm-init: %s ended with status %d\n", shellPath, status)
	}
	powerOff()
}

// powerOff syncs the file systems and powers the machine off; it does
// not return (the first process must not).
func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// powerOffOnPanic, deferred by the first process's main, turns a panic
// there into a line on the console and a power-off (which `vmm run`
// reports as a guest that gave no status) instead of the kernel's panic
// at init's exit.
func powerOffOnPanic() {
	r := recover()
	if r == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "vmm-init: panic: %v\n", r)
	powerOff()
}

// runReaping runs cmd and returns its status as a shell gives it. While
// it waits it reaps every other child that ends: the first process
// inherits every orphan in the guest, and each one left a zombie would
// hold its PID until the machine stops.
func runReaping(cmd *exec.Cmd) int {
	if err := cmd.Start(); err != nil {
		return exitStatus(err)
	}
	ws, err := reapUntil(cmd.Process.Pid)
	cmd.Process.Release()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: wait for %s: %v\n", filepath.Base(cmd.Path), err)
		return guestabi.StatusNotRun
	}
	return statusOf(ws)
}

// reapUntil waits for any child (wait4(-1)) until pid has ended and
// returns pid's status, having reaped every other child that ended by
// then. wait4 does not hand back zombies oldest first: it looks at the
// children of the calling thread before those of the process's other
// threads (kernel/exit.c, do_wait), and Go forks and waits on whichever
// thread a goroutine runs on. So pid may come back while an older
// zombie is still there, and a last pass without blocking takes it.
func reapUntil(pid int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return 0, err
		case p == pid:
			reapEnded()
			return ws, nil
		}
	}
}

// reapEnded reaps every child that has ended, without waiting for the
// others.
func reapEnded() {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || p <= 0 {
			return
		}
	}
}

// statusOf is the status a shell gives for ws: the exit code, or
// 128+N for a child killed by signal N.
func statusOf(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return guestabi.StatusSignalBase + int(ws.Signal())
	}
	return ws.ExitStatus()
}
