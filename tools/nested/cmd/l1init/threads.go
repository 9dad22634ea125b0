package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// threads prints, for every process whose command name is one of args,
// what each of its threads is doing as L1's kernel sees it, and the
// counters of every VM in L1's KVM twice, a second apart. The harness
// runs it when a wait on a guest times out (package nested, Job.waitFor):
// a guest that stopped making progress while L1 stayed alive leaves no
// other trace, and whether its vCPU threads were spinning in guest mode,
// halted in kvm_vcpu_block, runnable but not run (the scheduler), or
// stuck elsewhere in vmm tells a vmm bug from the emulator's. (The
// harness asks the agent for CPU backtraces first, without a fork.)
func threads(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: l1tool threads NAME...")
		return 2
	}
	want := map[string]bool{}
	for _, a := range args {
		want[a] = true
	}
	if err := mountDebugfs(); err != nil {
		fmt.Printf("(%v)\n", err)
	}
	before := kvmCounters()
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		comm, err := os.ReadFile(p + "/comm")
		if err != nil || !want[strings.TrimSpace(string(comm))] {
			continue
		}
		fmt.Printf("process %s (%s)\n", filepath.Base(p), strings.TrimSpace(string(comm)))
		tasks, _ := filepath.Glob(p + "/task/[0-9]*")
		for _, t := range tasks {
			printTask(t)
		}
	}
	stat0, _ := os.ReadFile("/proc/stat")
	time.Sleep(time.Second)
	after := kvmCounters()
	stat1, _ := os.ReadFile("/proc/stat")
	printCounters(before, after)
	if still := stillCPUs(string(stat0), string(stat1)); len(still) > 0 {
		// Tracing changes patch kernel text and wait for every CPU to
		// take an IPI, and to pass an RCU grace period: a CPU that takes
		// no tick would hold this report until it does.
		fmt.Printf("(exits not traced: CPU %s took no tick in 1 s)\n", strings.Join(still, ", "))
	} else {
		traceExits()
	}
	printRTRunqueues()
	return 0
}

// printTask prints a thread's state, policy, CPU, times, wait channel
// and kernel stack on a few lines.
func printTask(dir string) {
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return // it exited meanwhile
	}
	// proc(5): comm is in parentheses and may hold spaces; the fields
	// after it start with state (field 3).
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return
	}
	open := strings.IndexByte(s, '(')
	comm := s[open+1 : i]
	f := strings.Fields(s[i+1:])
	field := func(n int) string { // n is proc(5)'s 1-based field number
		if n-3 < len(f) {
			return f[n-3]
		}
		return "?"
	}
	wchan, _ := os.ReadFile(dir + "/wchan")
	fmt.Printf("  tid %s %-15s state %s cpu %s policy %s rtprio %s utime %s stime %s wchan %s\n",
		filepath.Base(dir), comm, field(3), field(39), field(41), field(40), field(14), field(15), strings.TrimSpace(string(wchan)))
	if sched, err := os.ReadFile(dir + "/sched"); err == nil {
		for _, line := range strings.Split(string(sched), "\n") {
			if k, _, ok := strings.Cut(line, ":"); ok {
				switch strings.TrimSpace(k) {
				case "se.sum_exec_runtime", "nr_switches", "nr_voluntary_switches", "nr_involuntary_switches":
					fmt.Printf("    %s\n", strings.Join(strings.Fields(line), " "))
				}
			}
		}
	}
	if stack, err := os.ReadFile(dir + "/stack"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(stack)), "\n") {
			fmt.Printf("    %s\n", line)
		}
	}
}

// debugfsDir is where L1's KVM keeps its per-VM counters
// (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD", and debugfs).
const debugfsDir = "/sys/kernel/debug"

func mountDebugfs() error {
	if _, err := os.Stat(debugfsDir + "/kvm"); err == nil {
		return nil
	}
	if err := unix.Mount("debugfs", debugfsDir, "debugfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount debugfs: %w", err)
	}
	return nil
}

// kvmCounterNames are the per-VM counters that say whether a guest runs:
// its exits, halts and wake-ups, and the interrupts injected into it.
var kvmCounterNames = []string{"exits", "halt_exits", "halt_wakeup", "halt_successful_poll", "irq_injections", "irq_exits", "io_exits", "mmio_exits", "signal_exits", "irq_window_exits", "nmi_injections", "request_irq_exits"}

