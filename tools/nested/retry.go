package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// defaultGuestCrashRetries is Config.GuestCrashRetries when unset. Each
// retry must also pass Judge and, in a suite, the Ledger's budget.
const defaultGuestCrashRetries = 2

// WithL1 runs fn in a fresh L1 and closes it afterwards. If fn fails and
// Judge finds the emulator to blame (L1 froze or died, or an L2 guest the
// emulator killed, with L1's evidence for it), WithL1 says so on c.Log,
// records the retry in c.Ledger and tries again in another fresh L1: at
// most c.FreezeRetries times (once by default) after L1 froze or died
// and c.GuestCrashRetries times after guest crashes per call, and never
// beyond the ledger's budget for the whole suite. Any other error, or one retry too many, is returned.
func WithL1(ctx context.Context, c Config, fn func(l *L1) error) error {
	return retryLoop(c, time.Now, func() (Evidence, error) {
		l, err := Start(ctx, c)
		if err != nil {
			// A boot that fails is reported, not retried (nothing ran
			// yet, and nothing tells the emulator's fault apart),
			// except one that stopped without a word (ErrNotReady):
			// Judge retries that as a freeze.
			return Evidence{}, err
		}
		err = fn(l)
		var ev Evidence
		if err != nil {
			ev = l.evidence()
			// Every failure in L1 ends with its console's and its
			// kernel log's tails, whatever check failed (withTails
			// adds nothing to an error that has them).
			err = l.withTails(err)
		}
		if cerr := l.Close(); err == nil {
			return Evidence{}, cerr
		}
		return ev, err
	})
}

// retryLoop is WithL1 with the attempt abstracted (run boots an L1, runs
// fn in it and returns fn's error with the evidence), so that the bounds
// are tested without booting anything.
func retryLoop(c Config, now func() time.Time, run func() (Evidence, error)) error {
	log := c.Log
	if log == nil {
		log = io.Discard
	}
	crashRetries := c.GuestCrashRetries
	if crashRetries <= 0 {
		crashRetries = defaultGuestCrashRetries
	}
	freezeRetries := c.FreezeRetries
	if freezeRetries <= 0 {
		freezeRetries = 1
	}
	var wholeL1, crashes int // retries after L1 froze or died, after L2 crashes
	var history []string
	for attempt := 1; ; attempt++ {
		ev, err := run()
		if err == nil {
			return nil
		}
		if !ev.Booted && !errors.Is(err, ErrNotReady) {
			return err
		}
		v := Judge(err, ev)
		err = v.Err
		if v.Cause == NotRetried {
			return withHistory(err, history)
		}
		switch {
		case v.Cause != CauseGuestCrash && wholeL1 >= freezeRetries:
			return withHistory(fmt.Errorf("not retried, the whole L1 failed %d times in this test: %w", wholeL1+1, err), history)
		case v.Cause == CauseGuestCrash && crashes >= crashRetries:
			return withHistory(fmt.Errorf("not retried, %d emulator guest crashes in this test already: %w", crashes, err), history)
		}
		earlier, lerr := c.Ledger.Take(now(), v.Reason)
		if lerr != nil {
			if errors.Is(lerr, ErrBudgetSpent) {
				fmt.Fprintf(log, "nested: NOT retrying (%s): %v; earlier retries:\n\t%s\n", v.Reason, lerr, strings.Join(earlier, "\n\t"))
			}
			return withHistory(fmt.Errorf("not retried, %w: %w", lerr, err), history)
		}
		if v.Cause == CauseGuestCrash {
			crashes++
		} else {
			wholeL1++
		}
		history = append(history, v.Reason)
		suite := ""
		if c.Ledger.Path != "" {
			suite = fmt.Sprintf(", suite retry %d of %d", len(earlier)+1, c.Ledger.Budget)
		}
		fmt.Fprintf(log, "nested: RETRY (attempt %d failed%s): %s; running it again in a fresh L1\n", attempt, suite, v.Reason)
	}
}

// withHistory says which retries came before a final failure.
func withHistory(err error, history []string) error {
	if len(history) == 0 {
		return err
	}
	return fmt.Errorf("attempt %d, after retries for: %s: %w", len(history)+1, strings.Join(history, "; "), err)
}

// Cause classifies a failed attempt.
type Cause int

