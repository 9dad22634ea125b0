//go:build linux && amd64

package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/pty"
	"github.com/vmm-dev/vmm/internal/rawterm"
	"github.com/vmm-dev/vmm/internal/shelltest"
)

// The tests below run the test binary again as a child that installs the
// sandbox for real and then does one thing (childEnv names it). A
// filter cannot be removed, so it must not be installed in the test
// process itself.
const childEnv = "VMM_SANDBOX_TEST_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(child(what))
	}
	os.Exit(m.Run())
}

// child installs the sandbox and does what. It returns 0 when what was
// allowed, 3 when the sandbox could not be installed and 4 when a call
// that should have been denied was not; a denied call never returns.
func child(what string) int {
	switch what {
	case "terminal-bgshell", "terminal-bgshell-raw":
		if err := backgroundShell(what == "terminal-bgshell"); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("ok")
		return 0
	case "terminal-bgjob":
		return backgroundJob()
	}
	// What must be open before the sandbox, as vmm opens its files
	// during setup.
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipe:", err)
		return 3
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGHUP)
	var (
		term        int
		cooked      *unix.Termios
		master      *os.File
		restoreTerm func()
	)
	var endTerm *Terminal
	if strings.HasPrefix(what, "terminal") {
		if term, cooked, master, restoreTerm, err = rawTerminal(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		raw, err := unix.IoctlGetTermios(term, unix.TCGETS)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
		endTerm = &Terminal{Fd: term, Mode: *cooked, Raw: *raw}
	}
	if err := Install(Options{Scratch: strings.HasPrefix(what, "scratch"), Network: strings.HasPrefix(what, "network"), Files: strings.HasPrefix(what, "files"), Terminal: endTerm}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	switch what {
	case "allowed":
		if err := allowedWork(r, w); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		signal.Stop(sigs)
		fmt.Println("ok")
		return 0
	case "wait":
		fmt.Println("installed")
		// Wait for the parent, without a new system call: the pipe's
		// write end stays open, so this read blocks until stdin closes.
		os.Stdin.Read(make([]byte, 1))
		return 0
	case "terminal":
		if err := continuedWork(term, cooked, master, restoreTerm); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("ok")
		return 0
	case "x32":
		// An x32 call (__X32_SYSCALL_BIT, 0x40000000) fails with ENOSYS, as the
		// library's filter prefix makes it; it must not reach the
		// 64-bit rules.
		_, _, errno := unix.RawSyscall(0x40000000|unix.SYS_GETPPID, 0, 0, 0)
		fmt.Println("x32:", errno == unix.ENOSYS)
		return 0
	case "getppid", "terminal-getppid", "terminal-noctty":
		unix.Getppid()
	case "getppid-thread":
		// A thread started after Install inherits the filter.
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			unix.Getppid()
			close(done)
		}()
		<-done
	case "scratch-mkdir":
		// What ending a job with a scratch disk does: remove it by
		// name (here one that is not there); but making a directory,
		// as unpacking -out did before its helper took it over, is
		// denied.
		if err := unix.Unlink(filepath.Join(os.TempDir(), "vmm-sandbox-test-absent")); err != unix.ENOENT {
			fmt.Println("unlink:", err)
			return 4
		}
		fmt.Println("unlinked")
		unix.Mkdir(filepath.Join(os.TempDir(), "vmm-sandbox-test-absent"), 0o700)
	case "open":
		f, err := os.Open("/proc/self/status")
		if err != nil {
			fmt.Println(err)
			return 4
		}
		f.Close()
		fmt.Println("opened")
		unix.Getppid()
	case "network-create":
		// What -nic user does: TCP through host sockets, the resolver's
		// files read; but writing a file is still denied.
		if err := loopbackTCP(); err != nil {
			fmt.Println(err)
			return 4
		}
		if _, err := os.ReadFile("/etc/hosts"); err != nil {
			fmt.Println(err)
			return 4
		}
		fmt.Println("networked")
		os.Create(filepath.Join(os.TempDir(), "sandbox-must-not-create"))
	case "files-socket":
		// What a virtio-fs share does to the shared directory; but a
		// socket is still denied.
		if err := shareWork(os.Getenv("VMM_SANDBOX_TEST_DIR")); err != nil {
			fmt.Println(err)
			return 4
		}
		fmt.Println("shared")
		unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	case "ioctl":
		unix.IoctlGetWinsize(1, unix.TIOCGWINSZ)
	case "fork":
		unix.RawSyscall(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0)
	case "mmap-exec":
		unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_ANON|unix.MAP_PRIVATE)
	case "kill":
		unix.Kill(1, 0)
	case "sigsys-handler":
		// Even a query: no act, no old act.
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), 0, 0, 8, 0, 0)
	case "socket":
		unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	default:
		fmt.Fprintln(os.Stderr, "unknown child", what)
		return 2
	}
	fmt.Println("not stopped")
	return 4
}

