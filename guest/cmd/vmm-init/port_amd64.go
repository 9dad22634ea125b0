package main

import (
	"os"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// outb writes val to an I/O port (outb_amd64.s). The calling thread needs
// ioperm(2) for the port.
func outb(port uint16, val uint8)

// writePort writes one byte to an I/O port of vmm's (the boot timer, the
// exit port) and reports whether the write was made. Where nothing
// listens at the port (QEMU, kvmtool) the write is simply dropped.
//
// /dev/port comes first: the kernel makes the access, so nothing can
// fault here. Kernels without it (CONFIG_DEVPORT depends on PCI) get a
// direct OUTB after ioperm(2), which applies to the calling thread only,
// hence the locked thread. Under some hypervisors (QEMU's KVM guests
// under nested TCG) that OUTB raises #GP despite ioperm; SetPanicOnFault
// turns the resulting SIGSEGV into a panic that is recovered instead of
// a crash of the whole init.
func writePort(port uint16, val uint8) bool {
	if f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0); err == nil {
		_, err := f.WriteAt([]byte{val}, int64(port))
		f.Close()
		if err == nil {
			return true
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if unix.Ioperm(int(port), 1, 1) != nil {
		return false
	}
	return !safeOutb(port, val)
}

// safeOutb is outb that reports a fault instead of crashing.
func safeOutb(port uint16, val uint8) (faulted bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			faulted = true
		}
	}()
	outb(port, val)
	return false
}
