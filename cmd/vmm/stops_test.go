package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/machine"
)

// TestArmStopsKeepsIgnoredSignals: a signal vmm was started ignoring
// (nohup's SIGHUP) does not stop it; the others still do.
func TestArmStopsKeepsIgnoredSignals(t *testing.T) {
	if !signal.Ignored(unix.SIGHUP) { // else ignored already (nohup)
		signal.Ignore(unix.SIGHUP)
		defer signal.Reset(unix.SIGHUP)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	disarm := armStops(ctx, cancel, 0)
	defer disarm()
	if err := unix.Kill(os.Getpid(), unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// A caught SIGHUP would cancel ctx at once; give it the time a
	// delivery takes.
	select {
	case <-ctx.Done():
		t.Fatalf("an ignored SIGHUP stopped vmm: %v", context.Cause(ctx))
	case <-time.After(500 * time.Millisecond):
	}
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop vmm")
	}
	var se signalError
	if !errors.As(context.Cause(ctx), &se) || se.sig != unix.SIGTERM {
		t.Errorf("cause %v, want SIGTERM", context.Cause(ctx))
	}
}

// After -timeout, the line says where each vCPU was whose registers
// were read.
func TestPlacesNote(t *testing.T) {
	tests := []struct {
		name   string
		places []machine.VCPUPlace
		want   string
	}{
		{"none", nil, ""},
		{"three vCPUs, one unread", []machine.VCPUPlace{
			{Known: true, RIP: 0xffffffff81a0b2c3, Interrupts: true, Halted: true},
			{},
			{Known: true, RIP: 0x401000, CPL: 3},
		}, "; vCPU 0 was at RIP=0xffffffff81a0b2c3 in the guest's kernel, halted, interrupts on" +
			"; vCPU 2 was at RIP=0x401000 in the guest's user space, running, interrupts off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := placesNote(tt.places); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
