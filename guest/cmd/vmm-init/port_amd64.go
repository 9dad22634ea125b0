package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// outb writes val to an I/O port (outb_amd64.s). The calling thread needs
// ioperm(2) for the port.
func outb(port uint16, val uint8)

// writePort writes one byte to an I/O port of vmm's (the boot timer, the
// exit port); the error says why each way failed. Where nothing listens
// at the port (QEMU, kvmtool) the write is simply dropped.
//
// /dev/port comes first: the kernel makes the access, so nothing can
// fault here. Kernels without it (CONFIG_DEVPORT depends on PCI) get a
// direct OUTB after ioperm(2), which applies to the calling thread only,
// hence the locked thread. Under some hypervisors (QEMU's KVM guests
// under nested TCG) that OUTB raises #GP despite ioperm; SetPanicOnFault
// turns the resulting SIGSEGV into a panic that is recovered instead of
// a crash of the whole init.
func writePort(port uint16, val uint8) error {
	f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt([]byte{val}, int64(port))
		f.Close()
		if err == nil {
			return nil
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if perr := unix.Ioperm(int(port), 1, 1); perr != nil {
		return fmt.Errorf("%v; ioperm: %v", err, perr)
	}
	if safeOutb(port, val) {
		return fmt.Errorf("%v; outb after ioperm faulted", err)
	}
	return nil
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
