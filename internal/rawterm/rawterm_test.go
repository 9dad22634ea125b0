package rawterm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/pty"
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
