package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmm-dev/vmm/machine"
)

// nrOpenPath holds fs.nr_open, the most RLIMIT_NOFILE can be raised to
// (Documentation/admin-guide/sysctl/fs.rst).
const nrOpenPath = "/proc/sys/fs/nr_open"

// raiseFileLimit lifts RLIMIT_NOFILE to fs.nr_open for a machine with
// virtio-fs shares, when vmm may (CAP_SYS_RESOURCE: in practice root).
// Every file the guest has looked up in a share holds a host descriptor
// until the guest's kernel forgets it, which it does only under memory
// pressure, and the share's server takes half the limit for them
// (virtio/fs/share, fdBudget): with the kernel's default hard limit of
// 4,096 (what a process started by a bare init gets), a job that touched
// more than about 2,000 files got ENFILE. Go raises the soft limit to
// the hard one at start-up, so an unprivileged vmm has what its user
// was given. It must run before the machine opens its shares (the
// budget is taken then) and before the sandbox, which has no setrlimit.
// Failures change nothing and are not reported: the limit is a budget,
// not a requirement.
func raiseFileLimit(cfg machine.Config) {
	if len(cfg.Shares) == 0 {
		return
	}
	b, err := os.ReadFile(nrOpenPath)
	if err != nil {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return
	}
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Max >= n {
		return
	}
	// syscall's Setrlimit, not x/sys's: it keeps the Go runtime's note
	// of the limit to give children in step.
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n})
}
