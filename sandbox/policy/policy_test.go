//go:build linux && amd64

package policy

import (
	"encoding/binary"
	"strings"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/kvm"
)

const (
	testPID         = 4242
	auditArchX86_64 = 0xc000003e // include/uapi/linux/audit.h
	auditArchI386   = 0x40000003
	x32Bit          = 0x40000000 // __X32_SYSCALL_BIT
)

// Every rule names a system call the kernel has, says why, and no call
// is listed twice without conditions.
func TestRules(t *testing.T) {
	type key struct {
		name string
		when when
	}
	seen := map[key]bool{}
	for _, r := range rules(testPID) {
		if _, ok := arch.X86_64.SyscallNames[r.name]; !ok {
			t.Errorf("%s: no such x86-64 system call", r.name)
		}
		if len(strings.TrimSpace(r.why)) < 10 {
			t.Errorf("%s: says too little why (%q)", r.name, r.why)
		}
		if r.args == nil {
			if seen[key{r.name, r.when}] {
				t.Errorf("%s: listed twice", r.name)
			}
			seen[key{r.name, r.when}] = true
		}
	}
	for _, r := range rules(testPID) {
		if r.args != nil && seen[key{r.name, r.when}] {
			t.Errorf("%s: both with and without conditions; the unconditional rule makes the others moot", r.name)
		}
	}
	for _, s := range allSets {
		prog, err := Program(s, testPID)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		if len(prog) > unix.BPF_MAXINSNS {
			t.Fatalf("%+v: %d instructions, the kernel takes %d", s, len(prog), unix.BPF_MAXINSNS)
		}
		t.Logf("%+v: %d instructions", s, len(prog))
	}
}

// allSets are every combination of Set.
var allSets = func() (all []Set) {
	for i := 0; i < 16; i++ {
		all = append(all, Set{Scratch: i&1 != 0, Network: i&2 != 0, Files: i&4 != 0, Cgo: i&8 != 0})
	}
	return all
}()

// seccompData is struct seccomp_data (include/uapi/linux/seccomp.h) as the
// filter sees it. x/net/bpf's VM loads words big-endian, the kernel in
// host order; encode puts each 32-bit word where a little-endian kernel
// has it, in the VM's order, as go-seccomp-bpf's own tests do.
type seccompData struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

func (d seccompData) encode() []byte {
	b := make([]byte, 64)
	be := binary.BigEndian
	be.PutUint32(b[0:], d.nr)
	be.PutUint32(b[4:], d.arch)
	for i, a := range d.args {
		off := 16 + 8*i
		be.PutUint32(b[off:], uint32(a))       // low word first on little-endian
		be.PutUint32(b[off+4:], uint32(a>>32)) // then the high word
	}
	return b
}

func nr(t *testing.T, name string) uint32 {
	t.Helper()
	n, ok := arch.X86_64.SyscallNames[name]
	if !ok {
		t.Fatalf("no system call %s", name)
	}
	return uint32(n)
}

// The filter's verdict for calls vmm makes and calls it must not, in a
// vmm built with cgo and without.
func TestFilterVerdicts(t *testing.T) {
	for _, cgo := range []bool{false, true} {
		t.Run(map[bool]string{false: "nocgo", true: "cgo"}[cgo], func(t *testing.T) { testFilterVerdicts(t, cgo) })
	}
}

