package guestabi

import (
	"fmt"
	"strconv"
	"strings"
)

// BootTimerPort is the I/O port the guest writes phase codes to. 0x5f0 is free on
// every PC model the benchmark compares: not Linux's io_delay port (0x80),
// not vmm's ACPI PM block (0x600-0x60f), not QEMU's fw_cfg (0x510-0x51b),
// pvpanic (0x505) or debug-exit (0x501) ports, not the floppy controller
// (0x3f0-0x3f7, where Firecracker put its boot-complete port) nor any
// legacy ISA device Linux probes, and below the ranges kvmtool hands out
// to PCI I/O BARs.
const BootTimerPort = 0x5f0

// BootTimerPortSize is the width of the port range: one byte. Wider
// accesses at BootTimerPort straddle the range and are not the boot
// timer's.
const BootTimerPortSize = 1

// Phase is a boot phase code. Codes below GuestMin are the host's own:
// a guest writing one is ignored, so a guest cannot forge when vmm started.
// Codes from GuestMin up are accepted from the guest; the ones without a
// name here are recorded as "guest-0xNN", for guests with phases of
// their own.
type Phase uint8

// Host phases, in boot order.
const (
	// VMMStart is the VMM process's start: the VMM's first instant.
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

// Guest phases, written to BootTimerPort by the guest's init.
const (
	// InitStart is written by vmm-init first thing: the kernel has
	// booted and run /init.
	InitStart Phase = 0x10
	// Ready is written by vmm-init when it prints "vmm-guest: ready":
	// the devices' drivers are loaded and the shell is about to start.
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
