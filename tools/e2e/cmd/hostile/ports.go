//go:build linux && amd64

package main

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// portRange is [lo, hi] inclusive.
type portRange struct {
	lo, hi uint16
	why    string
}

// keepOut are ports no access may touch, even partly: KVM's in-kernel
// devices (vmm never sees these accesses, so garbage there tests KVM, not
// vmm, and wrecks the guest's interrupts and timers).
var keepOut = []portRange{
	{0x20, 0x21, "master PIC (in KVM)"},
	{0x40, 0x43, "PIT (in KVM)"},
	{0x61, 0x61, "PIT speaker port (in KVM)"},
	{0xa0, 0xa1, "slave PIC (in KVM)"},
	{0x4d0, 0x4d1, "ELCR (in KVM)"},
}

// noStart are vmm's ports where garbage would end the test rather than
// test vmm: no access starts in them. An access that starts below and
// straddles into one is still made: vmm must not route a partial
// overlap to the device (bus.Bus serves only accesses wholly inside a
// range), and if it did, the run would end early with a wrong status or
// lose its output, which the test would report.
var noStart = []portRange{
	{0x60, 0x64, "i8042: 0xfe to 0x64 resets the machine"},
	{0xf4, 0xf4, "exit port: ends the run"},
	{0x2f8, 0x2ff, "COM2: the job's stdout, this report"},
	{0x3f8, 0x3ff, "COM1: the console, the job's stderr"},
	{0x600, 0x60f, "ACPI PM block: S5 powers off, the reset register reboots"},
}

// wideLimit is where wide (2- and 4-byte) accesses and reads of every
// port stop: every port vmm claims is below 0x1000. Above it every port
// takes the same unclaimed path, so a byte write and a read of every
// upperStride-th port (and the last) exercise it. Each access is a round
// trip through emulated nested SVM, and the emulator's own rare faults
// (see nested.ErrGuestCrashed) grow with their number: 64,000 more
// writes to the same code path would buy nothing but those.
const (
	wideLimit   = 0x1000
	upperStride = 16
)

func inAny(rs []portRange, lo, hi uint16) bool {
	for _, r := range rs {
		if lo <= r.hi && hi >= r.lo {
			return true
		}
	}
	return false
}

// plan says whether to write (and then read) width bytes at port.
func plan(port uint16, width int) (write, read bool) {
	last := int(port) + width - 1
	if last > 0xffff || inAny(keepOut, port, uint16(last)) || inAny(noStart, port, port) {
		return false, false
	}
	if !sampled(int(port)) || (width > 1 && port >= wideLimit) {
		return false, false
	}
	return true, true
}

// sampled says whether the attack touches port at all: all below
// wideLimit, every upperStride-th above, and the last.
func sampled(port int) bool {
	return port < wideLimit || port%upperStride == 0 || port == 0xffff
}

// attackPorts writes random values to the ports and reads them back:
// every port below wideLimit with bytes, words and doublewords, every
// upperStride-th port above with a byte. It returns a one-line summary.
func attackPorts(rng *rand.Rand) (string, error) {
	// ioperm grants the calling thread only, so the whole attack runs on
	// one locked thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(0, 0x10000, 1); err != nil {
		return "", fmt.Errorf("ioperm all ports: %w", err)
	}
	defer unix.Ioperm(0, 0x10000, 0)
	start := time.Now()
	writes, reads, skipped := 0, 0, 0
	for p := 0; p <= 0xffff; p++ {
		if !sampled(p) {
			continue
		}
		port := uint16(p)
		for _, w := range []int{1, 2, 4} {
			if w > 1 && p >= wideLimit {
				break
			}
			write, read := plan(port, w)
			if !write {
				skipped++
				continue
			}
			out(port, w, rng.Uint64())
			writes++
			if read {
				_ = in(port, w)
				reads++
			}
		}
	}
	return fmt.Sprintf("ports: %d writes of random values over 0x0-0xffff and %d reads (1, 2, 4 bytes at every port below %#x, a byte at every %dth above), %d accesses skipped, %.1fs",
		writes, reads, wideLimit, upperStride, skipped, time.Since(start).Seconds()), nil
}
