package main

import (
	"runtime"

	"golang.org/x/sys/unix"

	"vmm/boottimer"
)

// outb writes val to an I/O port (outb_amd64.s). The calling thread needs
// ioperm(2) for the port.
func outb(port uint16, val uint8)

// stampBoot tells vmm's boot timer that phase p happened. It is a single
// port write: the timestamp is taken by vmm, on its clock. ioperm applies
// to the calling thread only, hence the locked thread. Where the write
// cannot be made (a container without CAP_SYS_RAWIO, a kernel without
// ioperm) the phase is simply not stamped; where nothing listens at the
// port (QEMU, kvmtool) the write is dropped.
func stampBoot(p boottimer.Phase) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if unix.Ioperm(boottimer.Port, boottimer.PortSize, 1) != nil {
		return
	}
	outb(boottimer.Port, uint8(p))
}
