package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// relayPoll is how long relayInput waits for input before it looks at DSR
// again, in milliseconds: a bound on how late the job sees the end of its
// input should the DSR watcher miss the change (it cannot, unless
// TIOCMIWAIT fails), not how soon it normally does.
const relayPoll = 1000

// lastLook is how long relayInput waits for more input once DSR is off
// and the port seemed empty, in milliseconds.
const lastLook = 20

// jobStdin returns the job's stdin: a pipe that relayInput fills from the
// job port and closes once vmm's input has ended, so the job reads end of
// file where vmm's own stdin ended (a pipe closed, /dev/null), as it
// would on the host. A raw serial line has no end of its own: vmm tells
// it by dropping DSR once the guest has read every byte (serial's
// EndInput). If the port cannot be opened again or a pipe made, the job
// reads the port itself, whose input never ends. done closes what
// jobStdin made, after the job.
func jobStdin(tty *os.File) (stdin *os.File, done func()) {
	// A second open file description of the port, non-blocking for the
	// relay alone: O_NONBLOCK on tty's would reach the job's stdout,
	// which shares it, and make its writes fail with EAGAIN.
	fd, err := openRelayFD()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; the job's stdin will not end\n", err)
		return tty, func() {}
	}
	r, w, err := os.Pipe()
	if err != nil {
		unix.Close(fd)
		fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; the job's stdin will not end\n", err)
		return tty, func() {}
	}
	go relayInput(fd, w)
	return r, func() { r.Close() }
}

// openRelayFD opens the job port again for relayInput.
func openRelayFD() (int, error) {
	return unix.Open(guestabi.JobTTY, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}

// relayInput copies what the port fd (non-blocking) receives to w until
// DSR is off and the port holds nothing more, then closes w. DSR drops
// only once the guest's driver has taken every byte vmm had, and a read
// that finds the line discipline empty first pushes what the driver
// handed the tty layer (n_tty_read flushes the tty's buffer work before
// it answers EAGAIN), so reading until EAGAIN after seeing DSR off gets
// every byte. It also returns when w's reader has gone (the job closed
// its stdin or ended). fd is left open: the DSR watcher may still use
// it, and the init ends with the job.
func relayInput(fd int, w *os.File) {
	defer w.Close()
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err == nil {
		go watchDSR(fd, wake)
	} else {
		wake = -1
	}
	buf := make([]byte, 64<<10)
	// copyAll reads until the port has nothing more, and reports whether
	// the relay should go on.
	copyAll := func() bool {
		for {
			n, err := unix.Read(fd, buf)
			switch {
			case n > 0:
				if _, err := w.Write(buf[:n]); err != nil {
					return false // nobody reads the job's stdin any more
				}
			case errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				return true
			default:
				return false // hung up (0) or failed: no more input
			}
		}
	}
	// DSR is read (an exit to vmm) only when it may have changed: at
	// first, and when the watcher woke the relay or the poll timed out,
	// not for every burst of input.
	checkDSR := true
	for {
		ended := checkDSR && !dsrOn(fd)
		if !copyAll() {
			return
		}
		if ended {
			// A last look, should the tty layer still be passing on
			// bytes the driver took before DSR dropped.
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, lastLook)
			copyAll()
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if wake >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(wake), Events: unix.POLLIN})
		}
		n, err := unix.Poll(fds, relayPoll)
		checkDSR = wake < 0 || n <= 0 || err != nil || fds[1].Revents != 0
		if wake >= 0 && fds[1].Revents != 0 {
			var b [8]byte
			_, _ = unix.Read(wake, b[:])
		}
	}
}

// watchDSR waits (TIOCMIWAIT, which also enables the port's modem status
// interrupt) until DSR is off, then signals wake. If the port cannot
// wait, relayInput's poll timeout still finds the change.
func watchDSR(fd, wake int) {
	for dsrOn(fd) {
		if err := unix.IoctlSetInt(fd, unix.TIOCMIWAIT, unix.TIOCM_DSR); err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	one := [8]byte{1}
	_, _ = unix.Write(wake, one[:])
}

// dsrOn reports whether the port's DSR input is on, and true when it
// cannot tell: the input then simply does not end.
func dsrOn(fd int) bool {
	v, err := unix.IoctlGetInt(fd, unix.TIOCMGET)
	return err != nil || v&unix.TIOCM_DSR != 0
}
