package rawterm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/pty"
	"github.com/vmm-dev/vmm/internal/shelltest"
)

func TestRawClearsLineDiscipline(t *testing.T) {
	cooked := unix.Termios{Iflag: unix.ICRNL | unix.IXON, Oflag: unix.OPOST, Lflag: unix.ECHO | unix.ICANON | unix.ISIG, Cflag: unix.CS7 | unix.PARENB}
	r := Raw(cooked)
	if r.Iflag&(unix.ICRNL|unix.IXON) != 0 || r.Oflag&unix.OPOST != 0 || r.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Errorf("line discipline left on: %+v", r)
	}
	if r.Cflag&unix.CSIZE != unix.CS8 || r.Cflag&unix.PARENB != 0 || r.Cc[unix.VMIN] != 1 {
		t.Errorf("not 8-bit, byte-at-a-time: %+v", r)
	}
}

func TestMakeRawRefusesNonTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := MakeRaw(int(f.Fd())); err == nil {
		t.Fatal("a regular file accepted as a terminal")
	}
}

func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if IsTerminal(int(w.Fd())) {
		t.Error("a pipe is a terminal")
	}
	if IsTerminal(-1) {
		t.Error("a closed descriptor is a terminal")
	}
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to check the positive case: %v", err)
	}
	defer ptm.Close()
	if !IsTerminal(int(ptm.Fd())) {
		t.Error("a pseudo-terminal is not a terminal")
	}
}

// TestInBackground runs itself in a session of its own with a new
// terminal as its controlling one: in the foreground it is not in the
// background; once the terminal's foreground is another process group
// (the shell's after `vmm &`), it is.
func TestInBackground(t *testing.T) {
	if os.Getenv("RAWTERM_BACKGROUND_CHILD") == "1" {
		if InBackground(0) {
			fmt.Println("background at start")
			os.Exit(1)
		}
		other := exec.Command("sleep", "30")
		other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := other.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		defer other.Process.Kill()
		if err := unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, other.Process.Pid); err != nil {
			fmt.Println("TIOCSPGRP:", err)
			os.Exit(1)
		}
		if !InBackground(0) {
			fmt.Println("not background with another group in the foreground")
			other.Process.Kill()
			os.Exit(1)
		}
		fmt.Println("ok")
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if InBackground(int(r.Fd())) {
		t.Error("a pipe counts as a terminal in the background")
	}
	m, term, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer m.Close()
	defer term.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestInBackground$")
	cmd.Env = append(os.Environ(), "RAWTERM_BACKGROUND_CHILD=1")
	cmd.Stdin = term
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil || !bytes.Contains(out.Bytes(), []byte("ok\n")) {
		t.Fatalf("child: %v\n%s", err, out.Bytes())
	}
}

// TestMakeRawKeptAfterContinue: a SIGCONT puts the terminal back into raw
// mode after something else (the shell, while vmm was stopped) cooked
// it; once restored, a SIGCONT leaves the restored mode alone. The
// pseudo-terminal is not this process's controlling terminal, so it
// counts as in the foreground.
func TestMakeRawKeptAfterContinue(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()
	fd := int(pts.Fd())
	cooked, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	isRaw := func() bool {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		return err == nil && tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0
	}
	waitFor := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for isRaw() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: raw %v, want %v within 5s", what, !want, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	restore, err := MakeRawKept(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	waitFor(true, "after MakeRawKept")
	// The shell cooks the terminal while the process is stopped.
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, cooked); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(os.Getpid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(true, "after SIGCONT")
	restore()
	waitFor(false, "after restore")
	if err := unix.Kill(os.Getpid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if isRaw() {
		t.Fatal("a SIGCONT after restore made the terminal raw again")
	}
	restore() // a second call does nothing
}

// TestMakeRawKeptRestoreInBackground plays a shell and its job on a new
// terminal. The test runs itself as the shell, in a session of its own
// with the terminal as its controlling one; the shell runs itself again
// as the job, in the foreground, which makes the terminal raw. The shell
// then takes the terminal back, as after a stop and `bg`, and the job
// restores. A shell that set a mode of its own (bash, zsh, fish) keeps
// it, and the job ends at once, where setting the saved mode would stop
// it (SIGTTOU: its group is not orphaned, as its parent, the shell, is
// in the same session) until `fg`. A shell that set none (dash) finds
// the job stopped by that SIGTTOU, and after `fg` the terminal has the
// mode from before the job, not raw.
func TestMakeRawKeptRestoreInBackground(t *testing.T) {
	switch os.Getenv("RAWTERM_BACKGROUND_CHILD") {
	case "shell", "shell-without-mode":
		if err := backgroundShell(os.Getenv("RAWTERM_BACKGROUND_CHILD") == "shell"); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ok")
		os.Exit(0)
	case "job":
		restore, err := MakeRawKept(0)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		toShell, fromShell := os.NewFile(shelltest.ToShell, "to-shell"), os.NewFile(shelltest.FromShell, "from-shell")
		fmt.Fprintln(toShell, "raw")
		fromShell.Read(make([]byte, 1))
		restore()
		fmt.Fprintln(toShell, "restored")
		os.Exit(0)
	}
	for _, shell := range []string{"shell", "shell-without-mode"} {
		t.Run(shell, func(t *testing.T) {
			m, term, err := pty.Open()
			if err != nil {
				t.Skipf("no pseudo-terminals here: %v", err)
			}
			defer m.Close()
			defer term.Close()
			cmd := exec.Command(os.Args[0], "-test.run=^TestMakeRawKeptRestoreInBackground$")
			cmd.Env = append(os.Environ(), "RAWTERM_BACKGROUND_CHILD="+shell)
			cmd.Stdin = term
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
			if err := cmd.Run(); err != nil || !bytes.Contains(out.Bytes(), []byte("ok\n")) {
				t.Fatalf("shell: %v\n%s", err, out.Bytes())
			}
		})
	}
}

// backgroundShell is TestMakeRawKeptRestoreInBackground's shell, which
// sets a mode of its own when it takes the terminal back if ownMode.
func backgroundShell(ownMode bool) error {
	cmd := exec.Command(os.Args[0], "-test.run=^TestMakeRawKeptRestoreInBackground$")
	cmd.Env = append(os.Environ(), "RAWTERM_BACKGROUND_CHILD=job")
	job, err := shelltest.Start(cmd)
	if err != nil {
		return err
	}
	defer job.Close()
	if err := job.Await("raw"); err != nil {
		return err
	}
	want, err := job.TakeTerminal(ownMode)
	if err != nil {
		return err
	}
	if err := job.Tell(); err != nil {
		return err
	}
	if !ownMode {
		// The job's restore stops it (SIGTTOU); `fg` gives it the
		// terminal and continues it.
		for deadline := time.Now().Add(shelltest.Wait); job.State() != "T"; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("job not stopped within %v of its restore in the background (state %s)", shelltest.Wait, job.State())
			}
		}
		if err := job.Foreground(); err != nil {
			return err
		}
	}
	if err := job.Await("restored"); err != nil {
		return err
	}
	now, err := shelltest.Mode()
	if err != nil {
		return err
	}
	if now != want {
		if ownMode {
			return errors.New("the job's restore in the background changed the shell's mode")
		}
		return errors.New("the job's restore left the terminal raw, with no shell's mode to keep")
	}
	select {
	case <-job.Ended:
		return nil
	case <-time.After(shelltest.Wait):
		return errors.New("job did not end within 10s of its restore")
	}
}