// allowedWork does after Install what vmm does: threads come and go,
// the heap grows and shrinks, goroutines are preempted and sleep, bytes
// move through descriptors opened before, a thread is signalled, and
// descriptors are closed.
func allowedWork(r, w *os.File) error {
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A locked goroutine that ends takes its thread with it, so
			// the runtime starts new ones, as vmm's vCPUs do.
			runtime.LockOSThread()
			unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGURG)
			time.Sleep(time.Millisecond)
		}()
	}
	wg.Wait()
	var keep [][]byte
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.GC()
	keep = nil
	debug.FreeOSMemory()
	go func() {
		w.Write([]byte("ping"))
		w.Close()
	}()
	b := make([]byte, 4)
	if _, err := r.Read(b); err != nil || string(b) != "ping" {
		return fmt.Errorf("pipe: %q, %v", b, err)
	}
	deadline := time.Now().Add(20 * time.Millisecond)
	for time.Now().Before(deadline) { // preempted by SIGURG meanwhile
	}
	return r.Close()
}

// rawTerminal puts the child's stdin, a pseudo-terminal that
// runTerminalChild made its controlling terminal (its session's, in the
// foreground), in raw mode as vmm does its own during setup, keeping it
// raw across SIGCONT. It returns the terminal's mode before and the
// master side (descriptor 3), nonblocking, for the poller; both are
// taken before the sandbox, as os.NewFile makes a call (fcntl) that the
// sandbox refuses.
func rawTerminal() (term int, cooked *unix.Termios, master *os.File, restore func(), err error) {
	if cooked, err = unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		return -1, nil, nil, nil, err
	}
	if err := unix.SetNonblock(3, true); err != nil {
		return -1, nil, nil, nil, err
	}
	master = os.NewFile(3, "ptmx")
	restore, err = rawterm.MakeRawKept(0)
	return 0, cooked, master, restore, err
}

// runTerminalChild is runChild with a new pseudo-terminal as the child's
// stdin and controlling terminal (a session of its own, as a login
// shell's job has one), and the master side as descriptor 3. It returns
// too whether the terminal was left raw (no ICANON, no ECHO) once the
// child was gone.
func runTerminalChild(t *testing.T, what string) (stdout, stderr string, code int, leftRaw bool) {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector's runtime makes calls vmm's filter does not allow")
	}
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+what)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, &outBuf, &errBuf
	cmd.ExtraFiles = []*os.File{ptm}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if strings.HasSuffix(what, "-noctty") {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	mode, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	leftRaw = mode.Lflag&(unix.ICANON|unix.ECHO) == 0
	return outBuf.String(), errBuf.String(), cmd.ProcessState.ExitCode(), leftRaw
}

// continuedWork does what vmm does when it is continued after a stop
// in which the shell cooked its terminal: the SIGCONT puts raw mode back
// (after asking whether vmm is the terminal's foreground), and the exit
// restores the mode. Raw mode shows as no echo of what the master side
// types, since the filter lets vmm set a terminal's mode but not read it.
func continuedWork(fd int, cooked *unix.Termios, master *os.File, restore func()) error {
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, cooked); err != nil {
		return err
	}
	if err := unix.Kill(os.Getpid(), unix.SIGCONT); err != nil {
		return err
	}
	buf := make([]byte, 64)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := master.Write([]byte("q")); err != nil {
			return err
		}
		master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := master.Read(buf); errors.Is(err, os.ErrDeadlineExceeded) {
			break // no echo: raw again
		} else if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("the terminal still echoes 10s after SIGCONT")
		}
	}
	restore()
	return nil
}