// kvmCounters reads kvmCounterNames of every VM (debugfs kvm/PID-FD) and
// of its vCPUs (kvm/PID-FD/vcpuN), keyed "VM counter" or "VM/vcpuN counter".
func kvmCounters() map[string]uint64 {
	out := map[string]uint64{}
	vms, _ := filepath.Glob(debugfsDir + "/kvm/*-*")
	for _, vm := range vms {
		dirs := []string{vm}
		vcpus, _ := filepath.Glob(vm + "/vcpu*")
		dirs = append(dirs, vcpus...)
		for _, d := range dirs {
			key, _ := filepath.Rel(debugfsDir+"/kvm", d)
			for _, name := range kvmCounterNames {
				b, err := os.ReadFile(d + "/" + name)
				if err != nil {
					continue
				}
				if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
					out[key+" "+name] = v
				}
			}
		}
	}
	return out
}

func printCounters(before, after map[string]uint64) {
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		fmt.Println("kvm counters (value, change over 1 s):")
	}
	for _, k := range keys {
		fmt.Printf("  %s %d %+d\n", k, after[k], int64(after[k]-before[k]))
	}
}

// printRTRunqueues prints the real-time run queues from the scheduler's
// debug file: jobs run under SCHED_RR (see pin.go), and rt_throttled
// says whether L1 is holding them off.
func printRTRunqueues() {
	b, err := os.ReadFile(debugfsDir + "/sched/debug")
	if err != nil {
		return
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "rt_rq["), strings.HasPrefix(t, "cpu#"):
			in = true
			fmt.Println(t)
		case t == "":
			in = false
		case in && strings.HasPrefix(t, "."):
			fmt.Println("  " + strings.Join(strings.Fields(t), " "))
		}
	}
}

// traceExits prints the last exits of L1's guests over a moment, each
// with the guest's instruction pointer: where a vCPU that spins in its
// guest is spinning. The kvm_exit event is already enabled, filtered to
// shutdowns and copied to the kernel log (kvmtrace.go); for the moment
// it is unfiltered and not copied, and then as before.
func traceExits() {
	const printk = "/proc/sys/kernel/tracepoint_printk"
	event := tracefsDir + "/events/kvm/kvm_exit/"
	old, err := os.ReadFile(printk)
	if err != nil {
		fmt.Printf("(trace exits: %v)\n", err)
		return
	}
	if err := os.WriteFile(printk, []byte("0"), 0); err != nil {
		fmt.Printf("(trace exits: %v)\n", err)
		return
	}
	defer os.WriteFile(printk, old, 0)
	// Opening the trace file for writing with O_TRUNC empties the buffer.
	if err := os.WriteFile(tracefsDir+"/trace", nil, 0); err != nil {
		fmt.Printf("(trace exits: %v)\n", err)
		return
	}
	if err := os.WriteFile(event+"filter", []byte("0"), 0); err != nil {
		fmt.Printf("(trace exits: %v)\n", err)
		return
	}
	time.Sleep(300 * time.Millisecond)
	if err := os.WriteFile(event+"filter", []byte(shutdownFilter), 0); err != nil {
		fmt.Printf("(trace exits: the shutdown filter is lost: %v)\n", err)
	}
	b, err := os.ReadFile(tracefsDir + "/trace")
	if err != nil {
		fmt.Printf("(trace exits: %v)\n", err)
		return
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "kvm_exit:") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	fmt.Printf("kvm exits over 0.3 s: %d, the last:\n", len(lines))
	for _, l := range lines[max(0, len(lines)-16):] {
		fmt.Println("  " + l)
	}
}

// stillCPUs returns the CPUs whose /proc/stat counters are the same in
// both readings.
func stillCPUs(a, b string) []string {
	lines := func(stat string) map[string]string {
		m := map[string]string{}
		for _, l := range strings.Split(stat, "\n") {
			name, rest, ok := strings.Cut(l, " ")
			if n, cpu := strings.CutPrefix(name, "cpu"); ok && cpu && n != "" {
				m[n] = rest
			}
		}
		return m
	}
	before, after := lines(a), lines(b)
	var still []string
	for cpu, v := range after {
		if before[cpu] == v {
			still = append(still, cpu)
		}
	}
	sort.Strings(still)
	return still
}