const (
	// NotRetried: the failure is the code under test's, or nothing
	// shows it is the emulator's.
	NotRetried Cause = iota
	// CauseFrozen: the whole L1 stopped (ErrFrozen).
	CauseFrozen
	// CauseL1Crashed: L1's kernel died (ErrL1Exited) showing the
	// emulator's signature (L1Signature).
	CauseL1Crashed
	// CauseGuestCrash: the emulator killed the L2 guest, and L1's own
	// kernel log shows it (see Judge).
	CauseGuestCrash
)

// Evidence is what a failed attempt leaves behind to judge it by.
type Evidence struct {
	Booted    bool   // L1 came up and fn ran; false for a failed Start
	Console   string // the end of L1's job console
	KernelLog string // L1's kernel log (ttyS2) from its boot on, bounded
}

// Verdict is Judge's answer: whether to retry, why, and the error to
// report (the attempt's, with what Judge found added).
type Verdict struct {
	Cause  Cause
	Reason string // one line for the log and the ledger
	Err    error
}

// Judge decides whether a failed attempt is the emulator's fault.
//
// A frozen L1 (ErrFrozen) is: it is the watchdog's finding about L1 as
// a whole, with console and heartbeats silent, which no guest of vmm's
// can cause. So is an L1 that never came up and never said why
// (ErrNotReady: before any vmm ran, the emulator is all there is; a boot
// that fails the same way twice is reported as such), and an L1 that
// died (ErrL1Exited) with L1Signature in its kernel log.
//
// An L2 guest's crash is retried only with three kinds of evidence: the
// L2 symptom (ErrGuestCrashed from fn, or a GuestCrash line on the job
// console), vmm intact (no Go crash anywhere in the console), and L1's
// own kernel log showing the emulator's signature (L1Signature). The L2
// symptom alone is what a vmm bug that corrupts its guest looks like
// too, so it is never enough; the one exception is a symptom that is
// the CPU's word itself, a double fault on SYSCALL's boundary
// (syscallEntryFault, found in the failure's own text), which stands for
// L1's signature. When the symptom is VCPUStall's (an L1 CPU
// held in KVM_RUN), it and the signature are one stall report: L1's
// word, which no guest or vmm can forge. A timed-out wait marked
// ErrCPUHeld (HeldCPUs: a CPU that took no tick for 2 s with its NMI
// backtrace in KVM_RUN) is retried the same way, unless vmm crashed;
// so is a watched Exec run a timeout ended (WatchedExec.TimedOut),
// whose caller has ruled out vmm's crash from the run's own output.
func Judge(err error, ev Evidence) Verdict {
	switch {
	case err == nil:
		return Verdict{Cause: NotRetried}
	case errors.Is(err, ErrFrozen):
		return Verdict{Cause: CauseFrozen, Reason: "the whole L1 froze (" + firstLine(err) + ")", Err: err}
	case errors.Is(err, ErrNotReady):
		return Verdict{Cause: CauseFrozen, Reason: "L1 froze while booting (" + firstLine(err) + ")", Err: err}
	case errors.Is(err, ErrL1Exited):
		if sig := L1Signature(ev.KernelLog); sig != "" {
			return Verdict{Cause: CauseL1Crashed, Reason: fmt.Sprintf("L1's kernel died (%s)", sig), Err: err}
		}
		return Verdict{Cause: NotRetried, Err: err}
	}
	if errors.Is(err, ErrCPUHeld) {
		if GoCrash(ev.Console) {
			return Verdict{Cause: NotRetried, Err: fmt.Errorf("not retried, vmm crashed (a Go runtime crash on the job console): %w", err)}
		}
		_, held, _ := strings.Cut(firstLine(err), ErrCPUHeld.Error()+": ")
		return Verdict{Cause: CauseGuestCrash, Reason: "an L1 CPU held inside its guest (" + held + ")",
			Err: fmt.Errorf("%w (stalled, %s): %w", ErrGuestCrashed, ErrCPUHeld, err)}
	}
	symptom, l2sig := "", ""
	if errors.Is(err, ErrGuestCrashed) {
		symptom = firstLine(err)
	} else if s := GuestCrash(ev.Console); s != "" {
		symptom = s + " (job console)"
	} else if s := syscallEntryFault(err.Error()); s != "" && !GoCrash(err.Error()) {
		symptom, l2sig = s+" (the run's output)", s
	}
	if symptom == "" {
		return Verdict{Cause: NotRetried, Err: err}
	}
	if GoCrash(ev.Console) {
		return Verdict{Cause: NotRetried, Err: fmt.Errorf("not retried, vmm crashed (a Go runtime crash on the job console): %w", err)}
	}
	sig := L1Signature(ev.KernelLog)
	if sig == "" {
		sig = l2sig
	}
	if sig == "" {
		return Verdict{Cause: NotRetried, Err: fmt.Errorf("not retried, the L2 guest died (%s) but L1's kernel log shows no sign of the emulator (see nested.L1Signature), so this may be vmm's: %w", symptom, err)}
	}
	if !errors.Is(err, ErrGuestCrashed) {
		err = fmt.Errorf("%w (%s): %w", ErrGuestCrashed, symptom, err)
	}
	return Verdict{Cause: CauseGuestCrash, Reason: fmt.Sprintf("L2 guest crash (%s) with L1's %q", symptom, sig), Err: err}
}

