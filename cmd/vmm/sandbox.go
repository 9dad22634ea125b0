package main

import (
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/sandbox"
)

// enterSandbox confines vmm to the system calls in sandbox/rules.go,
// unless -sandbox=off. It is called once the machine is built: every
// file, device and socket vmm needs is open, and no guest code has run.
// -out adds the calls its extraction makes after the guest stops, -nic
// user those of the user-mode network (host sockets, the resolver's
// files), and a virtio-fs share (-fs, vmm run -share and -rootfs) the
// file-system calls its server makes for the guest.
func enterSandbox(o options, cfg machine.Config) error {
	if o.sandbox == "off" {
		return nil
	}
	return sandbox.Install(sandboxOptions(o, cfg))
}

// sandboxOptions is what the run does besides running the guest.
func sandboxOptions(o options, cfg machine.Config) sandbox.Options {
	so := sandbox.Options{Extract: o.out != "", Files: len(cfg.Shares) > 0}
	for _, n := range cfg.NICs {
		so.Network = so.Network || n.User
	}
	return so
}
