package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// waitAsked reports whether the kernel command line asks the init to
// wait for its job on the job port (a guest booted by `vmm snapshot`).
func waitAsked() bool {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return false
	}
	for _, f := range strings.Fields(string(b)) {
		if f == guestabi.WaitParam {
			return true
		}
	}
	return false
}

// waitForJob is the init of a guest that vmm snapshots: it opens the job
// port, tells vmm it waits (vmm saves the machine at that write), and
// reads the job from the port. Everything after the write runs once per
// restore, so that is where the machine is made fresh: the kernel's
// random generator reseeded with the host's entropy (Debian's 6.1 kernel
// has no VM generation ID driver to do it) and the clock set to the
// host's. It then runs the job as a cold boot would, and does not return.
func waitForJob() {
	tty, err := os.OpenFile(guestabi.JobTTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job port: %v\n", err)
		finishJob(guestabi.StatusNotRun)
	}
	// Raw and OUT1 raised before the snapshot: every restore's input,
	// the job message first, meets a raw tty.
	openJobInput(tty, true)
	// vmm sends a restored job's piped input to the job's input port
	// only if the port is there now, named: the device's messages that
	// name it are not part of the snapshot. Two consoles, the output's
	// and the input's.
	wait := byte(guestabi.WaitReady)
	if awaitPort(guestabi.JobInputPort, 2) {
		wait |= guestabi.WaitInputPort
	}
	if err := writePort(guestabi.WaitPort, wait); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: could not write the wait port: %v\n", err)
	}
	// tty stays open until the job is done: closing the port's last
	// file shuts the UART down and drops input the tty layer has already
	// read past the message, the first bytes of the job's stdin.
	msg, err := guestabi.ReadJobMessage(tty)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		finishJob(guestabi.StatusNotRun)
	}
	if err := reseed(msg.Entropy); err != nil {
		// A job must not run on a generator every restore shares.
		fmt.Fprintf(os.Stderr, "vmm-init: reseed the random generator: %v\n", err)
		finishJob(guestabi.StatusNotRun)
	}
	tv := unix.NsecToTimeval(msg.UnixNano)
	if err := unix.Settimeofday(&tv); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: set the clock to %v: %v\n", time.Unix(0, msg.UnixNano), err)
	}
	status := runJob(msg.Spec, true)
	tty.Close()
	finishJob(status)
}

// reseed mixes b into the kernel's input pool (a write to /dev/urandom)
// and forces the CRNG to reseed from it (RNDRESEEDCRNG, random(4)): from
// then on every reader, /dev/urandom and getrandom alike, gets output no
// other restore of the snapshot shares.
func reseed(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return err
	}
	return unix.IoctlSetInt(int(f.Fd()), unix.RNDRESEEDCRNG, 0)
}