// syscallEntryRE finds the guest kernel's report of a double fault on
// the first instruction of its SYSCALL entry (entry_SYSCALL_64+0x0), and
// its RSP and EFLAGS lines after it.
var syscallEntryRE = regexp.MustCompile(`(?s)traps: PANIC: double fault.{0,400}?(RIP: 0010:entry_SYSCALL_64\+0x0/0x[0-9a-f]+).{0,200}?RSP: 0018:([0-9a-f]{16}) EFLAGS: ([0-9a-f]{8})`)

// syscallEntryFault returns the RIP line of such a double fault in out,
// where it is the emulator's signature as much as L1's kernel log
// would be, or "". SYSCALL leaves the guest on its user stack with
// interrupts off (Linux's SYSCALL mask clears IF and TF): the RSP in
// user space and IF clear show the fault came on that boundary, before
// the kernel's first instruction. An NMI, #MC or #DB there would take
// their own (IST) stacks; an interrupt may not come at all with IF
// clear; the oops read the code at RIP, the right bytes, through the
// same page tables, so the kernel's text was there to fetch. What is
// left is an interrupt delivered with IF clear, pushing its frame onto
// the user stack, which SMAP refuses: the CPU's doing (the emulator's,
// or L1's KVM injecting through it), never the guest's or vmm's, which
// reaches the guest's interrupts only through KVM. Seen twice on
// 2026-12-07 under the e2e suite's parallel load (seq writing to a
// pipe, fstool's race on a share), never on its own.
func syscallEntryFault(out string) string {
	m := syscallEntryRE.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	rsp, err1 := strconv.ParseUint(m[2], 16, 64)
	flags, err2 := strconv.ParseUint(m[3], 16, 32)
	const userTop = 0x0000800000000000 // the top of x86-64's lower half
	const flagIF = 1 << 9
	if err1 != nil || err2 != nil || rsp >= userTop || flags&flagIF != 0 {
		return ""
	}
	return "L2 double fault at " + m[1] + " on its user stack with IF clear"
}

// guestCrashRE finds the two ways emulated nested SVM kills a guest
// (ErrGuestCrashed): vmm's report of a triple fault, and the guest
// kernel's report of a CPU that stopped taking interrupts.
var guestCrashRE = regexp.MustCompile(`vmm: vCPU \d+: guest triple fault \(KVM_EXIT_SHUTDOWN\)|rcu: INFO: rcu_preempt (detected stalls on CPUs/tasks|self-detected stall on CPU)`)

