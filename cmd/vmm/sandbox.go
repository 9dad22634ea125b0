package main

import (
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/sandbox"
)

// enterSandbox confines vmm to the system calls in
// sandbox/policy/rules.go, unless -sandbox=off. It is called once the
// machine is built: every file, device and socket vmm needs is open, and
// no guest code has run. A job's scratch disk (vmm run with -out, and
// every restored snapshot, which carries one) adds the call that removes
// it after the guest stops (-out's files are unpacked by a helper,
// runjob.Collector), and a virtio-fs share (-fs, vmm run -share and
// -rootfs) the file-system calls its server makes for the guest. -nic user adds nothing: its
// network runs in the vmm-net helper, which takes the network variant
// of the filter itself. term, if not nil, is the terminal vmm made raw,
// which a denied call's end gives its mode back.
func enterSandbox(o options, cfg machine.Config, term *sandbox.Terminal) error {
	if o.sandbox == "off" {
		return nil
	}
	so := sandboxOptions(cfg)
	so.Terminal = term
	return sandbox.Install(so)
}

// sandboxOptions is what the run does besides running the guest.
func sandboxOptions(cfg machine.Config) sandbox.Options {
	so := sandbox.Options{Files: len(cfg.Shares) > 0}
	for _, d := range cfg.Disks {
		so.Scratch = so.Scratch || d.Serial == guestabi.OutSerial
	}
	return so
}
