package usernet

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/vmm-dev/vmm/sandbox"
	"github.com/vmm-dev/vmm/usernet/remote"
)

// HelperMain is the vmm-net helper (cmd/vmm-net) given its arguments: it
// runs one card's network for the vmm that started it, on the
// descriptors package usernet/remote passes, until vmm closes them, and
// returns the exit status. It lives here so that tests can run their
// own binary as the helper.
func HelperMain(args []string) int {
	// The terminal's signals are vmm's, which decides when the network
	// ends by closing its sockets (it also starts the helper in a process
	// group of its own); ignored first, so none ends a helper starting up.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	fs := pflag.NewFlagSet(remote.HelperName, pflag.ContinueOnError)
	wire := fs.String("wire", "", "the wire version vmm speaks (remote.WireVersion)")
	fwds := fs.StringArray("hostfwd", nil, "forward a host port into the guest (QEMU's hostfwd spelling; repeatable)")
	noSandbox := fs.Bool("no-sandbox", false, "do not install the seccomp filter (vmm's -sandbox=off)")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", remote.HelperName, err)
		return 2
	}
	h, err := remote.HelperFiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *wire != remote.WireVersion {
		h.Fail(fmt.Errorf("user network: %s speaks wire version %s, and this vmm %q: use the %s built with this vmm", remote.HelperName, remote.WireVersion, *wire, remote.HelperName))
		return 2
	}
	var cfg Config
	for _, s := range *fwds {
		f, err := ParseForward(s)
		if err != nil {
			h.Fail(err)
			return 2
		}
		cfg.Forwards = append(cfg.Forwards, f)
	}
	cfg.Logf = h.Logf
	n, err := New(cfg)
	if err != nil {
		h.Fail(err)
		return 1
	}
	if !*noSandbox {
		if err := sandbox.Install(sandbox.Options{Network: true}); err != nil {
			h.Fail(err)
			return 1
		}
	}
	if err := h.Serve(n); err != nil {
		h.Logf("%v", err)
		return 1
	}
	return 0
}
