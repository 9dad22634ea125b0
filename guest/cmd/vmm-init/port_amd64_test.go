package main

import (
	"runtime"
	"testing"
)

// Without ioperm, OUTB from user mode raises #GP: the write must come
// back as a fault, not kill the process. (That is what happens to the
// boot timer's write in QEMU's guests under nested TCG even after
// ioperm.)
func TestOutbFaultIsRecovered(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// No ioperm on this thread: port 0x5f0 is not ours.
	if !safeOutb(0x5f0, 0x10) {
		t.Fatal("OUTB without ioperm did not fault")
	}
	// Still alive, and a second fault is handled the same way.
	if !safeOutb(0x5f0, 0x11) {
		t.Fatal("second OUTB did not fault")
	}
}
