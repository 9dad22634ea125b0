package usernet

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/sandbox"
	"github.com/vmm-dev/vmm/usernet/remote"
)

// helperMemory bounds the helper's heap (its RLIMIT_DATA): the stack
// keeps up to a few MiB of buffers for each of up to maxTCP connections
// (a receive window of 1 MiB, a send buffer growing to 4 MiB), which a
// guest that opens thousands and reads none could otherwise make
// gigabytes of the host's memory. What a CI job's network needs is tens
// of MiB (the runtime's own tables are some 40 of them). A guest that
// makes the helper reach the limit ends it, and with it only its own
// network; helperGC, below it, makes the collector work harder first.
const (
	helperMemory = 1 << 30
	helperGC     = helperMemory / 4 * 3
)

// limitMemory caps this process's heap at helperMemory (setrlimit(2):
// past it the kernel refuses the mappings Go's heap grows by, and the
// runtime ends the process) and sets the collector's goal below it.
func limitMemory() error {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_DATA, &r); err != nil {
		return err
	}
	r.Cur = min(helperMemory, r.Max)
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &r); err != nil {
		return err
	}
	debug.SetMemoryLimit(helperGC)
	return nil
}

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
	if err := limitMemory(); err != nil {
		h.Fail(fmt.Errorf("user network: limiting its memory: %w", err))
		return 1
	}
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
