//go:build linux && amd64

package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Flags of struct sigaction (arch/x86/include/uapi/asm/signal.h).
const (
	saSiginfo  = 0x4
	saOnstack  = 0x08000000
	saRestorer = 0x04000000
)

// sigactiont is the kernel's struct sigaction on x86-64
// (include/linux/signal_types.h, with SA_RESTORER): not libc's.
type sigactiont struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// Implemented in sigsys_amd64.s.
func sigsys()
func sigreturn()
func handlerAddrs() (handler, restorer uintptr)

// sigsysTerminal is what the SIGSYS handler gives back before it ends
// the process: the mode of the terminal at fd, if fd is not negative,
// where the process's group, pgrp, is the terminal's foreground, or the
// terminal is not the process's controlling one, or it still has the
// raw mode the process set (in the background, a shell that set a mode
// of its own has the terminal).
type sigsysTerminal struct {
	fd   int64
	pgrp int32
	_    int32
	mode unix.Termios
	raw  unix.Termios
}

// endTerminal is the SIGSYS handler's terminal. It is a variable of the
// package because the handler, in assembly and running no Go code, can
// find data only by symbol; install writes it once, before the handler
// is in place, and nothing writes it after (the handler reads it only).
var endTerminal = sigsysTerminal{fd: -1}

// install puts the SIGSYS handler in place, with term as the terminal it
// restores, then filter on every thread.
func install(filter []unix.SockFilter, term *Terminal) error {
	if len(filter) == 0 || len(filter) > unix.BPF_MAXINSNS {
		return fmt.Errorf("filter of %d instructions", len(filter))
	}
	// PR_SET_NO_NEW_PRIVS is per thread: it and the filter must be set
	// on the same one (TSYNC then copies both to the others).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if term != nil && term.Fd >= 0 {
		endTerminal = sigsysTerminal{fd: int64(term.Fd), pgrp: int32(unix.Getpgrp()), mode: term.Mode, raw: term.Raw}
	}
	if err := setSigsysHandler(); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_NO_NEW_PRIVS: %w", err)
	}
	return load(filter)
}

// load installs one filter on every thread of the process.
func load(filter []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	switch {
	case errno == unix.EINVAL || errno == unix.ENOSYS:
		return fmt.Errorf("seccomp filters: %w: this kernel lacks them (CONFIG_SECCOMP_FILTER); run with -sandbox=off", errno)
	case errno != 0:
		return fmt.Errorf("seccomp: %w", errno)
	case r != 0:
		// With TSYNC, a positive return is a thread that could not be
		// synchronized (it has a filter of its own); the filter was
		// not installed.
		return fmt.Errorf("seccomp: thread %d cannot take the filter", r)
	}
	return nil
}

// setSigsysHandler makes sigsys the handler of SIGSYS, on the signal
// stack the Go runtime gives every thread, with every signal blocked
// while it runs.
func setSigsysHandler() error {
	h, r := handlerAddrs()
	sa := sigactiont{handler: h, flags: saSiginfo | saOnstack | saRestorer, restorer: r, mask: ^uint64(0)}
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS),
		uintptr(unsafe.Pointer(&sa)), 0, unsafe.Sizeof(sa.mask), 0, 0)
	if errno != 0 {
		return fmt.Errorf("SIGSYS handler: %w", errno)
	}
	return nil
}