// shareWork creates, renames, lists, changes and removes files in dir.
func shareWork(dir string) error {
	p := filepath.Join(dir, "a")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		return err
	}
	// renameat2, as the share server renames (os.Rename is renameat).
	if err := unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, p+"2", 0); err != nil {
		return err
	}
	if err := os.Chmod(p+"2", 0o600); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("a2", filepath.Join(dir, "l")); err != nil {
		return err
	}
	if _, err := os.ReadDir(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// loopbackTCP listens, dials and moves a message on 127.0.0.1.
func loopbackTCP() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("pong"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "pong" {
		return fmt.Errorf("read %q, %v", b, err)
	}
	return nil
}

// runChild runs the child what and returns its stdout, stderr and exit
// status.
func runChild(t *testing.T, what string) (string, string, int) {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector's runtime makes calls vmm's filter does not allow")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+what, "VMM_SANDBOX_TEST_DIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// A denied call ends the process with one line naming it, and status
// 159 (128+SIGSYS), whatever the thread.
func TestDenied(t *testing.T) {
	tests := []struct {
		child, out, call string
	}{
		{"getppid", "", "getppid (nr 110)"},
		{"getppid-thread", "", "getppid (nr 110)"},
		{"open", "", "openat (nr 257)"},
		{"scratch-mkdir", "unlinked\n", "mkdirat (nr 258)"},
		{"network-create", "networked\n", "openat (nr 257)"},
		{"files-socket", "shared\n", "socket (nr 41)"},
		{"ioctl", "", "ioctl (nr 16)"},
		{"fork", "", "clone (nr 56)"},
		{"mmap-exec", "", "mmap (nr 9)"},
		{"kill", "", "kill (nr 62)"},
		{"sigsys-handler", "", "rt_sigaction (nr 13)"},
		{"socket", "", "socket (nr 41)"},
	}
	for _, tt := range tests {
		t.Run(tt.child, func(t *testing.T) {
			stdout, stderr, code := runChild(t, tt.child)
			if tt.child == "open" && cgoBuild {
				// rules.go, failures: glibc's fallback needs openat to
				// fail rather than be reported.
				if want := "open /proc/self/status: permission denied\n"; stdout != want || code != 4 {
					t.Errorf("status %d, stdout %q, stderr %q; want 4, %q", code, stdout, stderr, want)
				}
				return
			}
			want := "vmm: sandbox: syscall " + tt.call + " is not allowed\n"
			if stderr != want || code != exitDenied || stdout != tt.out {
				t.Errorf("status %d, stdout %q, stderr %q; want status %d, stdout %q, stderr %q",
					code, stdout, stderr, exitDenied, tt.out, want)
			}
		})
	}
}

// What vmm does after setup is allowed, and x32 calls fail instead of
// slipping past the 64-bit rules.
func TestAllowed(t *testing.T) {
	for _, tt := range []struct{ child, out string }{
		{"allowed", "ok\n"},
		{"x32", "x32: true\n"},
	} {
		t.Run(tt.child, func(t *testing.T) {
			stdout, stderr, code := runChild(t, tt.child)
			if code != 0 || stdout != tt.out || stderr != "" {
				t.Errorf("status %d, stdout %q, stderr %q; want 0, %q, nothing", code, stdout, stderr, tt.out)
			}
		})
	}
}

// A vmm continued after a stop from outside, in the foreground of its
// terminal, puts raw mode back under the filter: asking for the
// terminal's foreground and setting its mode are allowed.
func TestAllowedContinuedAtTerminal(t *testing.T) {
	stdout, stderr, code, leftRaw := runTerminalChild(t, "terminal")
	if code != 0 || stdout != "ok\n" || stderr != "" || leftRaw {
		t.Errorf("status %d, stdout %q, stderr %q, terminal left raw %v; want 0, \"ok\\n\", nothing, false", code, stdout, stderr, leftRaw)
	}
}

// A denied call in the background of the terminal leaves the terminal
// alone if the shell that took it set a mode of its own (the handler
// runs with SIGTTOU blocked, so setting the saved mode would not stop it
// but undo the shell's), and gives it its mode back if it is still raw
// (a shell that sets none, as dash).
func TestDeniedInBackground(t *testing.T) {
	for _, what := range []string{"terminal-bgshell", "terminal-bgshell-raw"} {
		t.Run(what, func(t *testing.T) {
			stdout, stderr, code, _ := runTerminalChild(t, what)
			if code != 0 || stdout != "ok\n" {
				t.Errorf("shell: status %d, stdout %q, stderr %q; want 0, \"ok\\n\"", code, stdout, stderr)
			}
		})
	}
}

// A denied call at a terminal in raw mode that is not the process's
// controlling terminal (TIOCGPGRP fails: there is no shell to leave it
// to) gives the terminal its mode back.
func TestDeniedAtOtherTerminal(t *testing.T) {
	stdout, stderr, code, leftRaw := runTerminalChild(t, "terminal-noctty")
	want := "vmm: sandbox: syscall getppid (nr 110) is not allowed\n"
	if code != exitDenied || stdout != "" || stderr != want || leftRaw {
		t.Errorf("status %d, stdout %q, stderr %q, terminal left raw %v; want %d, nothing, %q, false", code, stdout, stderr, leftRaw, exitDenied, want)
	}
}

// backgroundShell is TestDeniedInBackground's shell, run in a session of
// its own with the terminal as its controlling one. Its job (in the
// terminal's foreground, in a group of its own) makes the terminal raw
// and installs the sandbox; the shell takes the terminal back, sets a
// mode of its own if ownMode, and lets the job make a denied call. The
// terminal must then have the shell's mode, or, without one, the mode
// from before the job.
func backgroundShell(ownMode bool) error {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=terminal-bgjob")
	var jobOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &jobOut, &jobOut
	job, err := shelltest.Start(cmd)
	if err != nil {
		return err
	}
	defer job.Close()
	if err := job.Await("raw"); err != nil {
		return fmt.Errorf("%w: %s", err, jobOut.String())
	}
	want, err := job.TakeTerminal(ownMode)
	if err != nil {
		return err
	}
	if err := job.Tell(); err != nil {
		return err
	}
	select {
	case <-job.Ended:
	case <-time.After(shelltest.Wait):
		return errors.New("job did not end within 10s of its denied call")
	}
	msg := "vmm: sandbox: syscall getppid (nr 110) is not allowed\n"
	if code := job.Cmd.ProcessState.ExitCode(); code != exitDenied || jobOut.String() != msg {
		return fmt.Errorf("job: status %d, output %q; want %d, %q", code, jobOut.String(), exitDenied, msg)
	}
	now, err := shelltest.Mode()
	if err != nil {
		return err
	}
	switch {
	case now == want:
		return nil
	case ownMode:
		return errors.New("the denied call in the background changed the shell's mode")
	default:
		return errors.New("the denied call in the background left the terminal raw, with no shell's mode to keep")
	}
}

// backgroundJob is backgroundShell's job: raw mode, the sandbox with the
// terminal to give back, then, once the shell says, a denied call.
func backgroundJob() int {
	toShell, fromShell := os.NewFile(shelltest.ToShell, "to-shell"), os.NewFile(shelltest.FromShell, "from-shell")
	cooked, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		fmt.Println(err)
		return 3
	}
	if _, err := rawterm.MakeRawKept(0); err != nil {
		fmt.Println(err)
		return 3
	}
	raw, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		fmt.Println(err)
		return 3
	}
	if err := Install(Options{Terminal: &Terminal{Fd: 0, Mode: *cooked, Raw: *raw}}); err != nil {
		fmt.Println(err)
		return 3
	}
	fmt.Fprintln(toShell, "raw")
	fromShell.Read(make([]byte, 1))
	unix.Getppid()
	return 4
}

