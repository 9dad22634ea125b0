// Package rawterm puts terminals into raw mode. It has its own home because
// three programs need exactly the same transformation: vmm (the user's
// terminal becomes the guest's serial line), vmm-nested (the user's
// terminal becomes L1's console) and the L1 agent (L1's serial port
// carries a job's bytes unchanged).
package rawterm

import (
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// Raw returns t transformed as cfmakeraw(3) does: no line editing, no
// echo, no signals from keys, no CR/NL translation, 8-bit characters,
// reads return as soon as one byte is there.
func Raw(t unix.Termios) unix.Termios {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return t
}

// MakeRaw puts the terminal on fd into raw mode and returns the function
// that restores its previous state. It fails when fd is not a terminal.
func MakeRaw(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := Raw(*old)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// MakeRawKept is MakeRaw that also puts the terminal back into raw mode
// each time the process is continued (SIGCONT) in the foreground. A
// process stopped from outside (SIGTSTP, SIGSTOP: raw mode sends no
// Ctrl-Z) finds its terminal, once `fg` continues it, in whatever mode
// the shell left there, cooked, where Ctrl-C would end it and every key
// would echo twice; vim and QEMU's stdio console put theirs back the same
// way. Continued in the background (`bg`), it leaves the terminal alone,
// as touching it there would stop it again (SIGTTOU). The returned
// restore first stops watching, and a SIGCONT being handled then
// finishes before the terminal's mode is restored, so the terminal is
// never left raw. In the background, restore leaves the terminal alone
// too if the shell that took it has set a mode of its own since (bash,
// zsh and fish do when a job stops): setting the one saved here would
// stop the process (SIGTTOU) until `fg` before it could exit, then undo
// the shell's. If the terminal is still raw (dash and busybox's ash set
// nothing), restore gives it its mode back as in the foreground, which
// stops the process until `fg` first. It may be called more than once.
func MakeRawKept(fd int) (restore func(), err error) {
	restoreMode, err := MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	raw, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		restoreMode()
		return nil, err
	}
	// The process group is read now, before vmm's sandbox, which lets a
	// SIGCONT's handler ask for the terminal's (TIOCGPGRP) but refuses
	// getpgid, through which x/sys reads one's own.
	pgrp := unix.Getpgrp()
	var (
		mu      sync.Mutex
		stopped bool
		once    sync.Once
	)
	conts := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(conts, unix.SIGCONT)
	go func() {
		for {
			select {
			case <-conts:
				mu.Lock()
				if !stopped && !inBackgroundOf(fd, pgrp) {
					_ = unix.IoctlSetTermios(fd, unix.TCSETS, raw)
				}
				mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	return func() {
		once.Do(func() {
			signal.Stop(conts)
			mu.Lock()
			stopped = true
			mu.Unlock()
			close(done)
			if inBackgroundOf(fd, pgrp) {
				if now, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil || *now != *raw {
					return
				}
			}
			restoreMode()
		})
	}, nil
}

// InBackground reports whether fd is a terminal whose foreground process
// group is not this process's: `vmm &` at an interactive shell. Such a
// process that sets the terminal's mode is stopped (SIGTTOU), and what it
// read as the mode to restore is the shell's line editor's, not the
// user's.
func InBackground(fd int) bool { return inBackgroundOf(fd, unix.Getpgrp()) }

// inBackgroundOf is InBackground for the process group pgrp.
func inBackgroundOf(fd, pgrp int) bool {
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && fg != pgrp
}

// IsTerminal reports whether fd is a terminal (it has termios).
func IsTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}
