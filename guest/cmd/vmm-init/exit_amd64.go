package main

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"vmm/exitport"
)

// reportExit writes status to vmm's exit port.
func reportExit(status uint8) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(exitport.Port, exitport.Size, 1); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: ioperm exit port: %v\n", err)
		return
	}
	outb(exitport.Port, status)
}
