// Package pty opens pseudo-terminal pairs for the tools that must give a
// program a real terminal: bootbench's container (u-root's init makes its
// console the controlling terminal of its children) and the end-to-end
// tests' ptyends (vmm on a terminal). It is here rather than in either
// because both run in L1, which has no devpts until one of them mounts it.
package pty

import (
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
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty: unlock: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty: number: %w", err)
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