func testFilterVerdicts(t *testing.T, cgoBuild bool) {
	allow := uint32(seccomp.ActionAllow)
	trap := uint32(seccomp.ActionTrap)
	enosys := uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)
	args := func(a ...uint64) (r [6]uint64) { copy(r[:], a); return r }
	// In a cgo build, glibc's fallbacks need some calls to fail
	// instead (rules.go, failures).
	failsWithCgo := func(errno unix.Errno) uint32 {
		if cgoBuild {
			return uint32(seccomp.ActionErrno) | uint32(errno)
		}
		return trap
	}
	// kvmReq is a KVM ioctl's number as package kvm issues it.
	kvmReq := func(name string) uint64 {
		nr, ok := kvm.Request(name)
		if !ok {
			t.Fatalf("package kvm does not know %s", name)
		}
		return uint64(nr)
	}
	tests := []struct {
		name    string
		call    string
		arch    uint32 // 0: x86-64
		x32     bool
		args    [6]uint64
		scratch bool
		network bool
		files   bool
		want    uint32
	}{
		{name: "KVM_RUN", call: "ioctl", args: args(5, kvmRun), want: allow},
		{name: "KVM_IRQ_LINE", call: "ioctl", args: args(5, kvmIRQLine), want: allow},
		{name: "KVM_SET_GSI_ROUTING", call: "ioctl", args: args(5, kvmSetGSIRouting), want: allow},
		{name: "KVM_IOEVENTFD", call: "ioctl", args: args(5, kvmIOEventFD), want: allow},
		{name: "KVM_GET_REGS", call: "ioctl", args: args(5, kvmGetRegs), want: allow},
		{name: "KVM_GET_SREGS", call: "ioctl", args: args(5, kvmGetSregs), want: allow},
		{name: "KVM_GET_MP_STATE", call: "ioctl", args: args(5, kvmGetMPState), want: allow},
		{name: "KVM_SET_MP_STATE", call: "ioctl", args: args(5, kvmReq("KVM_SET_MP_STATE")), want: trap},
		{name: "TUNSETOFFLOAD", call: "ioctl", args: args(7, unix.TUNSETOFFLOAD), want: allow},
		{name: "TCSETS", call: "ioctl", args: args(0, unix.TCSETS), want: allow},
		{name: "TCGETS", call: "ioctl", args: args(0, unix.TCGETS), want: allow},
		{name: "TIOCGPGRP", call: "ioctl", args: args(0, unix.TIOCGPGRP), want: allow},
		{name: "TIOCSPGRP", call: "ioctl", args: args(0, unix.TIOCSPGRP), want: trap},
		{name: "KVM_RUN in the high word", call: "ioctl", args: args(5, 1<<32|kvmRun), want: trap},
		{name: "KVM_CREATE_VM", call: "ioctl", args: args(3, kvmReq("KVM_CREATE_VM")), want: trap},
		{name: "KVM_SET_USER_MEMORY_REGION", call: "ioctl", args: args(4, kvmReq("KVM_SET_USER_MEMORY_REGION")), want: trap},
		{name: "TIOCSTI", call: "ioctl", args: args(0, unix.TIOCSTI), want: trap},
		{name: "TUNSETIFF", call: "ioctl", args: args(7, unix.TUNSETIFF), want: trap},
		{name: "Go thread", call: "clone", args: args(goCloneFlags), want: allow},
		{name: "fork", call: "clone", args: args(uint64(unix.SIGCHLD)), want: trap},
		{name: "thread in a new user namespace", call: "clone", args: args(goCloneFlags | unix.CLONE_NEWUSER), want: trap},
		{name: "clone3", call: "clone3", want: failsWithCgo(unix.ENOSYS)},
		{name: "heap", call: "mmap", args: args(0, 1<<20, unix.PROT_READ|unix.PROT_WRITE), want: allow},
		{name: "reservation", call: "mmap", args: args(0, 1<<20, unix.PROT_NONE), want: allow},
		{name: "executable", call: "mmap", args: args(0, 4096, unix.PROT_READ|unix.PROT_EXEC), want: trap},
		{name: "mprotect", call: "mprotect", args: args(0, 4096, unix.PROT_EXEC), want: trap},
		{name: "PR_SET_VMA", call: "prctl", args: args(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME), want: allow},
		{name: "PR_SET_NO_NEW_PRIVS", call: "prctl", args: args(unix.PR_SET_NO_NEW_PRIVS, 1), want: trap},
		{name: "SIGINT handler", call: "rt_sigaction", args: args(uint64(unix.SIGINT)), want: allow},
		{name: "SIGSYS handler", call: "rt_sigaction", args: args(uint64(unix.SIGSYS)), want: trap},
		{name: "SIGSYS in disguise", call: "rt_sigaction", args: args(1<<32 | uint64(unix.SIGSYS)), want: trap},
		{name: "SIGRTMAX", call: "rt_sigaction", args: args(64), want: allow},
		{name: "seccomp", call: "seccomp", want: trap},
		{name: "SIGURG to a thread of vmm", call: "tgkill", args: args(testPID, 77, uint64(unix.SIGURG)), want: allow},
		{name: "signal to another process's thread", call: "tgkill", args: args(1, 1, uint64(unix.SIGKILL)), want: trap},
		{name: "raise", call: "kill", args: args(testPID, uint64(unix.SIGABRT)), want: allow},
		{name: "kill another process", call: "kill", args: args(1, uint64(unix.SIGKILL)), want: trap},
		{name: "futex", call: "futex", want: allow},
		{name: "preadv", call: "preadv", want: allow},
		{name: "exit_group", call: "exit_group", want: allow},
		{name: "openat", call: "openat", want: failsWithCgo(unix.EACCES)},
		{name: "open", call: "open", want: trap},
		{name: "unlinkat with a scratch disk", call: "unlinkat", scratch: true, want: allow},
		{name: "unlinkat without", call: "unlinkat", want: trap},
		{name: "openat with a scratch disk", call: "openat", scratch: true, want: failsWithCgo(unix.EACCES)},
		{name: "mkdirat with a scratch disk", call: "mkdirat", scratch: true, want: trap},
		{name: "symlinkat with a scratch disk", call: "symlinkat", scratch: true, want: trap},
		{name: "execve", call: "execve", scratch: true, network: true, want: trap},
		{name: "IPv4 socket for -nic user", call: "socket", network: true, args: args(unix.AF_INET, unix.SOCK_STREAM), want: allow},
		{name: "IPv6 socket for -nic user", call: "socket", network: true, args: args(unix.AF_INET6, unix.SOCK_DGRAM), want: allow},
		{name: "netlink socket", call: "socket", network: true, args: args(unix.AF_NETLINK, unix.SOCK_RAW), want: trap},
		{name: "unix socket", call: "socket", network: true, args: args(unix.AF_UNIX, unix.SOCK_STREAM), want: trap},
		{name: "resolv.conf for -nic user", call: "openat", network: true, args: args(uint64(1<<32-100), 0, unix.O_RDONLY|unix.O_CLOEXEC), want: allow},
		{name: "write a file with -nic user", call: "openat", network: true, args: args(uint64(1<<32-100), 0, unix.O_WRONLY|unix.O_CREAT), want: trap},
		{name: "a directory with -nic user", call: "openat", network: true, args: args(uint64(1<<32-100), 0, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC), want: allow},
		{name: "O_TMPFILE with -nic user", call: "openat", network: true, args: args(uint64(1<<32-100), 0, unix.O_TMPFILE|unix.O_RDWR), want: trap},
		{name: "__O_TMPFILE alone with -nic user", call: "openat", network: true, args: args(uint64(1<<32-100), 0, unix.O_TMPFILE&^unix.O_DIRECTORY), want: trap},
		{name: "write a file with -nic user and a scratch disk", call: "openat", network: true, scratch: true, args: args(0, 0, unix.O_WRONLY|unix.O_CREAT), want: trap},
		{name: "connect for -nic user", call: "connect", network: true, want: allow},
		{name: "connect without", call: "connect", want: trap},
		{name: "rename in a share", call: "renameat2", files: true, want: allow},
		{name: "rename without a share", call: "renameat2", scratch: true, want: trap},
		{name: "open in a share", call: "openat", files: true, args: args(0, 0, unix.O_RDWR|unix.O_CREAT), want: allow},
		{name: "socket with a share", call: "socket", files: true, args: args(unix.AF_INET), want: trap},
		{name: "execve with everything", call: "execve", files: true, network: true, scratch: true, want: trap},
		{name: "socket", call: "socket", want: trap},
		{name: "connect", call: "connect", scratch: true, want: trap},
		{name: "ptrace", call: "ptrace", want: trap},
		{name: "unshare", call: "unshare", want: trap},
		{name: "getppid", call: "getppid", want: trap},
		{name: "32-bit ABI", call: "getpid", arch: auditArchI386, want: trap},
		{name: "x32 ABI", call: "getpid", x32: true, want: enosys},
	}
	vms := map[Set]*bpf.VM{}
	for _, s := range allSets {
		if s.Cgo != cgoBuild {
			continue
		}
		raw, err := Program(s, testPID)
		if err != nil {
			t.Fatal(err)
		}
		insts, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatalf("%+v: the program does not disassemble", s)
		}
		if vms[s], err = bpf.NewVM(insts); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := seccompData{nr: nr(t, tt.call), arch: tt.arch, args: tt.args}
			if d.arch == 0 {
				d.arch = auditArchX86_64
			}
			if tt.x32 {
				d.nr |= x32Bit
			}
			got, err := vms[Set{Scratch: tt.scratch, Network: tt.network, Files: tt.files, Cgo: cgoBuild}].Run(d.encode())
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tt.want {
				t.Errorf("%s%v: verdict %#x, want %#x", tt.call, tt.args, got, tt.want)
			}
		})
	}
}

// The KVM ioctls the rules name are the numbers package kvm issues: the
// constants here are written out for review, and a wrong one would
// show only as SIGSYS on the ioctl in a running vmm.
func TestKVMRequests(t *testing.T) {
	for _, tt := range []struct {
		name string
		nr   uintptr
	}{
		{"KVM_RUN", kvmRun},
		{"KVM_IRQ_LINE", kvmIRQLine},
		{"KVM_GET_REGS", kvmGetRegs},
		{"KVM_GET_SREGS", kvmGetSregs},
		{"KVM_GET_MP_STATE", kvmGetMPState},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting},
		{"KVM_IOEVENTFD", kvmIOEventFD},
	} {
		want, ok := kvm.Request(tt.name)
		if !ok || tt.nr != want {
			t.Errorf("%s: the rules have %#x, package kvm %#x (known %v)", tt.name, tt.nr, want, ok)
		}
	}
}
