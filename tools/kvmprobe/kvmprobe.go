// Package kvmprobe answers whether this machine's /dev/kvm can run the
// guest a tool is about to boot, by running it: first a few bytes of
// 64-bit code that write a status to vmm's exit port, then, when given,
// the real kernel until its first exit to vmm (the end of its
// self-decompression, a second or two on any working KVM). The tools that
// choose between running vmm directly and running it nested (make run,
// make bench, make bench-boot) ask it rather than look for the device
// node, because a /dev/kvm that opens is not one that runs Linux: some
// sandboxes offer a paravirtual one ("kvm-pvm") that runs the small probe
// but on which a distro kernel never makes its first exit, and picking it
// would hang the tool instead of falling back to nested mode.
package kvmprobe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/machine"
)

// probeStatus is what the probe guest writes to the exit port: an odd
// value, so a guest that reported nothing (status 0 by default) or a
// stray write cannot pass for it.
const probeStatus = 0x2a

// probeCode is the probe guest's 64-bit entry: mov al, probeStatus;
// out guestabi.ExitPort, al; then hlt in a loop, should the exit port
// not stop it.
var probeCode = []byte{0xb0, probeStatus, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd}

// DefaultTimeout bounds the probe: a working KVM, even nested under
// emulation, runs those instructions in milliseconds; the rest is vmm's
// setup.
const DefaultTimeout = 10 * time.Second

// Usable boots the probe guest on /dev/kvm and, if kernel is not empty,
// that kernel until its first exit, and reports why /dev/kvm cannot be
// used, or nil. Each boot gives up after timeout.
func Usable(ctx context.Context, kernel string, timeout time.Duration) error {
	if err := runProbe(ctx, timeout); err != nil {
		return err
	}
	if kernel == "" {
		return nil
	}
	return firstExit(ctx, kernel, timeout)
}

// firstExit boots kernel until the boot timer sees its first exit.
func firstExit(ctx context.Context, kernel string, timeout time.Duration) error {
	timer := boottimer.New(time.Now())
	m, err := machine.New(machine.Config{Kernel: kernel, Cmdline: "console=ttyS0 quiet", MemSize: 256 << 20, CPUs: 1,
		Console: io.Discard, BootTimer: timer})
	if err != nil {
		return err
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		select {
		case err := <-done:
			if err == nil || sawFirstExit(timer) {
				return nil
			}
			return fmt.Errorf("/dev/kvm: %s did not start: %w", kernel, err)
		case <-tick.C:
			if sawFirstExit(timer) {
				cancel()
				<-done
				return nil
			}
		case <-deadline:
			cancel()
			<-done
			return fmt.Errorf("/dev/kvm runs a test guest, but %s made no exit to vmm within %v", kernel, timeout)
		}
	}
}

func sawFirstExit(t *boottimer.Timer) bool {
	for _, s := range t.Stamps() {
		if s.Phase == guestabi.FirstExit {
			return true
		}
	}
	return false
}

// runProbe boots the few bytes of probeCode.
func runProbe(ctx context.Context, timeout time.Duration) error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vmm-kvmprobe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kernel := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kernel, testkernel.Build(testkernel.Options{Entry64: probeCode}), 0o644); err != nil {
		return err
	}
	m, err := machine.New(machine.Config{Kernel: kernel, MemSize: 32 << 20, CPUs: 1, Console: io.Discard})
	if err != nil {
		return err
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = m.Run(ctx)
	switch status, ok := m.ExitStatus(); {
	case ok && status == probeStatus:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("/dev/kvm opens, but a test guest did not run within %v", timeout)
	case err != nil:
		return fmt.Errorf("/dev/kvm: a test guest failed: %w", err)
	default:
		return fmt.Errorf("/dev/kvm: a test guest stopped without reporting (status %d, reported %v)", status, ok)
	}
}
