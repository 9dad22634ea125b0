package rawterm

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
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
