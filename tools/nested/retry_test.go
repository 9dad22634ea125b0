package nested

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// What L1's kernel log held in the runs where the emulator crashed the
// L2 guest (tools/e2e's hostile test, 3 of 10 runs): the same lines as
// in the runs that passed.
const klogQuiet = `[   12.624664] kvm: SMP vm created on host with unstable TSC; guest TSC will not be reliable
[   19.221610] kvm [104]: vcpu0, guest rIP: 0xffffffffb2c73744 Unhandled WRMSR(0xc0010007) = 0xffff
[   42.846583] hrtimer: interrupt took 10630000 ns
`

const (
	klogRCU      = klogQuiet + "[  301.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"
	klogLockup   = klogQuiet + "[  288.991618] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [vmm:100]\n"
	klogKVMWarn  = klogQuiet + "[   77.100000] WARNING: CPU: 0 PID: 104 at arch/x86/kvm/svm/svm.c:3612 svm_complete_interrupts+0x1/0x2 [kvm_amd]\n"
	klogUnexpect = klogQuiet + "[   77.100000] kvm [104]: vcpu0, guest rIP: 0x1000 svm: unexpected exit reason 0x4ff\n"
	// L1 dying as it did in one of 16 hostile runs (cut): an interrupt
	// right after VMRUN returned, with the guest's GS base still loaded.
	klogWorldSwitch = klogQuiet + `[   22.324822] BUG: TASK stack guard page was hit at 00000000630659e3 (stack is 000000003581dea9..00000000c3775a7d)
[   22.325515] stack guard page: 0000 [#1] PREEMPT SMP NOPTI
[   22.325515] RIP: 0010:error_entry+0x10/0x130
[   22.325515]  asm_exc_page_fault+0x22/0x30
[   22.325515] RIP: 0010:irqentry_enter+0x9/0x50
[   22.325515]  sysvec_reschedule_ipi+0xa/0x110
[   22.325515]  asm_sysvec_reschedule_ipi+0x16/0x20
[   22.325515] RIP: 0010:__svm_vcpu_run+0x9c/0x210 [kvm_amd]
[   22.325515]  svm_vcpu_enter_exit+0x28/0x60 [kvm_amd]
[   22.325515]  svm_vcpu_run+0x1b8/0x6c0 [kvm_amd]
[   22.325515]  kvm_arch_vcpu_ioctl_run+0x8be/0x1750 [kvm]
[   22.325515] Kernel panic - not syncing: Fatal exception in interrupt
`
	// An oops anywhere else is no sign of the emulator.
	klogOtherOops = klogQuiet + `[   40.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[   40.000000] RIP: 0010:ext4_fill_super+0x10/0x200 [ext4]
[   40.000000]  svm_vcpu_run+0x1b8/0x6c0 [kvm_amd]
[   40.000000] Kernel panic - not syncing: Fatal exception
`
	// The emulator's triple fault as L1's kernel prints it (tp_printk):
	// a page fault on fetching kernel text at the RIP after a wrmsr.
	shutdownFetch = "[   18.081169] kvm_exit: vcpu 0 reason shutdown rip 0xffffffff8d673916 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000b0e error_code 0x00000010"
	klogShutdown  = klogQuiet + shutdownFetch + "\n"
	// The e2e crasher's triple fault: ud2 at its entry with no IDT.
	klogCrasher = klogQuiet + "[   30.000000] kvm_exit: vcpu 0 reason shutdown rip 0x0000000001000200 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000306 error_code 0x00000000\n"
	// The agent logs job arguments; they are not the kernel's word.
	klogAgentOnly = klogQuiet + "l1init: 17:00:00.000000 job 3: started [\"/bin/x\" \"rcu: INFO: rcu_preempt detected stalls on CPUs/tasks\"] pid 9\n"

	tripleFault = "vmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN) (registers lost: KVM resets the vCPU before reporting this on AMD)\n"

	// syscallDF is how an e2e test's error quoted the job's stderr when
	// the emulator delivered an interrupt on SYSCALL's boundary (CI,
	// 2026-12-07): syscallDFAt fills in RIP, RSP and EFLAGS.
	syscallDF = `vmm run -- seq 1 150000 | digest: status 125 in 11.0s; stderr "..."
        --- stderr (tail) ---
        [    9.495708] traps: PANIC: double fault, error_code: 0x0
        [    9.495708] double fault: 0000 [#1] PREEMPT SMP NOPTI
        [    9.495708] CPU: 0 PID: 89 Comm: seq Tainted: G        W          6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
        [    9.495708] RIP: 0010:%s
        [    9.495708] Code: cc cc cc cc <0f> 01 f8 65 48 89 24 25 14 60 00 00 eb 12 0f 20 dc 0f 1f 44 00 00
        [    9.495708] RSP: 0018:%s EFLAGS: %s
        [    9.495708] RAX: 0000000000000001 RBX: 0000000000000001 RCX: 000000000040d4ee
`
	goPanic = "panic: runtime error: index out of range\n\ngoroutine 7 [running]:\n"
)

