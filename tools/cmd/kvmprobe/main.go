// Command kvmprobe exits 0 when this machine's /dev/kvm runs guests (with
// -kernel, that kernel up to its first exit), and 1 with a one-line
// reason when it does not; `make run` asks it whether to boot directly or
// nested (see package tools/kvmprobe).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/vmm-dev/vmm/tools/kvmprobe"
)

func main() {
	kernel := flag.String("kernel", "", "also boot this kernel until its first exit")
	flag.Parse()
	if err := kvmprobe.Usable(context.Background(), *kernel, kvmprobe.DefaultTimeout); err != nil {
		fmt.Fprintf(os.Stderr, "kvmprobe: %v\n", err)
		os.Exit(1)
	}
}
