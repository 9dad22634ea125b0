// Package boottimer stamps the phases of a boot against the VMM's own
// process start: the host marks its phases (memory ready, first KVM_RUN,
// ...) directly, and the guest marks its own by writing a one-byte phase
// code to an I/O port. One monotonic clock for both sides is what lets a
// boot be split into "VMM setup", "kernel" and "userland" without trusting
// the guest's clock, which under nested virtualization runs at the
// emulator's whim.
//
// The port is a write-only, one-byte device. Any guest can use it: an
// init that runs `outb(code, Port)` (or writes code at offset Port of
// /dev/port) gets its phase in `vmm -boot-timer`'s report. Elsewhere
// (QEMU, kvmtool, bare metal) nothing answers at that port, so the write
// is harmless.
package boottimer

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Port is the I/O port the guest writes phase codes to. 0x5f0 is free on
// every PC model the benchmark compares: not Linux's io_delay port (0x80),
// not vmm's ACPI PM block (0x600-0x60f), not QEMU's fw_cfg (0x510-0x51b),
// pvpanic (0x505) or debug-exit (0x501) ports, not the floppy controller
// (0x3f0-0x3f7, where Firecracker put its boot-complete port) nor any
// legacy ISA device Linux probes, and below the ranges kvmtool hands out
// to PCI I/O BARs.
const Port = 0x5f0

// PortSize is the width of the port range: one byte. Wider accesses at
// Port straddle the range and are not the boot timer's.
const PortSize = 1

// Phase is a boot phase code. Codes below GuestMin are the host's own:
// a guest writing one is ignored, so a guest cannot forge when vmm started.
// Codes from GuestMin up are accepted from the guest; the ones without a
// name here are recorded as "guest-0xNN", for guests with phases of
// their own.
type Phase uint8

// Host phases, in boot order.
const (
	// VMMStart is the time New was given: the VMM's first instant.
	VMMStart Phase = 1
	// MemoryReady is when guest RAM is mapped, the kernel loaded and
	// the vCPUs created: the VMM's setup is over.
	MemoryReady Phase = 2
	// FirstRun is the first KVM_RUN on the boot vCPU.
	FirstRun Phase = 3
	// FirstExit is the first exit from the guest that the VMM sees: the
	// earliest moment guest code (the kernel) is known to be running.
	FirstExit Phase = 4
	// Poweroff is when the guest asked to power off or reboot.
	Poweroff Phase = 5
	// VMMExit is the VMM's last instant, after the guest is torn down.
	VMMExit Phase = 6
)

// GuestMin is the smallest code a guest may write.
const GuestMin Phase = 0x10

// Guest phases, written to Port by the guest's init.
const (
	// InitStart is written by vmm-init first thing: the kernel has
	// booted and u-root's init has mounted the file systems.
	InitStart Phase = 0x10
	// Ready is written by vmm-init when it prints "vmm-guest: ready":
	// modules are loaded and the shell is about to start.
	Ready Phase = 0x11
)

var names = map[Phase]string{
	VMMStart:    "vmm-start",
	MemoryReady: "memory-ready",
	FirstRun:    "first-kvm-run",
	FirstExit:   "first-exit",
	Poweroff:    "poweroff",
	VMMExit:     "vmm-exit",
	InitStart:   "init-start",
	Ready:       "ready",
}

// String is the phase's name in the report.
func (p Phase) String() string {
	if n, ok := names[p]; ok {
		return n
	}
	if p >= GuestMin {
		return fmt.Sprintf("guest-0x%02x", uint8(p))
	}
	return fmt.Sprintf("host-0x%02x", uint8(p))
}

// ParsePhase is String's inverse.
func ParsePhase(s string) (Phase, error) {
	for p, n := range names {
		if n == s {
			return p, nil
		}
	}
	for _, prefix := range []string{"guest-0x", "host-0x"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			v, err := strconv.ParseUint(rest, 16, 8)
			if err != nil {
				return 0, fmt.Errorf("boot-timer phase %q: %w", s, err)
			}
			p := Phase(v)
			if (prefix == "guest-0x") != (p >= GuestMin) {
				return 0, fmt.Errorf("boot-timer phase %q: code out of range", s)
			}
			return p, nil
		}
	}
	return 0, fmt.Errorf("boot-timer phase %q: unknown", s)
}

