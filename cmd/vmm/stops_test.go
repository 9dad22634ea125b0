package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
