//go:build linux && amd64

package sandbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Options says what the process does after Install besides running its
// machine.
type Options struct {
	// Scratch allows what ending a job with a scratch disk (vmm run
	// -out, every restore) takes once the guest has stopped: removing
	// the disk and a restore's empty share-slot directory. The job's
	// files are unpacked by a helper, not by vmm.
	Scratch bool
	// Network allows what a user-mode network (-nic user) does while
	// the guest runs: IPv4 and IPv6 sockets, and read-only opens of the
	// resolver's configuration. The vmm-net helper, where that network
	// runs, asks for it; vmm itself never does.
	Network bool
	// Files allows what a virtio-fs share (-fs, vmm run -share and
	// -rootfs) does while the guest runs: the file-system calls of
	// every operation the guest may ask of the shared directory. The
	// -out helper (package runjob/outtar) asks for it too.
	Files bool
	// Terminal, if set, is a terminal the process changed the mode of
	// (vmm's console, in raw mode), to be given its mode back when a
	// denied call ends the process, as the process's own exit would
	// have: otherwise the user's shell is left raw, without echo.
	Terminal *Terminal
}

// Terminal is a terminal's descriptor, the mode to give it back, and
// the raw mode the process set, which tells in the background whether
// the shell that took the terminal has set a mode of its own since (bash,
// zsh and fish do when a job stops; dash and busybox's ash do not).
type Terminal struct {
	Fd   int
	Mode unix.Termios
	Raw  unix.Termios
}

// exitDenied is the status of a process the sandbox stopped: 128+SIGSYS,
// what a shell reports for a process killed by that signal, and how vmm
// reports every other signal that stops it.
const exitDenied = 128 + 31

// Install turns the sandbox on for every thread of the process, now and
// later, for the rest of its life: PR_SET_NO_NEW_PRIVS, then one seccomp
// filter made from policy/rules.go, synchronized to all threads
// (SECCOMP_FILTER_FLAG_TSYNC; threads started later inherit it). Call it
// once every file, device and socket the process needs is open, before
// it runs guest code. A denied call then ends the process with one line
// on stderr naming the call, and status 159, after giving o.Terminal
// its mode back.
//
// Install fails on a kernel without seccomp filters (before 3.17, or
// built without CONFIG_SECCOMP_FILTER); the process is then not confined
// (its SIGSYS handler and no_new_privs bit may be set, which changes
// nothing for vmm), and the caller should stop.
func Install(o Options) error {
	if err := install(filter(o, os.Getpid()), o.Terminal); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// compiled is one filter as package policy assembled it for a process
// whose ID was a stand-in: pidAt are the instructions whose constant is
// that ID.
type compiled struct {
	code  []unix.SockFilter
	pidAt []int
}

// filter is the program for o in a process whose ID is pid: the variant
// compiled for o (zfilters_*.go, made from policy.Program by
// TestFiltersFile), with pid written where the stand-in was. vmm
// assembles nothing at run time, so it does not link go-seccomp-bpf,
// whose system-call tables for every architecture cost 165 KB of heap
// at every start and its code some 180 KB of the binary (issue 12).
func filter(o Options, pid int) []unix.SockFilter {
	c := filters[variant(o)]
	code := make([]unix.SockFilter, len(c.code))
	copy(code, c.code)
	for _, i := range c.pidAt {
		code[i].K = uint32(pid)
	}
	return code
}

// variant indexes filters: one bit per option.
func variant(o Options) int {
	v := 0
	if o.Scratch {
		v |= 1
	}
	if o.Network {
		v |= 2
	}
	if o.Files {
		v |= 4
	}
	return v
}
