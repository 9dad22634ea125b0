package main

import (
	"fmt"
	"os"

	"github.com/vmm-dev/vmm/guestabi"
)

// stampBoot tells vmm's boot timer that phase p happened: the timestamp
// is taken by vmm, on its clock. A boot never fails for its timer, so a
// write that cannot be made (a container) is not reported.
func stampBoot(p guestabi.Phase) { _ = writePort(guestabi.BootTimerPort, byte(p)) }

// reportExit hands vmm the job's status through its exit port.
func reportExit(status uint8) {
	if err := writePort(guestabi.ExitPort, status); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: could not write the exit port: %v\n", err)
	}
}
