package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openPTY returns a new pseudo-terminal pair. The container gets the
// terminal end as its console, as a VM's init gets its serial console: u-root's
// init gives its children that terminal as their controlling one, which
// needs a real terminal.
func openPTY() (master, term *os.File, err error) {
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