// goCrashRE finds a Go runtime crash: a panic, a fatal error, or the
// goroutine dump either prints.
var goCrashRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[)`)

// GoCrash reports whether output holds a Go runtime crash.
func GoCrash(output string) bool { return goCrashRE.MatchString(output) }

// GuestCrash returns the line of a vmm run's output (console or stderr)
// that shows the emulator killed its guest, or "" if there is none or if
// vmm itself crashed: a Go crash is never the emulator's.
func GuestCrash(output string) string {
	if GoCrash(output) {
		return ""
	}
	return guestCrashRE.FindString(output)
}

// l1SignatureRE finds L1's own kernel reporting trouble that no program
// in L1, vmm included, can cause: L1's CPUs stalling (the emulator, or a
// starved host, stopped L1 itself, which stops every L2 vCPU with it),
// and L1's KVM catching the emulated CPU in a state it checks never
// happens. What every L2 boot prints (see the tests) is not in it: KVM's
// "Unhandled WRMSR(0xc0010007)" and "SMP vm created on host with
// unstable TSC", the once-per-boot "hrtimer: interrupt took N ns".
//
// Only the kernel's own lines count (they start with its timestamp), not
// the agent's, which quote job arguments.
var l1SignatureRE = regexp.MustCompile(`(?m)^\[ *\d+\.\d+\] (` +
	`rcu: INFO: rcu_(preempt|sched) (detected stalls on CPUs/tasks|self-detected stall on CPU)` +
	`|watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!` +
	`|WARNING: CPU: \d+ PID: \d+ at arch/x86/kvm/\S+` +
	`|kvm.*: .*unexpected exit reason.*` +
	`)`)

// l1OopsRE and l1WorldSwitchRE find L1's kernel crashing (an oops or a
// panic) with KVM's switch to or from its guest on the stack: an
// interrupt taken at __svm_vcpu_run+0x9c, right after VMRUN returned
// and before KVM reloads L1's own GS base, killed L1 through recursive
// page faults in one hostile-guest run. Real hardware takes no interrupt
// there (KVM has them masked: IF clear, and GIF after the #VMEXIT); the
// emulator delivered one. No program in L1 controls where one lands.
var (
	l1OopsRE        = regexp.MustCompile(`(?m)^\[ *\d+\.\d+\] (BUG: .*|Oops: .*|general protection fault.*|Kernel panic - not syncing: .*)$`)
	l1WorldSwitchRE = regexp.MustCompile(`(?m)^\[ *\d+\.\d+\] +(RIP: 0010:)?(__svm_vcpu_run|svm_vcpu_enter_exit)\+0x[0-9a-f]+/0x[0-9a-f]+ \[kvm_amd\]`)
)

// shutdownRE finds a shutdown intercept of L1's KVM as L1's kernel
// prints it (the agent enables the kvm_exit tracepoint for shutdowns and
// L1 boots with tp_printk; see l1init's kvmtrace.go).
var shutdownRE = regexp.MustCompile(`(?m)^\[ *\d+\.\d+\] kvm_exit: vcpu \d+ reason shutdown rip 0x([0-9a-f]+) info1 0x[0-9a-f]+ info2 0x[0-9a-f]+ intr_info 0x([0-9a-f]+) error_code 0x([0-9a-f]+)`)

// Fields of the EXITINTINFO that KVM's tracepoint shows as intr_info
// (AMD64 APM vol. 2, 15.7.2 "Intercepts During IDT Interrupt Delivery",
// in EVENTINJ's layout of 15.20), and of a page fault's error code,
// which it shows as error_code (vol. 2, "#PF—Page-Fault Exception").
const (
	exitIntValid    = 1 << 31
	exitIntErrValid = 1 << 11
	exitIntTypeMask = 7 << 8
	exitIntTypeIntr = 0 << 8
	exitIntTypeNMI  = 2 << 8
	exitIntTypeExc  = 3 << 8
	exitIntVecMask  = 0xff
	vectorPF        = 14
	pfUser          = 1 << 2
	pfFetch         = 1 << 4
	// kernelTextStart and kernelTextEnd bound x86-64 Linux's kernel
	// text mapping (__START_KERNEL_map, then 1 GiB before the modules;
	// Documentation/x86/x86_64/mm.rst in Linux 6.1).
	kernelTextStart = 0xffffffff80000000
	kernelTextEnd   = 0xffffffffc0000000
)

// shutdownSignature returns the first shutdown intercept in klog at
// which the guest shut down delivering a page fault on fetching its own
// kernel text, or "". That is how the emulator kills L2 guests: in a
// hostile-guest run L2 wrote an MSR at native_write_msr, L1's KVM
// emulated it and resumed L2 at the next instruction, and that fetch
// faulted, the fault's delivery faulted, and L2 shut down. Linux's
// kernel text is always mapped, so the page walk itself went wrong;
// vmm reaches it only by writing over the guest's page tables. A guest
// vmm set up wrong crashes before its kernel runs there, and a guest
// that triple-faults on its own (the e2e crasher's ud2 without an IDT)
// shows another vector. A guest that shut down delivering an external
// interrupt or an NMI is the emulator's too (in a TAP transfer, L2 died
// taking vector 0x24 in a user program 30 s into a healthy boot): the
// guest that crashes on its own without an IDT (the e2e crasher) runs
// with interrupts off.
func shutdownSignature(klog string) string {
	for _, m := range shutdownRE.FindAllStringSubmatch(klog, -1) {
		rip, err1 := strconv.ParseUint(m[1], 16, 64)
		info, err2 := strconv.ParseUint(m[2], 16, 32)
		code, err3 := strconv.ParseUint(m[3], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if info&exitIntValid == 0 {
			continue
		}
		if t := info & exitIntTypeMask; t == exitIntTypeIntr || t == exitIntTypeNMI {
			// Delivering an external interrupt or an NMI needs only
			// the IDT, the GDT, the TSS and a kernel stack, which
			// Linux never unmaps while it runs anything.
			return m[0]
		}
		if info&exitIntErrValid == 0 || info&exitIntTypeMask != exitIntTypeExc || info&exitIntVecMask != vectorPF {
			continue
		}
		if code&pfFetch == 0 || code&pfUser != 0 || rip < kernelTextStart || rip >= kernelTextEnd {
			continue
		}
		return m[0]
	}
	return ""
}

// L1Signature returns the line of L1's kernel log that shows the
// emulator (or the host under it) failing L1 itself or killing its
// guest, or "" if there is none.
func L1Signature(klog string) string {
	if s := l1SignatureRE.FindString(klog); s != "" {
		return s
	}
	if s := shutdownSignature(klog); s != "" {
		return s
	}
	if oops := l1OopsRE.FindString(klog); oops != "" {
		if frame := l1WorldSwitchRE.FindString(klog); frame != "" {
			return oops + " at " + strings.TrimPrefix(strings.TrimSpace(frame[strings.Index(frame, "]")+1:]), "RIP: 0010:")
		}
	}
	return ""
}

// stallLineRE is a line of L1's kernel log that starts a stall report:
// an RCU stall or a soft lockup, the kinds l1SignatureRE knows.
var stallLineRE = regexp.MustCompile(`^\[ *\d+\.\d+\] (rcu: INFO: rcu_(preempt|sched) (detected stalls on CPUs/tasks|self-detected stall on CPU)|watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!)`)

// Within a stall report, cpuBacktraceRE starts the live stack of a CPU
// (an RCU stall has the stalled CPUs' sent by NMI; a soft lockup's own
// report is the stuck CPU's), and taskDumpRE a task's saved stack
// (sched_show_task, which an RCU stall prints for the tasks that block
// it): where a task was when it last left a CPU is no sign of what any
// CPU is doing.
var (
	cpuBacktraceRE = regexp.MustCompile(`^\[ *\d+\.\d+\] NMI backtrace for cpu \d+`)
	taskDumpRE     = regexp.MustCompile(`^\[ *\d+\.\d+\] (task:\S+ +state:|Task dump for CPU \d+)`)
)

// kvmRunFrameRE is a reliable frame of KVM_RUN in a backtrace of L1's
// kernel; "? " marks a frame the unwinder only guessed, which may be a
// stale return address left on the stack.
var kvmRunFrameRE = regexp.MustCompile(`^\[ *\d+\.\d+\] +kvm_arch_vcpu_ioctl_run\+0x[0-9a-f]+/0x[0-9a-f]+ \[kvm\]`)

// stallReportLines bounds how far after its first line a stall report's
// backtraces are looked for: an RCU stall on one of two CPUs, with the
// NMI backtrace of each, is about 80 lines.
const stallReportLines = 200

// VCPUStall returns the first line of a stall report in L1's kernel log
// in which a CPU's live backtrace runs through KVM_RUN, or "" if there
// is none. That is an L1 CPU held inside its guest for the stall's 21 s:
// KVM re-checks for a reschedule and for signals at every exit, so only
// a guest that never exits does it, and every interrupt of L1's own (its
// timer tick is one) makes a guest exit. Real hardware delivers them;
// the emulator, now and then, did not. It also explains a vmm that
// missed its own deadline: the harness pins all of vmm's threads to one
// CPU (see l1init's pin.go). The caller passes only the part of the log
// its run wrote (KernelLogMark, KernelLogSince): a stall that ended
// before is no excuse for what came after.
func VCPUStall(klog string) string {
	lines := strings.Split(klog, "\n")
	for i, line := range lines {
		if !stallLineRE.MatchString(line) {
			continue
		}
		live := strings.Contains(line, "soft lockup")
		for _, next := range lines[i+1 : min(len(lines), i+1+stallReportLines)] {
			if stallLineRE.MatchString(next) {
				break // the next report, which the outer loop reads
			}
			if sysrqLineRE.MatchString(next) {
				// A sysrq report (probeCPUs asks for one during a
				// stalled run): its CPU in KVM_RUN is a running
				// guest's unless HeldCPUs finds its ticks stopped.
				break
			}
			switch {
			case cpuBacktraceRE.MatchString(next):
				live = true
			case taskDumpRE.MatchString(next):
				live = false
			case live && kvmRunFrameRE.MatchString(next):
				return line
			}
		}
	}
	return ""
}

// nmiBacktraceRE starts one CPU's part of sysrq l's report in L1's
// kernel log (lib/nmi_backtrace.c); an idle CPU's is that one line,
// "skipped". sysrqLineRE starts each sysrq report (drivers/tty/sysrq.c).
var (
	nmiBacktraceRE = regexp.MustCompile(`^\[ *\d+\.\d+\] NMI backtrace for cpu (\d+)( skipped)?`)
	sysrqLineRE    = regexp.MustCompile(`^\[ *\d+\.\d+\] sysrq: `)
)

// HeldCPUs returns the L1 CPUs that the emulator held inside their
// guests: those whose time counters in /proc/stat stood still between
// the two readings in times (proto.OpCPUTimes) while another CPU's
// advanced, so that they took no tick in proto.CPUTimesGap
// (proto.StillCPUs), and whose live NMI backtrace in klog (sysrq l; the
// caller passes only the log written after the readings) runs through
// KVM_RUN. A CPU inside KVM_RUN takes no tick only if its guest never
// exits, which L1's own timer interrupt forces (see VCPUStall); no
// program in L1 masks that. The CPUs come in StillCPUs' order.
func HeldCPUs(times, klog string) []string {
	first, second, ok := strings.Cut(times, proto.CPUTimesSep)
	if !ok {
		return nil
	}
	still, advanced := proto.StillCPUs(first, second)
	if !advanced {
		return nil // L1 as a whole stood still: the watchdog's to judge
	}
	inKVMRun := map[string]bool{}
	cpu := "" // whose live backtrace the lines are, if any
	for _, line := range strings.Split(klog, "\n") {
		switch m := nmiBacktraceRE.FindStringSubmatch(line); {
		case m != nil && m[2] == "":
			cpu = m[1]
		case m != nil, taskDumpRE.MatchString(line), sysrqLineRE.MatchString(line):
			// An idle CPU's one line, a blocked task's saved stack
			// (sysrq w), or the next report: no CPU's live frames.
			cpu = ""
		case cpu != "" && kvmRunFrameRE.MatchString(line):
			inKVMRun[cpu] = true
		}
	}
	var held []string
	for _, c := range still {
		if inKVMRun[c] {
			held = append(held, c)
		}
	}
	return held
}

// evidenceLogBytes bounds the kernel log Judge reads: an oops that
// faults recursively, as L1's does when the emulator returns it from its
// guest with the guest's GS base, fills 64 KiB with frames before the
// line that names where it happened.
const evidenceLogBytes = 1 << 20

// evidence collects what Judge needs from a failed attempt.
func (l *L1) evidence() Evidence {
	ev := Evidence{Booted: true, Console: l.ConsoleTail(400)}
	if b, err := l.kernelLogEnd(evidenceLogBytes); err == nil {
		ev.KernelLog = string(b)
	}
	return ev
}

// TB is what Retry needs of a test; testing.TB has it, and package nested
// does not import package testing outside its tests.
type TB interface {
	Helper()
	Name() string
	Log(args ...any)
	Fatal(args ...any)
	Context() context.Context
}

// Retry is WithL1 for tests: progress and every retry go to t.Log, the
// suite's ledger comes from the environment (LedgerFromEnv) unless c has
// one, and failure is fatal.
func Retry(t TB, c Config, fn func(l *L1) error) {
	t.Helper()
	if c.Log == nil {
		c.Log = testLog{t}
	}
	if c.Ledger.Path == "" {
		led, err := LedgerFromEnv(os.Getenv)
		if err != nil {
			t.Fatal(err)
			return // a TB whose Fatal returns
		}
		c.Ledger = led
	}
	if c.Ledger.Owner == "" {
		c.Ledger.Owner = t.Name()
	}
	if err := WithL1(t.Context(), c, fn); err != nil {
		t.Fatal(err)
	}
}

type testLog struct{ t TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