var errL1Died = fmt.Errorf("nested: exec [\"/bin/redirect\"]: %w: QEMU exited; QEMU output: ", ErrL1Exited)

var errCrash = fmt.Errorf("%w (vmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN)): vmm run exited with status 1", ErrGuestCrashed)

// errHeld is what Job.waitFor returns when HeldCPUs found a CPU held.
var errHeld = fmt.Errorf("nested: expecting \"cpuinfo-done\": timed out after 1m0s; %w: CPU 1 took no timer tick in 2s, its NMI backtrace in KVM_RUN", ErrCPUHeld)

// What sysrq l printed in a looped TestSMPAndMemory that timed out (cut):
// CPU 0 ran the agent's write, CPU 1 was inside its guest.
const klogSysrqHeld = `[   66.748464] sysrq: Show backtrace of all active CPUs
[   66.749013] NMI backtrace for cpu 0
[   66.749280] CPU: 0 PID: 93 Comm: init Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
[   66.752816] Call Trace:
[   66.752816]  <TASK>
[   66.752816]  nmi_cpu_backtrace.cold+0x32/0x79
[   66.752816]  write_sysrq_trigger+0x24/0x40
[   66.752816]  </TASK>
[   66.761204] Sending NMI from CPU 0 to CPUs 1:
[   66.712866] NMI backtrace for cpu 1
[   66.712866] CPU: 1 PID: 103 Comm: vmm Not tainted 6.1.0-56-cloud-amd64 #1  Debian 6.1.192-2
[   66.712866] RIP: 0010:svm_vcpu_run+0x242/0x6c0 [kvm_amd]
[   66.712866] Call Trace:
[   66.712866]  <TASK>
[   66.712866]  kvm_arch_vcpu_ioctl_run+0x8be/0x1750 [kvm]
[   66.712866]  kvm_vcpu_ioctl+0x25e/0x720 [kvm]
[   66.712866]  ? kvm_vm_ioctl+0x2dc/0x1010 [kvm]
[   66.712866]  __x64_sys_ioctl+0x8d/0xd0
[   66.712866]  </TASK>
[   66.795321] sysrq: Show Blocked State
`

// klogSysrqIdleBlocked: CPU 1 idle, and sysrq w's saved stack of a vmm
// thread in KVM_RUN, which is no CPU's live frame.
const klogSysrqIdleBlocked = `[   66.748464] sysrq: Show backtrace of all active CPUs
[   66.749013] NMI backtrace for cpu 0
[   66.752816]  write_sysrq_trigger+0x24/0x40
[   66.761204] Sending NMI from CPU 0 to CPUs 1:
[   66.762000] NMI backtrace for cpu 1 skipped: idling at native_safe_halt+0xb/0x10
[   66.795321] sysrq: Show Blocked State
[   66.795400] task:vmm             state:D stack:0     pid:103   ppid:1      flags:0x00004002
[   66.795500] Call Trace:
[   66.795600]  kvm_arch_vcpu_ioctl_run+0x8be/0x1750 [kvm]
[   66.795700]  kvm_vcpu_ioctl+0x25e/0x720 [kvm]
`

