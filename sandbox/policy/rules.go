//go:build linux && amd64

package policy

import (
	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// This file is the allow-list, the part of the package to review: every
// system call vmm may make once the sandbox is on, each with why. It was
// drawn from the code paths that run after setup (the vCPU loop, the
// devices' workers, Machine.Close, the end of a `vmm run` job, the Go
// runtime's scheduler, allocator and signal code) and checked with
// `strace -f` on vmm runs in the nested e2e environment. Adding a call
// here widens what a guest that took control of vmm could do: say why
// in its line, and prefer an argument condition to a bare name.

// when says in which runs a rule applies.
type when int

const (
	always  when = iota
	scratch      // only with Set.Scratch (a job's scratch disk: vmm run -out, every restore)
	network      // only with Set.Network (-nic user)
	files        // only with Set.Files (-fs, vmm run -share and -rootfs)
	withCgo      // only in a vmm built with cgo, whose threads glibc starts
)

// rule allows one system call. With args, only calls whose arguments
// match all of them; a call with several rules is allowed when any of
// them matches.
type rule struct {
	name string
	when when
	args []seccomp.Condition
	why  string
}

// failure is a system call that is not allowed but fails with errno
// instead of being reported: one that a library tries before a
// fallback.
type failure struct {
	name  string
	when  when
	errno unix.Errno
	why   string
}

// eq, ne, le and noneOf are argument conditions: argument i equals,
// differs from, is at most (unsigned, all 64 bits), or has none of the
// bits of v.
func eq(i uint32, v uint64) seccomp.Condition {
	return seccomp.Condition{Argument: i, Operation: seccomp.Equal, Value: v}
}

func ne(i uint32, v uint64) seccomp.Condition {
	return seccomp.Condition{Argument: i, Operation: seccomp.NotEqual, Value: v}
}

func le(i uint32, v uint64) seccomp.Condition {
	return seccomp.Condition{Argument: i, Operation: seccomp.LessOrEqual, Value: v}
}

func noneOf(i uint32, v uint64) seccomp.Condition {
	return seccomp.Condition{Argument: i, Operation: seccomp.BitsNotSet, Value: v}
}

// ioctl requests vmm makes after setup. KVM's are built as
// include/uapi/linux/kvm.h builds them (_IO/_IOR/_IOW of KVMIO, 0xAE,
// include/uapi/asm-generic/ioctl.h), with the sizes of struct
// kvm_irq_level (8), kvm_regs (144), kvm_sregs (312), kvm_mp_state (4),
// kvm_irq_routing (8, entries follow) and kvm_ioeventfd (64) on x86-64.
const (
	kvmRun      = 0xae80     // KVM_RUN: _IO(KVMIO, 0x80)
	kvmIRQLine  = 0x4008ae61 // KVM_IRQ_LINE: _IOW(KVMIO, 0x61, struct kvm_irq_level)
	kvmGetRegs  = 0x8090ae81 // KVM_GET_REGS: _IOR(KVMIO, 0x81, struct kvm_regs)
	kvmGetSregs = 0x8138ae83 // KVM_GET_SREGS: _IOR(KVMIO, 0x83, struct kvm_sregs)
	// KVM_GET_MP_STATE: _IOR(KVMIO, 0x98, struct kvm_mp_state), 4 bytes.
	kvmGetMPState = 0x8004ae98
	// With -virtio-transport pci the guest drives both at run time.
	kvmSetGSIRouting = 0x4008ae6a // KVM_SET_GSI_ROUTING: _IOW(KVMIO, 0x6a, struct kvm_irq_routing)
	kvmIOEventFD     = 0x4040ae79 // KVM_IOEVENTFD: _IOW(KVMIO, 0x79, struct kvm_ioeventfd)
)

// goCloneFlags are the flags the Go runtime starts a thread with
// (cloneFlags in runtime/os_linux.go, plus CLONE_SETTLS, which
// runtime·clone in sys_linux_amd64.s adds): a thread sharing everything.
// Any other clone, a new process or namespace, is denied.
const goCloneFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_SYSVSEM | unix.CLONE_THREAD | unix.CLONE_SETTLS

// glibcCloneFlags are the flags glibc's pthread_create starts a thread
// with (clone_flags in sysdeps/unix/sysv/linux/createthread.c), which it
// passes to clone when clone3 fails with ENOSYS (clone-internal.c).
const glibcCloneFlags = goCloneFlags | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID

// readOnly are the open(2) flags that let a call change a file:
// everything but O_RDONLY (0) and harmless modifiers such as O_CLOEXEC.
// O_TMPFILE is __O_TMPFILE | O_DIRECTORY (include/uapi/asm-generic/
// fcntl.h), and a condition on these bits refuses any of them, so only
// __O_TMPFILE is among them: an open of a directory is a read.
const readOnly = unix.O_WRONLY | unix.O_RDWR | unix.O_CREAT | unix.O_TRUNC | unix.O_APPEND | unix.O_TMPFILE&^unix.O_DIRECTORY

// maxSignal is the highest signal number (_NSIG-1, 64 on x86-64:
// arch/x86/include/asm/signal.h). The kernel reads a signal number as a
// 32-bit int, so checking that the 64-bit argument is at most this also
// keeps high bits from disguising SIGSYS.
const maxSignal = 64

// rules is the allow-list for a process whose ID is pid. The filter
// compares the number of a call with the names in this order, so the
// frequent ones come first (on Linux 5.11 and later the kernel caches the
// verdict for every call whose arguments are not checked). ioctl is
// first: KVM_RUN is made on every vCPU exit.
func rules(pid int) []rule {
	self := uint64(pid)
	return []rule{
		// ioctl, by request.
		{"ioctl", always, []seccomp.Condition{eq(1, kvmRun)}, "KVM_RUN: run a vCPU until its next exit (the vCPU loop)"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmIRQLine)}, "KVM_IRQ_LINE: the legacy devices (UARTs, RTC) raise and lower their interrupt lines"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmGetRegs)}, "KVM_GET_REGS: registers for the message of a fatal exit (triple fault, failed entry), and where each vCPU was for the line -timeout ends with"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmGetSregs)}, "KVM_GET_SREGS: the same message's control registers, and the privilege level in -timeout's line"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmGetMPState)}, "KVM_GET_MP_STATE: whether each vCPU was halted, for the line -timeout ends with (machine.VCPUPlace)"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmSetGSIRouting)}, "KVM_SET_GSI_ROUTING: a virtio-pci driver programs an MSI-X vector, which vmm routes to the vector's irqfd"},
		{"ioctl", always, []seccomp.Condition{eq(1, kvmIOEventFD)}, "KVM_IOEVENTFD: a guest moves a virtio-pci function's BAR, and its queues' ioeventfds move with it"},
		{"ioctl", always, []seccomp.Condition{eq(1, unix.TUNSETOFFLOAD)}, "TUNSETOFFLOAD: virtio-net tells the TAP which offloads the guest accepted, when its driver starts"},
		{"ioctl", always, []seccomp.Condition{eq(1, unix.TCSETS)}, "TCSETS: give the terminal its settings back at exit (vmm put it in raw mode), also when the SIGSYS handler ends vmm, and raw mode back after a SIGCONT (rawterm.MakeRawKept)"},
		{"ioctl", always, []seccomp.Condition{eq(1, unix.TIOCGPGRP)}, "TIOCGPGRP: after a SIGCONT, whether vmm is the terminal's foreground before raw mode goes back on (rawterm.MakeRawKept, which read vmm's own process group before the sandbox); at exit, and in the SIGSYS handler, whether the terminal is vmm's to give its mode back"},
		{"ioctl", always, []seccomp.Condition{eq(1, unix.TCGETS)}, "TCGETS: at exit in the background, whether the terminal still has vmm's raw mode (which it then gets back) or a mode the shell set since; it only reads"},

		// Threads, memory and signals: the Go runtime.
		{"clone", always, []seccomp.Condition{eq(0, goCloneFlags)}, "the Go runtime starts threads (each vCPU holds one); with its thread flags only"},
		{"mmap", always, []seccomp.Condition{noneOf(2, unix.PROT_EXEC)}, "the Go heap and goroutine stacks grow; never executable memory"},
		{"prctl", always, []seccomp.Condition{eq(0, unix.PR_SET_VMA)}, "the Go runtime names its anonymous mappings (PR_SET_VMA_ANON_NAME)"},
		{"rt_sigaction", always, []seccomp.Condition{le(0, maxSignal), ne(0, uint64(unix.SIGSYS))}, "os/signal and the runtime's crash path change handlers; never SIGSYS's, so every denial is reported"},
		{"tgkill", always, []seccomp.Condition{eq(0, self)}, "goroutine preemption and vCPU kicks (SIGURG to a thread of vmm's own)"},
		{"kill", always, []seccomp.Condition{eq(0, self)}, "the runtime's crash path re-raises a fatal signal on vmm itself"},

		{"futex", always, nil, "the Go runtime's locks, sleeps and wakeups"},
		{"epoll_pwait", always, nil, "the Go netpoller waits for the eventfds, the TAP and the console"},
		{"epoll_ctl", always, nil, "the netpoller drops a descriptor when it is closed"},
		{"nanosleep", always, nil, "the runtime's short sleeps (usleep in sysmon and the scheduler)"},
		{"clock_gettime", always, nil, "time.Now where the vDSO falls back to the system call (some clocksources)"},
		{"sched_yield", always, nil, "the runtime yields in spin loops (osyield)"},
		{"sched_getaffinity", always, nil, "the runtime rechecks its CPU count for GOMAXPROCS now and then"},
		{"getpid", always, nil, "the pid for tgkill"},
		{"gettid", always, nil, "a vCPU notes its thread for kicks; a new runtime thread its own ID"},
		{"rt_sigprocmask", always, nil, "the runtime masks signals around thread creation and exit"},
		{"rt_sigreturn", always, nil, "return from every signal handler (SIGURG preemption, os/signal)"},
		{"sigaltstack", always, nil, "each new runtime thread sets up its signal stack"},
		{"restart_syscall", always, nil, "the kernel resumes a sleep a signal interrupted"},
		{"munmap", always, nil, "the Go heap returns memory; Close unmaps guest RAM and kvm_run pages"},
		{"madvise", always, nil, "the Go scavenger returns unused heap pages to the kernel"},
		{"getrandom", always, nil, "the runtime's random seeds where the vDSO cannot serve them"},
		{"exit", always, nil, "a thread ends (a vCPU goroutine's locked thread, when the machine stops)"},
		{"exit_group", always, nil, "vmm exits, and the SIGSYS handler ends it"},
		{"waitid", always, nil, "reap a helper vmm started (vmm-net for -nic user, vmm-unpack for -out; os.Process waits on its pidfd), only ever a child"},
		{"wait4", always, nil, "the same where the kernel has no pidfd"},
		{"pidfd_send_signal", always, nil, "kill a helper that did not end when vmm closed its end (vmm-net's sockets, -out's control pipe); a pidfd names only a process vmm started"},

		// A vmm built with cgo (CGO_ENABLED=1, the go command's default
		// where a C compiler is found: package net links the C runtime)
		// has its threads started by glibc, which needs more. The release
		// build (make) has cgo off, so none of these apply to it.
		{"clone", withCgo, []seccomp.Condition{eq(0, glibcCloneFlags)}, "glibc's pthread_create starts a thread; with its thread flags only"},
		{"rseq", withCgo, nil, "glibc registers each new thread's restartable sequences area"},
		{"set_robust_list", withCgo, nil, "glibc registers each new thread's robust futex list"},
		{"mprotect", withCgo, []seccomp.Condition{noneOf(2, unix.PROT_EXEC)}, "glibc makes a new thread's stack usable past its guard page, and grows malloc arenas; never executable"},

		// I/O on descriptors opened during setup.
		{"read", always, nil, "console and job input, eventfd kicks, TAP frames, the runtime's cgroup files"},
		{"write", always, nil, "console and job output, eventfd interrupts, TAP frames, messages on stderr"},
		{"writev", always, nil, "virtio-net sends a frame to the TAP from the guest's buffers"},
		{"pread64", always, nil, "the runtime rereads its cgroup CPU limit (GOMAXPROCS)"},
		{"preadv", always, nil, "virtio-blk reads a request's buffers"},
		{"pwritev", always, nil, "virtio-blk writes a request's buffers"},
		{"pwrite64", always, nil, "virtio-blk writes zeroes where the file system cannot"},
		{"fallocate", always, nil, "virtio-blk discard and write-zeroes punch or zero ranges"},
		{"fdatasync", always, nil, "virtio-blk FLUSH, and the sync when a disk is closed"},
		{"close", always, nil, "Machine.Close releases descriptors at exit"},

		// A job's scratch disk (`vmm run -out`, and every restore, whose
		// snapshot has one): once the guest stops, vmm removes what it
		// made for the job. The -out archive itself is unpacked by a
		// helper, `vmm-unpack out` (package runjob/outtar), in a process
		// of its own under the Files variant: vmm creates no file.
		{"unlinkat", scratch, nil, "remove the scratch disk where it kept its name (cmd/vmm scratchDisk), and a restore's empty share-slot directory (cmd/vmm lockedEmptyDir)"},

		// -fs, and vmm run's -share and -rootfs: the virtio-fs server
		// (virtio/fs/share) does what the guest asks of the shared
		// directory while it runs, through descriptors of its own and
		// /proc/self/fd paths. Measured with strace on its tests. Only
		// for a run with a share: a vmm that took these could read and
		// change whatever files the user can. The -out helper (package
		// runjob/outtar) runs under these too: unpacking the job's
		// archive takes openat, mkdirat, unlinkat, symlinkat,
		// newfstatat, readlinkat, fstat and fcntl of them.
		{"openat", files, nil, "-fs: open a shared file or directory (lookup, open, create)"},
		{"newfstatat", files, nil, "-fs: a shared file's attributes (getattr, lookup)"},
		{"fstat", files, nil, "-fs: the attributes of an open shared file"},
		{"fstatfs", files, nil, "-fs: statfs of the shared file system, and whether a file is the host kernel's (never opened)"},
		{"getdents64", files, nil, "-fs: read a shared directory"},
		{"lseek", files, nil, "-fs: rewind a shared directory for readdir"},
		{"readlinkat", files, nil, "-fs: readlink of a shared symlink"},
		{"mkdirat", files, nil, "-fs: mkdir in the share"},
		{"mknodat", files, nil, "-fs: mknod and mkfifo"},
		{"symlinkat", files, nil, "-fs: symlink in the share"},
		{"linkat", files, nil, "-fs: link, a hard link inside the share"},
		{"unlinkat", files, nil, "-fs: unlink and rmdir"},
		{"renameat2", files, nil, "-fs: rename, with the guest's flags"},
		{"fchmodat", files, nil, "-fs: chmod (setattr)"},
		{"fchownat", files, nil, "-fs: chown (setattr)"},
		{"utimensat", files, nil, "-fs: set times (setattr)"},
		{"truncate", files, nil, "-fs: set size (setattr) by path"},
		{"ftruncate", files, nil, "-fs: set size (setattr) of an open file"},
		{"faccessat", files, nil, "-fs: access checks"},
		{"fsync", files, nil, "-fs: fsync and fsyncdir"},
		{"fcntl", files, nil, "-fs: os.File checks a descriptor's flags"},

		// -nic user: the user-mode network (package usernet) carries the
		// guest's TCP and UDP through host sockets it opens while the
		// guest runs, and answers DNS through Go's resolver, which
		// rereads /etc/resolv.conf, /etc/nsswitch.conf and /etc/hosts
		// when they change. Only for a run with such a card: a vmm
		// that took these could reach the network and read (not write)
		// the user's files.
		{"socket", network, []seccomp.Condition{eq(0, unix.AF_INET)}, "-nic user: a host socket for a guest connection or DNS query (IPv4)"},
		{"socket", network, []seccomp.Condition{eq(0, unix.AF_INET6)}, "-nic user: the same over IPv6"},
		{"connect", network, nil, "-nic user: dial the guest's destination or the name server"},
		{"bind", network, nil, "-nic user: UDP sockets and hostfwd listeners take their address"},
		{"listen", network, nil, "-nic user: hostfwd's TCP listeners"},
		{"accept4", network, nil, "-nic user: a host connection to a hostfwd port"},
		{"getsockname", network, nil, "-nic user: net.Conn's local address"},
		{"getpeername", network, nil, "-nic user: net.Conn's remote address"},
		{"setsockopt", network, nil, "-nic user: Go's net package sets SO_REUSEADDR, TCP_NODELAY, keepalives"},
		{"getsockopt", network, nil, "-nic user: SO_ERROR of a non-blocking connect"},
		{"sendto", network, nil, "-nic user: UDP datagrams"},
		{"recvfrom", network, nil, "-nic user: UDP datagrams"},
		{"sendmsg", network, nil, "-nic user: UDP datagrams"},
		{"recvmsg", network, nil, "-nic user: UDP datagrams"},
		{"shutdown", network, nil, "-nic user: half-close a spliced TCP connection"},
		{"openat", network, []seccomp.Condition{noneOf(2, readOnly)}, "-nic user: the resolver reads /etc/resolv.conf, /etc/nsswitch.conf, /etc/hosts; read-only"},
		{"newfstatat", network, nil, "-nic user: the resolver checks whether those files changed"},
		{"fstat", network, nil, "-nic user: the resolver reads those files"},
		{"fcntl", network, nil, "-nic user: net.FileConn and os.File check a descriptor's flags"},
		{"uname", network, nil, "-nic user: the resolver's default search domain is the host name"},
	}
}

// failures are the calls that fail instead of being reported.
func failures() []failure {
	return []failure{
		{"clone3", withCgo, unix.ENOSYS, "glibc's pthread_create tries clone3 first; its flags are behind a pointer the filter cannot read, so it fails and glibc falls back to clone"},
		{"openat", withCgo, unix.EACCES, "glibc's malloc counts CPUs (/sys/devices/system/cpu/online) the first time a thread needs an arena of its own, with every signal blocked; it falls back to sched_getaffinity"},
	}
}
