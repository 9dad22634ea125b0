package machine_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/vmm-dev/vmm/machine"
)

// ExampleNew boots a guest, waits for it to stop and reads the status it
// wrote to the exit port. It has no Output line: it needs a kernel and
// /dev/kvm, so it is compiled but not run.
func ExampleNew() {
	m, err := machine.New(machine.Config{
		Kernel: "bzImage", Initrd: "initrd.cpio", Cmdline: "console=ttyS0 quiet",
		MemSize: 512 << 20, CPUs: 1, Console: os.Stderr,
		Disks: []machine.Disk{{Path: "data.img"}},
	})
	if err != nil {
		log.Fatal(err) // bad input is reported here, before /dev/kvm is opened
	}
	defer m.Close() // stops device goroutines, syncs disks, frees guest RAM

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// nil on poweroff, reboot or an exit-port write; ctx's error when it
	// ends first; an error with the vCPU's registers when the guest fails.
	if err := m.Run(ctx); err != nil {
		log.Fatalf("guest stopped (%v): %v", m.Reason(), err)
	}
	if status, ok := m.ExitStatus(); ok {
		fmt.Println("guest exit status", status)
	} else {
		fmt.Println("guest stopped without a status:", m.Reason())
	}
}
