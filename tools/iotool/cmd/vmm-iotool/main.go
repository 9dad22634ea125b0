// Command vmm-iotool measures and checks the guest's disks and network
// cards: TCP transfers and pings to the host, sequential and random block
// I/O, checksums of what arrived. Every run prints one result line,
// "iotool: OP key=value ...", which the host's tests and benchmark read
// off the serial console. The host end of a transfer runs the same code
// (`l1tool io` in the nested harness); see package tools/iotool.
//
//	vmm-iotool tcp-recv -port 5201
//	vmm-iotool tcp-send -addr 169.254.100.1:5201 -bytes 64M
//	vmm-iotool blk-seq-write -dev /dev/vda -bytes 64M -sha256
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmm-dev/vmm/tools/iotool"
)

func main() {
	// ^C on the guest's console stops a transfer cleanly, with a message.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := iotool.Main(ctx, "vmm-iotool", os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
