package main

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawterm"
)

// setCooked gives fd the settings of a freshly logged-in terminal, so a tty
// job sees what an interactive user's program would: line editing, echo,
// and ^C/^Z/^\ turned into signals. CLOCAL matters: without it a serial
// port may wait for a carrier that QEMU's UART never raises.
func setCooked(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	t.Iflag = unix.ICRNL | unix.IXON | unix.IUTF8 | unix.BRKINT
	t.Oflag = unix.OPOST | unix.ONLCR
	t.Cflag = t.Cflag&unix.CBAUD | unix.CS8 | unix.CREAD | unix.CLOCAL
	t.Lflag = unix.ISIG | unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK |
		unix.IEXTEN | unix.ECHOCTL | unix.ECHOKE
	t.Cc[unix.VINTR] = 0x03
	t.Cc[unix.VQUIT] = 0x1c
	t.Cc[unix.VERASE] = 0x7f
	t.Cc[unix.VKILL] = 0x15
	t.Cc[unix.VEOF] = 0x04
	t.Cc[unix.VSTART] = 0x11
	t.Cc[unix.VSTOP] = 0x13
	t.Cc[unix.VSUSP] = 0x1a
	t.Cc[unix.VREPRINT] = 0x12
	t.Cc[unix.VWERASE] = 0x17
	t.Cc[unix.VLNEXT] = 0x16
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set cooked termios: %w", err)
	}
	return nil
}

// setRaw makes fd an 8-bit clean byte pipe: the control channel must not
// echo or translate, and pipe jobs must see exactly the bytes the host sent.
func setRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get termios: %w", err)
	}
	*t = rawterm.Raw(*t)
	t.Cflag |= unix.CLOCAL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set raw termios: %w", err)
	}
	return nil
}

// flushInput drops bytes typed before a job started, so a new job does not
// read leftovers meant for the previous one.
func flushInput(fd int) error {
	if err := unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH); err != nil {
		return fmt.Errorf("flush tty input: %w", err)
	}
	return nil
}

// drain waits until the UART has sent everything, so that the host sees a
// job's last output before the exit message on the other serial port.
func drain(fd int) error {
	if err := unix.IoctlSetInt(fd, unix.TCSBRK, 1); err != nil {
		return fmt.Errorf("drain tty: %w", err)
	}
	return nil
}

func setWinsize(fd int, rows, cols uint16) error {
	if rows == 0 || cols == 0 {
		return nil
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	return nil
}