// TestHeldCPUs: a CPU counts as held only if its counters stood still
// while another's advanced and its NMI backtrace runs through KVM_RUN.
func TestHeldCPUs(t *testing.T) {
	const (
		moved   = "cpu  10 0 20 900 0 0 0 0 5 0\ncpu0 5 0 10 450 0 0 0 0 0 0\ncpu1 5 0 10 450 0 0 0 0 5 0\n"
		cpu1Sat = "cpu  30 0 20 950 0 0 0 0 5 0\ncpu0 25 0 10 500 0 0 0 0 0 0\ncpu1 5 0 10 450 0 0 0 0 5 0\n"
		both    = "cpu  30 0 20 950 0 0 0 0 25 0\ncpu0 25 0 10 500 0 0 0 0 0 0\ncpu1 5 0 10 450 0 0 0 0 25 0\n"
	)
	sep := proto.CPUTimesSep
	tests := []struct {
		name, times, klog string
		want              string
	}{
		{"cpu1 still, in KVM_RUN", moved + sep + cpu1Sat, klogSysrqHeld, "1"},
		{"cpu1 ticking, in KVM_RUN", moved + sep + both, klogSysrqHeld, ""},
		{"cpu1 still, no backtrace", moved + sep + cpu1Sat, klogQuiet, ""},
		{"all still: the watchdog's", moved + sep + moved, klogSysrqHeld, ""},
		{"one reading", moved, klogSysrqHeld, ""},
		{"cpu1 still, log lines end in CR LF", moved + sep + cpu1Sat, strings.ReplaceAll(klogSysrqHeld, "\n", "\r\n"), "1"},
		{"cpu1 idle, a blocked task's stack in KVM_RUN", moved + sep + cpu1Sat, klogSysrqIdleBlocked, ""},
		{"cpu0 still, not in KVM_RUN", "cpu0 1 2\ncpu1 3 4\n" + sep + "cpu0 1 2\ncpu1 3 5\n", klogSysrqHeld, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(HeldCPUs(tt.times, tt.klog), ","); got != tt.want {
				t.Errorf("HeldCPUs = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	boom := errors.New("expecting \"ready\": timed out")
	tests := []struct {
		name   string
		err    error
		ev     Evidence
		cause  Cause
		reason string // substring of Verdict.Reason
		errHas string // substring of Verdict.Err
	}{
		{"success", nil, Evidence{}, NotRetried, "", ""},
		{"other error", boom, Evidence{KernelLog: klogRCU}, NotRetried, "", "timed out"},
		{"frozen L1", fmt.Errorf("nested: exec: %w: silent for 30s", ErrFrozen), Evidence{}, CauseFrozen, "L1 froze", "silent for 30s"},
		{"L1 died in the world switch", errL1Died, Evidence{KernelLog: klogWorldSwitch}, CauseL1Crashed, "BUG: TASK stack guard page was hit at 00000000630659e3 (stack is 000000003581dea9..00000000c3775a7d) at __svm_vcpu_run+0x9c/0x210 [kvm_amd]", ""},
		{"L1 died elsewhere", errL1Died, Evidence{KernelLog: klogOtherOops}, NotRetried, "", "QEMU exited"},
		{"L1 exited quietly", errL1Died, Evidence{KernelLog: klogQuiet}, NotRetried, "", "QEMU exited"},
		{"crash, L1 quiet", errCrash, Evidence{KernelLog: klogQuiet}, NotRetried, "", "L1's kernel log shows no sign of the emulator"},
		{"crash, only the agent quotes a stall", errCrash, Evidence{KernelLog: klogAgentOnly}, NotRetried, "", "no sign of the emulator"},
		{"crash, L1 saw a kernel-text fetch fault", errCrash, Evidence{KernelLog: klogShutdown}, CauseGuestCrash, "reason shutdown rip 0xffffffff8d673916", ""},
		{"crash, L1 saw the crasher's shutdown", errCrash, Evidence{KernelLog: klogCrasher}, NotRetried, "", "no sign of the emulator"},
		{"crash, L1 RCU stall", errCrash, Evidence{KernelLog: klogRCU}, CauseGuestCrash, "rcu: INFO: rcu_preempt detected stalls", ""},
		{"crash, L1 soft lockup", errCrash, Evidence{KernelLog: klogLockup}, CauseGuestCrash, "soft lockup - CPU#1 stuck for 22s!", ""},
		{"crash, L1 KVM warning", errCrash, Evidence{KernelLog: klogKVMWarn}, CauseGuestCrash, "at arch/x86/kvm/svm/svm.c:3612", ""},
		{"crash, L1 KVM unexpected exit", errCrash, Evidence{KernelLog: klogUnexpect}, CauseGuestCrash, "unexpected exit reason 0x4ff", ""},
		{"console crash, L1 stall", boom, Evidence{Console: "Linux version\n" + tripleFault, KernelLog: klogRCU}, CauseGuestCrash, "guest triple fault (KVM_EXIT_SHUTDOWN) (job console)", ""},
		{"console crash, L1 quiet", boom, Evidence{Console: tripleFault, KernelLog: klogQuiet}, NotRetried, "", "no sign of the emulator"},
		{"console crash, vmm panicked", boom, Evidence{Console: tripleFault + goPanic, KernelLog: klogRCU}, NotRetried, "", "timed out"},
		{"wrapped crash, vmm panicked", errCrash, Evidence{Console: goPanic, KernelLog: klogRCU}, NotRetried, "", "vmm crashed"},
		{"L1 stall, no L2 symptom", boom, Evidence{Console: "hello\n", KernelLog: klogRCU}, NotRetried, "", "timed out"},
		{"L1 CPU held", errHeld, Evidence{Console: "cpu MHz\t\t: 2245.770\n", KernelLog: klogQuiet}, CauseGuestCrash, "an L1 CPU held inside its guest (CPU 1 took no timer tick in 2s, its NMI backtrace in KVM_RUN)", ""},
		{"L1 CPU held, vmm panicked", errHeld, Evidence{Console: goPanic, KernelLog: klogQuiet}, NotRetried, "", "vmm crashed"},
		{"double fault at the SYSCALL entry", syscallDFAt("entry_SYSCALL_64+0x0/0x29", "00003f8a41eac9f0", "00000002"), Evidence{KernelLog: klogQuiet}, CauseGuestCrash, "L2 double fault at RIP: 0010:entry_SYSCALL_64+0x0/0x29 on its user stack with IF clear", ""},
		{"double fault at the SYSCALL entry, IF set", syscallDFAt("entry_SYSCALL_64+0x0/0x29", "00003f8a41eac9f0", "00000202"), Evidence{KernelLog: klogQuiet}, NotRetried, "", "seq"},
		{"double fault at the SYSCALL entry, kernel stack", syscallDFAt("entry_SYSCALL_64+0x0/0x29", "ffffb4e4ceabeb80", "00000002"), Evidence{KernelLog: klogQuiet}, NotRetried, "", "seq"},
		{"double fault elsewhere", syscallDFAt("asm_exc_page_fault+0x4/0x30", "00003f8a41eac9f0", "00000002"), Evidence{KernelLog: klogQuiet}, NotRetried, "", "seq"},
		{"double fault at the SYSCALL entry, vmm panicked", fmt.Errorf("%w%s", syscallDFAt("entry_SYSCALL_64+0x0/0x29", "00003f8a41eac9f0", "00000002"), goPanic), Evidence{KernelLog: klogQuiet}, NotRetried, "", "seq"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ev.Booted = true
			v := Judge(tt.err, tt.ev)
			if v.Cause != tt.cause {
				t.Errorf("cause %v, want %v (reason %q, err %v)", v.Cause, tt.cause, v.Reason, v.Err)
			}
			if !strings.Contains(v.Reason, tt.reason) {
				t.Errorf("reason %q lacks %q", v.Reason, tt.reason)
			}
			if tt.err != nil && !errors.Is(v.Err, tt.err) {
				t.Errorf("verdict error %v does not wrap %v", v.Err, tt.err)
			}
			if tt.errHas != "" && (v.Err == nil || !strings.Contains(v.Err.Error(), tt.errHas)) {
				t.Errorf("verdict error %v lacks %q", v.Err, tt.errHas)
			}
			if v.Cause == CauseGuestCrash && !errors.Is(v.Err, ErrGuestCrashed) {
				t.Errorf("retried crash %v is not ErrGuestCrashed", v.Err)
			}
		})
	}
}

func TestL1Signature(t *testing.T) {
	for _, tt := range []struct{ klog, want string }{
		{klogQuiet, ""},
		{"", ""},
		{klogAgentOnly, ""},
		{klogRCU, "[  301.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks"},
		{"[    5.1] rcu: INFO: rcu_sched self-detected stall on CPU\n", "[    5.1] rcu: INFO: rcu_sched self-detected stall on CPU"},
		{klogLockup, "[  288.991618] watchdog: BUG: soft lockup - CPU#1 stuck for 22s!"},
		{klogWorldSwitch, "[   22.324822] BUG: TASK stack guard page was hit at 00000000630659e3 (stack is 000000003581dea9..00000000c3775a7d) at __svm_vcpu_run+0x9c/0x210 [kvm_amd]"},
		{klogOtherOops, ""},
		{klogShutdown, shutdownFetch},
		{klogCrasher, ""},
		// Not a fetch (a read), a user-mode fetch, outside kernel text
		// (a module), another vector (#GP), no error code, not valid.
		{strings.Replace(shutdownFetch, "error_code 0x00000010", "error_code 0x00000000", 1), ""},
		{strings.Replace(shutdownFetch, "error_code 0x00000010", "error_code 0x00000014", 1), ""},
		{strings.Replace(shutdownFetch, "rip 0xffffffff8d673916", "rip 0xffffffffc0a01000", 1), ""},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x80000b0d", 1), ""},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x8000030e", 1), ""},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x00000b0e", 1), ""},
		// An external interrupt (vector 0x24) or an NMI being delivered,
		// at a user address as in a TAP transfer; software interrupts
		// (type 4) are not.
		{strings.Replace(shutdownFetch, "rip 0xffffffff8d673916 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000b0e error_code 0x00000010", "rip 0x4644fe info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000024 error_code 0x00000000", 1),
			strings.Replace(shutdownFetch, "rip 0xffffffff8d673916 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000b0e error_code 0x00000010", "rip 0x4644fe info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000024 error_code 0x00000000", 1)},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x80000202", 1), strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x80000202", 1)},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x80000480", 1), ""},
		{strings.Replace(shutdownFetch, "intr_info 0x80000b0e", "intr_info 0x00000024", 1), ""},
		// A protection fault on a fetch is one too; so is one on a later line.
		{strings.Replace(shutdownFetch, "error_code 0x00000010", "error_code 0x00000011", 1), strings.Replace(shutdownFetch, "error_code 0x00000010", "error_code 0x00000011", 1)},
		{klogCrasher + shutdownFetch + "\n", shutdownFetch},
		// The trace file's format (no kernel timestamp) is not L1's log.
		{"             vmm-118     [000] .....    18.081169: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff8d673916 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x80000b0e error_code 0x00000010\n", ""},
		// An L2 guest's own stall reaches L1's log only through vmm's
		// output, never as a line of L1's kernel.
		{"vmm: [  301.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks\n", ""},
	} {
		if got := L1Signature(tt.klog); got != tt.want {
			t.Errorf("L1Signature(%q) = %q, want %q", tt.klog, got, tt.want)
		}
	}
}

