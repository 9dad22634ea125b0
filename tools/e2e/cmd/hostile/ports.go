//go:build linux && amd64

package main

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
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

// vmmPorts are the ranges vmm serves itself (machine/layout.go, and
// guestabi for its own ports). Garbage at every width at every port of
// each, and of the neighbours either side, is where vmm's port bus and
// devices can go wrong: a width a device does not expect, an access that
// overlaps a range partly (bus.Bus serves only accesses wholly inside
// one). Ports of noStart still get accesses that start below and
// straddle into them.
var vmmPorts = []portRange{
	{0x60, 0x64, "i8042"},
	{0x70, 0x71, "CMOS RTC"},
	{guestabi.ExitPort, guestabi.ExitPort + guestabi.ExitPortSize - 1, "exit port"},
	{guestabi.WaitPort, guestabi.WaitPort + guestabi.WaitPortSize - 1, "wait port"},
	{0x2f8, 0x2ff, "COM2"},
	{0x3f8, 0x3ff, "COM1"},
	{guestabi.BootTimerPort, guestabi.BootTimerPort + guestabi.BootTimerPortSize - 1, "boot timer"},
	{0x600, 0x60f, "ACPI PM block"},
}

// Everywhere else vmm has nothing, and every port takes the same
// unclaimed path, so a byte written and read at a sample of them
// exercises it as well as all 65,536 would. Each access is a round trip
// through emulated nested SVM, and the emulator's own guest crashes
// (see nested.ErrGuestCrashed) grow with their number: sweeping every
// port below 0x1000 at every width, as this once did, took 32,000 of
// the ~50,000 exits of a run, and the emulator crashed the guest in 3
// of 10 such runs.
const (
	neighbours  = 8  // ports either side of a vmm range that get every width
	lowStride   = 16 // below lowLimit, a byte at every lowStride-th port
	lowLimit    = 0x1000
	upperStride = 64 // above, a byte at every upperStride-th port, and the last
)

func inAny(rs []portRange, lo, hi uint16) bool {
	for _, r := range rs {
		if lo <= r.hi && hi >= r.lo {
			return true
		}
	}
	return false
}

// wide says whether port gets every width: it is in a vmm range or
// within neighbours of one.
func wide(port int) bool {
	for _, r := range vmmPorts {
		if port >= int(r.lo)-neighbours && port <= int(r.hi)+neighbours {
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
	if !sampled(int(port)) || (width > 1 && !wide(int(port))) {
		return false, false
	}
	return true, true
}

// sampled says whether the attack touches port at all: every port of
// vmm's ranges and their neighbours, every lowStride-th below lowLimit,
// every upperStride-th above, and the last.
func sampled(port int) bool {
	switch {
	case wide(port), port == 0xffff:
		return true
	case port < lowLimit:
		return port%lowStride == 0
	}
	return port%upperStride == 0
}

// attackPorts writes random values to the ports and reads them back:
// vmm's ranges and their neighbours with bytes, words and doublewords,
// the sampled ports elsewhere with a byte. It returns a one-line summary.
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
			if w > 1 && !wide(p) {
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
	return fmt.Sprintf("ports: %d writes of random values over 0x0-0xffff and %d reads (1, 2, 4 bytes at every port of vmm's %d ranges and %d either side, a byte at every %dth port elsewhere below %#x and every %dth above), %d accesses skipped, %.1fs",
		writes, reads, len(vmmPorts), neighbours, lowStride, lowLimit, upperStride, skipped, time.Since(start).Seconds()), nil
}
