package main

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The backstop's two early cases, without a process: a stop during the
// build runs the cleanups, says one line and exits with the stop's
// status at once, and tells runMode (started) to do nothing more; a stop
// before the build is left to runMode (startBuilding is false), and
// nothing exits.
func TestBackstopEarly(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cause         error
		beforeBuild   bool
		status        int
		line          string
		wantCleanups  int32
		wantExitCalls bool
	}{
		{"-timeout during the build", errTimeout{d: time.Second}, false, exitTimeout, "vmm: -timeout 1s reached before the guest started\n", 1, true},
		{"SIGINT during the build", signalError{sig: syscall.SIGINT}, false, 130, "vmm: stopped by interrupt before the guest started\n", 1, true},
		{"quit during the build", errQuit, false, 0, "", 1, true},
		{"-timeout before the build", errTimeout{d: time.Second}, true, 0, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			exits := make(chan int, 1)
			b, disarm := armBackstop(ctx, stderr, func(s int) { exits <- s })
			defer disarm()
			var cleanups atomic.Int32
			b.onExit(func() { cleanups.Add(1) })
			if !tc.beforeBuild && !b.startBuilding() {
				t.Fatal("startBuilding false before any stop")
			}
			cancel(tc.cause)
			if tc.beforeBuild {
				// The stop's watcher runs on its own goroutine.
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
					b.mu.Lock()
					seen := b.stopped
					b.mu.Unlock()
					if seen {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the stop not seen 5s after it")
					}
				}
				if b.startBuilding() {
					t.Fatal("startBuilding true after a stop")
				}
			}
			select {
			case s := <-exits:
				if !tc.wantExitCalls {
					t.Fatalf("exited with %d", s)
				}
				if s != tc.status {
					t.Errorf("status %d, want %d", s, tc.status)
				}
				if b.started() {
					t.Error("started true while the backstop ends vmm")
				}
			case <-time.After(500 * time.Millisecond):
				if tc.wantExitCalls {
					t.Fatal("no exit 500ms after the stop")
				}
			}
			if got := cleanups.Load(); got != tc.wantCleanups {
				t.Errorf("%d cleanups ran, want %d", got, tc.wantCleanups)
			}
			if b, _ := os.ReadFile(stderr.Name()); string(b) != tc.line {
				t.Errorf("stderr %q, want %q", b, tc.line)
			}
		})
	}
}