// Timer holds at most one stamp per phase code: the first. Later marks of
// the same phase are dropped, because a boot has one "ready" and a guest
// that repeats a code (a re-run init, a loop) must not move it. The table
// is fixed at 256 entries, one per possible code, so nothing a guest
// writes allocates or grows anything.
//
// A Timer is safe for concurrent use: Mark and Write are lock-free.
type Timer struct {
	start time.Time
	// at[p] is the stamp's offset from start in nanoseconds plus one;
	// zero means not stamped.
	at [256]atomic.Int64
}

// New returns a Timer whose clock starts at start, which is stamped as
// VMMStart. start should be taken first thing in main.
func New(start time.Time) *Timer {
	t := &Timer{start: start}
	t.at[VMMStart].Store(1)
	return t
}

// Mark stamps a host phase now, unless it was stamped before.
func (t *Timer) Mark(p Phase) {
	t.stamp(p, time.Since(t.start))
}

func (t *Timer) stamp(p Phase, d time.Duration) {
	if d < 0 {
		d = 0 // a start time in the future: clamp rather than lose the stamp
	}
	t.at[p].CompareAndSwap(0, int64(d)+1)
}

// Read answers a guest read of the port with all ones, as an empty port
// on a PC reads: the device is write-only.
func (t *Timer) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// Write takes a guest's one-byte write of a phase code. Writes of any
// other width or offset, and host-only codes, are ignored.
func (t *Timer) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 {
		return
	}
	p := Phase(data[0])
	if p < GuestMin {
		return
	}
	t.Mark(p)
}

// Stamp is one phase and when it happened, relative to the VMM's start.
type Stamp struct {
	Phase Phase
	Since time.Duration
}

// Stamps returns the stamped phases in time order (ties in code order).
func (t *Timer) Stamps() []Stamp {
	var out []Stamp
	for i := range t.at {
		if v := t.at[i].Load(); v != 0 {
			out = append(out, Stamp{Phase: Phase(i), Since: time.Duration(v - 1)})
		}
	}
	slices.SortStableFunc(out, func(a, b Stamp) int {
		if a.Since != b.Since {
			if a.Since < b.Since {
				return -1
			}
			return 1
		}
		return int(a.Phase) - int(b.Phase)
	})
	return out
}

// linePrefix starts every report line, so the lines can be picked out of
// a VMM's stderr among its other messages.
const linePrefix = "boot-timer: "

// Format is one report line: "boot-timer: init-start 812.345ms".
// Milliseconds with microsecond resolution read well for boots of a few
// milliseconds (a container) to tens of seconds (nested TCG) alike.
func (s Stamp) Format() string {
	return fmt.Sprintf("%s%s %.3fms", linePrefix, s.Phase, float64(s.Since)/float64(time.Millisecond))
}

// WriteReport writes one line per stamp, in time order.
func (t *Timer) WriteReport(w io.Writer) error {
	var b strings.Builder
	for _, s := range t.Stamps() {
		b.WriteString(s.Format())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ParseLine reads one report line. ok is false for lines that are not
// boot-timer lines at all; err is set for boot-timer lines that are
// malformed.
func ParseLine(line string) (s Stamp, ok bool, err error) {
	rest, found := strings.CutPrefix(strings.TrimRight(line, "\r\n"), linePrefix)
	if !found {
		return Stamp{}, false, nil
	}
	name, val, found := strings.Cut(rest, " ")
	if !found {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: want PHASE DURATION", line)
	}
	p, err := ParsePhase(name)
	if err != nil {
		return Stamp{}, true, err
	}
	ms, found := strings.CutSuffix(val, "ms")
	if !found {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: duration not in ms", line)
	}
	f, err := strconv.ParseFloat(ms, 64)
	if err != nil || !(f >= 0 && f <= float64(1<<62)/float64(time.Millisecond)) {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: bad duration", line)
	}
	return Stamp{Phase: p, Since: time.Duration(f * float64(time.Millisecond))}, true, nil
}

// ParseReport collects the stamps among a VMM's output lines, ignoring
// the other lines.
func ParseReport(r io.Reader) ([]Stamp, error) {
	var out []Stamp
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s, ok, err := ParseLine(sc.Text())
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}
