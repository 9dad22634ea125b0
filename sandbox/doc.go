// Package sandbox confines vmm to the system calls it needs once its
// machine is built: a seccomp filter, on every thread, with
// PR_SET_NO_NEW_PRIVS.
//
// Why: vmm's devices parse whatever the guest puts in its memory, and
// the guest is not trusted. Go keeps memory-safety bugs rare, but not
// absent (unsafe views of guest RAM, the kvm_run page, a compiler or
// runtime bug), and a guest that gets control of vmm would have the
// rights of the user who started it: every file, every socket, every
// program. Once setup is done (kernel and initrd read, /dev/kvm, disks
// and TAPs opened) vmm needs none of that: it runs vCPUs, moves bytes
// between descriptors it already holds and manages its own memory. The
// filter turns that observation into a rule the kernel enforces, so such
// a bug can do only what vmm does anyway.
//
// The allow-list is policy/rules.go, one line per system call with the reason
// it is there; ioctl is allowed only for the requests vmm makes after
// setup, clone only with the Go runtime's thread flags, mmap only without
// PROT_EXEC, and signals only to vmm itself. Anything else is denied:
// the kernel stops the call and sends SIGSYS, and a small handler
// written in assembly (sigsys_amd64.s) writes one line,
//
//	vmm: sandbox: syscall NAME (nr N) is not allowed
//
// to stderr and ends the process with status 159 (128+SIGSYS), after
// giving the terminal vmm made raw its mode back (Options.Terminal), so
// that the user's shell is not left without echo; in the background it
// does so only if the terminal is still raw, not in a mode the shell
// set since. It does this without
// the Go runtime, whose own SIGSYS handling is a fatal
// traceback that does not name the call, and which may not run at all if
// the denied call was made while a runtime lock was held.
//
// The filters are compiled ahead of time: package policy assembles each
// variant (with a scratch disk, -nic user, a share, and cgo or not) and
// `go test ./sandbox -run TestFiltersFile -update` writes them to
// zfilters_*.go, which Install copies, writing in the process's ID. So
// vmm links the programs, not the assembler (see policy's doc), and a
// test fails whenever the rules and the compiled filters differ.
package sandbox