// klogVCPUStall is how L1's kernel reported its CPU held inside the L2
// guest in CI's TestRunPipedStdin/smp2 (cut): the RCU stall, then the
// NMI backtrace of the stalled CPU, in KVM_RUN of vmm's vCPU thread.
const klogVCPUStall = klogQuiet + `[  306.120001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[  306.120001] rcu: 	1-...!: (1 GPs behind) idle=c4c/1/0x4000000000000000 softirq=9093/9094 fqs=0
[  306.120001] Sending NMI from CPU 0 to CPUs 1:
[  327.323391] NMI backtrace for cpu 1
[  327.323391] RIP: 0010:svm_vcpu_run+0x2c6/0x6c0 [kvm_amd]
[  327.323391] Call Trace:
[  327.323391]  <TASK>
[  327.323391]  ? nmi_cpu_backtrace+0x9e/0x110
[  327.323391]  kvm_arch_vcpu_ioctl_run+0xdb7/0x1750 [kvm]
[  327.323391]  kvm_vcpu_ioctl+0x297/0x6d0 [kvm]
[  327.323391]  __x64_sys_ioctl+0x8d/0xd0
[  327.323391]  do_syscall_64+0x55/0xb0
[  327.323391]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[  327.323391] RIP: 0033:0x40a9ce
[  327.323391] RSP: 002b:000029d29d4ccb90 EFLAGS: 00000212 ORIG_RAX: 0000000000000010
[  327.323391]  </TASK>
`

