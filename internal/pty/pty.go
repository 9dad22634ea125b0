// Package pty opens pseudo-terminal pairs for what must give a program a
// real terminal: bootbench's container (the guest's init makes its
// console the shell's controlling terminal), the end-to-end tests'
// ptyends (vmm on a terminal), and the tests of rawterm and of vmm's
// sandbox at a terminal. It is here rather than in any of them because
// they share it, and the tools run in L1, which has no devpts until one
// of them mounts it.
package pty

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open returns a new pseudo-terminal pair: master, the end the caller
// reads and writes, and term, the terminal end it gives a program. Neither
// becomes the caller's controlling terminal.
func Open() (master, term *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		// /dev/ptmx opens the devpts mounted beside it at /dev/pts:
		// a bare system (our L1 guest) has none yet.
		if merr := mountDevpts(); merr != nil {
			return nil, nil, fmt.Errorf("pty: %w (and %v)", err, merr)
		}
		if m, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0); err != nil {
			return nil, nil, fmt.Errorf("pty: %w", err)
		}
	}
	// Through SyscallConn, not Fd: Fd would put the master back in
	// blocking mode, where read deadlines (which callers use to drain
	// it) no longer work.
	rc, err := m.SyscallConn()
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty: %w", err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
			ierr = fmt.Errorf("unlock: %w", ierr)
			return
		}
		if n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN); ierr != nil {
			ierr = fmt.Errorf("number: %w", ierr)
		}
	}); err != nil || ierr != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty: %w", errors.Join(err, ierr))
	}
	t, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty: %w", err)
	}
	return m, t, nil
}

func mountDevpts() error {
	if err := os.MkdirAll("/dev/pts", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount devpts on /dev/pts: %w", err)
	}
	return nil
}
