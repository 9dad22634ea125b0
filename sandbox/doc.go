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
// The allow-list is rules.go, one line per system call with the reason
// it is there; ioctl is allowed only for the requests vmm makes after
// setup, clone only with the Go runtime's thread flags, mmap only without
// PROT_EXEC, and signals only to vmm itself. Anything else is denied:
// the kernel stops the call and sends SIGSYS, and a small handler
// written in assembly (sigsys_amd64.s) writes one line,
//
//	vmm: sandbox: syscall NAME (nr N) is not allowed
//
// to stderr and ends the process with status 159 (128+SIGSYS). It does
// this without the Go runtime, whose own SIGSYS handling is a fatal
// traceback that does not name the call, and which may not run at all if
// the denied call was made while a runtime lock was held.
//
// Why github.com/elastic/go-seccomp-bpf: vmm is pure Go (CGO_ENABLED=0),
// which rules out libseccomp and its Go binding. The library is pure Go,
// has the kernel's syscall tables (names to numbers, and back, which the
// message needs), assembles argument conditions into correct 64-bit BPF
// comparisons, and prefixes the architecture check and the x32 guard
// every hand-written filter must not forget. Only its assembler is used:
// installing the filter is done here, because the TSYNC result (a thread
// that could not be synchronized) must be checked, and the SIGSYS
// handler must be in place first.
package sandbox