// A denied call at a terminal in raw mode gives the terminal its mode
// back before the process ends, as vmm's own exit would have: the user's
// shell is not left without echo.
func TestDeniedAtTerminal(t *testing.T) {
	stdout, stderr, code, leftRaw := runTerminalChild(t, "terminal-getppid")
	want := "vmm: sandbox: syscall getppid (nr 110) is not allowed\n"
	if code != exitDenied || stdout != "" || stderr != want || leftRaw {
		t.Errorf("status %d, stdout %q, stderr %q, terminal left raw %v; want %d, nothing, %q, false", code, stdout, stderr, leftRaw, exitDenied, want)
	}
}

// The sandboxed process shows it in /proc, on every thread; a SIGSYS
// that the filter did not send is reported as such.
func TestProcStatus(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's runtime makes calls vmm's filter does not allow")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=wait")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "installed\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q (%v), stderr %q", line, err, stderr.String())
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", cmd.Process.Pid))
	if err != nil || len(tasks) < 2 {
		t.Errorf("threads: %v, %v", tasks, err)
	}
	for _, p := range append([]string{fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)}, tasks...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range []string{`(?m)^Seccomp:\s+2$`, `(?m)^NoNewPrivs:\s+1$`} {
			if !regexp.MustCompile(re).Match(b) {
				t.Errorf("%s lacks %s:\n%s", p, re, b)
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGSYS); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if code, want := cmd.ProcessState.ExitCode(), "vmm: SIGSYS not sent by the sandbox\n"; code != exitDenied || stderr.String() != want {
		t.Errorf("after kill -SYS: status %d, stderr %q; want %d, %q", code, stderr.String(), exitDenied, want)
	}
}