func TestVCPUStall(t *testing.T) {
	stall := "[  306.120001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"
	nmi := "[  306.120001] NMI backtrace for cpu 1"
	lockup := "[  288.991618] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [vmm:100]"
	frame := "[  288.991618]  kvm_arch_vcpu_ioctl_run+0xdb7/0x1750 [kvm]"
	task := "[  306.120001] task:vmm             state:R  running task     stack:0     pid:100   ppid:1      flags:0x00004002"
	// filler(n) is n lines of another frame.
	filler := func(n int) string { return strings.Repeat("[  288.991618]  ext4_file_write_iter+0x1/0x2\n", n) }
	for _, tt := range []struct{ name, klog, want string }{
		{"stall, a CPU's backtrace in KVM_RUN", klogVCPUStall, stall},
		{"soft lockup in KVM_RUN", klogQuiet + lockup + "\n" + frame + "\n", lockup},
		{"no stall", klogQuiet + nmi + "\n" + frame + "\n", ""},
		{"stall elsewhere", klogRCU + nmi + "\n" + filler(3), ""},
		{"stall, no CPU's backtrace", klogRCU + frame + "\n", ""},
		{"a blocking task's saved stack, not a CPU's", klogRCU + task + "\n" + frame + "\n", ""},
		{"a CPU's backtrace, then a task's", klogRCU + nmi + "\n" + filler(2) + task + "\n" + frame + "\n", ""},
		{"a task's, then a CPU's", klogRCU + task + "\n" + filler(2) + nmi + "\n" + frame + "\n", "[  301.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"},
		{"frame only guessed", klogRCU + nmi + "\n" + strings.Replace(frame, "  kvm_", "  ? kvm_", 1) + "\n", ""},
		{"frame before the stall", klogQuiet + nmi + "\n" + frame + "\n" + stall + "\n", ""},
		{"frame in the next report", klogRCU + lockup + "\n" + frame + "\n", lockup},
		{"the next report is not this one's", klogRCU + nmi + "\n" + stall + "\n" + frame + "\n", ""},
		{"frame on the report's last line", klogRCU + nmi + "\n" + filler(stallReportLines-2) + frame + "\n", "[  301.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"},
		{"frame past the report's bound", klogRCU + nmi + "\n" + filler(stallReportLines-1) + frame + "\n", ""},
		{"an L2 stall quoted by vmm", "vmm: " + stall + "\n" + nmi + "\n" + frame + "\n", ""},
		{"a sysrq report after a stall elsewhere", klogRCU + nmi + "\n" + filler(3) + klogSysrqHeld, ""},
		{"a stall, its frame, then a sysrq report", klogRCU + nmi + "\n" + frame + "\n" + klogSysrqHeld, "[  301.000001] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:"},
	} {
		if got := VCPUStall(tt.klog); got != tt.want {
			t.Errorf("%s: VCPUStall = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// outcome is one fake attempt for retryLoop.
type outcome struct {
	ev  Evidence
	err error
}

var (
	okRun        = outcome{Evidence{Booted: true}, nil}
	frozen       = outcome{Evidence{Booted: true}, fmt.Errorf("nested: run: %w: silent for 30s", ErrFrozen)}
	l1Died       = outcome{Evidence{Booted: true, KernelLog: klogWorldSwitch}, errL1Died}
	crashL1Stall = outcome{Evidence{Booted: true, KernelLog: klogRCU}, errCrash}
	crashL1Quiet = outcome{Evidence{Booted: true, KernelLog: klogQuiet}, errCrash}
	bootFailed   = outcome{Evidence{}, errors.New("nested: L1 died while booting: exit status 1")}
	bootStopped  = outcome{Evidence{}, fmt.Errorf("nested: %w within 2m0s", ErrNotReady)}
	testFailed   = outcome{Evidence{Booted: true, KernelLog: klogRCU}, errors.New("vmm printed the wrong thing")}
)

func TestRetryLoop(t *testing.T) {
	tests := []struct {
		name     string
		retries  int       // Config.GuestCrashRetries
		budget   int       // suite budget; -1: no ledger
		preset   int       // ledger lines before the test
		runs     []outcome // one per attempt
		attempts int
		want     error // nil: success
		wantHas  string
	}{
		{"success", 0, -1, 0, []outcome{okRun}, 1, nil, ""},
		{"test failure", 0, -1, 0, []outcome{testFailed}, 1, testFailed.err, ""},
		{"boot failure", 0, -1, 0, []outcome{bootFailed}, 1, bootFailed.err, ""},
		{"boot stopped then success", 0, -1, 0, []outcome{bootStopped, okRun}, 2, nil, ""},
		{"boot stopped twice", 0, -1, 0, []outcome{bootStopped, bootStopped}, 2, ErrNotReady, "failed 2 times"},
		{"boot stopped after a freeze", 0, -1, 0, []outcome{frozen, bootStopped}, 2, ErrNotReady, "failed 2 times"},
		{"freeze then success", 0, -1, 0, []outcome{frozen, okRun}, 2, nil, ""},
		{"two freezes", 0, -1, 0, []outcome{frozen, frozen}, 2, ErrFrozen, "failed 2 times"},
		{"L1 died then success", 0, -1, 0, []outcome{l1Died, okRun}, 2, nil, ""},
		{"freeze then L1 died", 0, -1, 0, []outcome{frozen, l1Died}, 2, ErrL1Exited, "failed 2 times"},
		{"crash with L1 evidence then success", 0, -1, 0, []outcome{crashL1Stall, okRun}, 2, nil, ""},
		{"crash without L1 evidence", 0, -1, 0, []outcome{crashL1Quiet}, 1, ErrGuestCrashed, "no sign of the emulator"},
		{"crash limit per call", 0, -1, 0, []outcome{crashL1Stall, crashL1Stall, crashL1Stall}, 3, ErrGuestCrashed, "2 emulator guest crashes"},
		{"one crash retry", 1, -1, 0, []outcome{crashL1Stall, crashL1Stall}, 2, ErrGuestCrashed, "1 emulator guest crashes"},
		{"freeze and crash", 0, -1, 0, []outcome{frozen, crashL1Stall, okRun}, 3, nil, ""},
		{"retry then real failure", 0, -1, 0, []outcome{frozen, testFailed}, 2, testFailed.err, "after retries for: the whole L1 froze"},
		{"suite budget allows", 0, 2, 0, []outcome{frozen, crashL1Stall, okRun}, 3, nil, ""},
		{"suite budget spent", 0, 2, 1, []outcome{frozen, crashL1Stall, okRun}, 2, ErrBudgetSpent, "2 of 2"},
		{"suite budget spent before", 0, 2, 2, []outcome{frozen, okRun}, 1, ErrFrozen, "retry budget is spent"},
		{"no retries allowed", 0, 0, 0, []outcome{frozen, okRun}, 1, ErrBudgetSpent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			c := Config{Log: &log, GuestCrashRetries: tt.retries}
			if tt.budget >= 0 {
				c.Ledger = Ledger{Path: filepath.Join(t.TempDir(), "ledger"), Budget: tt.budget, Owner: "TestFake"}
				for i := range tt.preset {
					if _, err := (Ledger{Path: c.Ledger.Path, Budget: tt.preset, Owner: "TestEarlier"}).Take(time.Now(), fmt.Sprint("earlier ", i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			attempts := 0
			err := retryLoop(c, time.Now, func() (Evidence, error) {
				attempts++
				if attempts > len(tt.runs) {
					return Evidence{Booted: true}, errors.New("too many attempts")
				}
				o := tt.runs[attempts-1]
				return o.ev, o.err
			})
			if attempts != tt.attempts {
				t.Errorf("%d attempts, want %d (log %q)", attempts, tt.attempts, log.String())
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("retryLoop = %v, want %v", err, tt.want)
			}
			if tt.wantHas != "" && (err == nil || !strings.Contains(err.Error(), tt.wantHas)) {
				t.Errorf("retryLoop = %v, want it to say %q", err, tt.wantHas)
			}
			// Every retry is on the log with its reason, and in the ledger.
			retries := strings.Count(log.String(), "nested: RETRY")
			if want := attempts - 1; retries != want {
				t.Errorf("%d retries logged, want %d: %q", retries, want, log.String())
			}
			// Every reason names L1's evidence.
			for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
				if strings.HasPrefix(line, "nested: RETRY") && !strings.Contains(line, "L1 froze") && !strings.Contains(line, "L1's") {
					t.Errorf("retry without its reason: %q", line)
				}
			}
			if tt.budget >= 0 {
				lines, lerr := c.Ledger.Lines()
				if lerr != nil {
					t.Fatal(lerr)
				}
				if len(lines) != tt.preset+retries {
					t.Errorf("ledger has %d lines, want %d earlier + %d: %q", len(lines), tt.preset, retries, lines)
				}
				if len(lines) > tt.budget {
					t.Errorf("ledger over budget: %q", lines)
				}
				for _, l := range lines[tt.preset:] {
					if !strings.Contains(l, "TestFake: ") {
						t.Errorf("ledger line %q lacks the owner", l)
					}
				}
			}
		})
	}
}

// Config.FreezeRetries lets one call retry more than one frozen L1, and
// no more than it says.
func TestRetryLoopFreezeRetries(t *testing.T) {
	for _, tt := range []struct {
		name     string
		runs     []outcome
		attempts int
		want     error
	}{
		{"two freezes then success", []outcome{frozen, frozen, okRun}, 3, nil},
		{"three freezes", []outcome{frozen, frozen, frozen, okRun}, 3, ErrFrozen},
	} {
		t.Run(tt.name, func(t *testing.T) {
			attempts := 0
			err := retryLoop(Config{FreezeRetries: 2}, time.Now, func() (Evidence, error) {
				attempts++
				o := tt.runs[attempts-1]
				return o.ev, o.err
			})
			if attempts != tt.attempts || (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("%d attempts, error %v; want %d, %v", attempts, err, tt.attempts, tt.want)
			}
			if tt.want != nil && !strings.Contains(err.Error(), "failed 3 times") {
				t.Errorf("error %q does not say how many times L1 failed", err)
			}
		})
	}
}

// KernelLogSince reads only what came after the mark, and at most the
// last evidenceLogBytes of it.
func TestKernelLogSince(t *testing.T) {
	p := filepath.Join(t.TempDir(), "klog")
	l := &L1{klogPath: p}
	if err := os.WriteFile(p, []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark := l.KernelLogMark()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("after\n"); err != nil {
		t.Fatal(err)
	}
	if got := l.KernelLogSince(mark); got != "after\n" {
		t.Errorf("KernelLogSince(%d) = %q, want %q", mark, got, "after\n")
	}
	if got := l.KernelLogSince(0); got != "before\nafter\n" {
		t.Errorf("KernelLogSince(0) = %q", got)
	}
	big := strings.Repeat("x", evidenceLogBytes)
	if _, err := f.WriteString(big); err != nil {
		t.Fatal(err)
	}
	if got := l.KernelLogSince(mark); got != big {
		t.Errorf("KernelLogSince after %d more bytes: %d bytes, want the last %d", len(big), len(got), evidenceLogBytes)
	}
}

// syscallDFAt is syscallDF's error with its RIP, RSP and EFLAGS.
func syscallDFAt(rip, rsp, flags string) error {
	return errors.New(fmt.Sprintf(syscallDF, rip, rsp, flags))
}
