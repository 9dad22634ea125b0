package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/tools/kvmstats"
	"github.com/vmm-dev/vmm/tools/nested/proto"
	"github.com/vmm-dev/vmm/tools/procthreads"
)

// threads prints, for every process whose command name is one of args,
// what each of its threads and its descendants' are doing as L1's
// kernel sees it (package procthreads), and the counters of its VM in
// L1's KVM a second apart (package kvmstats). The harness runs it when
// a wait on a guest times out (package nested, Job.waitFor): a guest
// that stopped making progress while L1 stayed alive leaves no other
// trace, and whether its vCPU threads were spinning in guest mode,
// halted in kvm_vcpu_block, runnable but not run (the scheduler), or
// stuck elsewhere in vmm tells a vmm bug from the emulator's. (The
// harness asks the agent for CPU backtraces first, without a fork.)
func threads(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: l1tool threads NAME...")
		return 2
	}
	paths := kvmstats.DefaultPaths()
	if err := paths.MountDebugfs(); err != nil {
		fmt.Printf("(%v)\n", err)
	}
	var pids []int
	for _, name := range args {
		found, err := paths.FindComm(name)
		if err != nil {
			fmt.Printf("(%v)\n", err)
		}
		pids = append(pids, found...)
	}
	t0 := time.Now()
	stat0, _ := os.ReadFile("/proc/stat")
	before := map[int]kvmstats.Sample{}
	for _, pid := range pids {
		if s, err := paths.Take(pid); err == nil {
			before[pid] = s
		}
	}
	for _, pid := range pids {
		// Describe takes the second the counters are read over.
		fmt.Printf("process %d and its descendants, CPU time over 1 s:\n", pid)
		for _, line := range procthreads.Describe(paths.Proc, pid, time.Second) {
			fmt.Println("  " + line)
		}
	}
	time.Sleep(time.Until(t0.Add(time.Second))) // when no process was found
	for _, pid := range pids {
		b, ok := before[pid]
		a, err := paths.Take(pid)
		if !ok || err != nil {
			continue
		}
		d, err := kvmstats.Diff(b, a)
		if err != nil {
			fmt.Printf("(%v)\n", err)
			continue
		}
		fmt.Printf("process %d's VM %s (value, change over %v):", pid, a.VM, time.Since(t0).Round(100*time.Millisecond))
		// The counters that say whether a guest runs: its exits, halts
		// and wake-ups, and the interrupts injected into it
		// (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"; the same
		// names in debugfs).
		for _, name := range [...]string{"exits", "halt_exits", "halt_wakeup", "irq_injections", "irq_exits", "io_exits", "mmio_exits", "signal_exits", "irq_window_exits", "request_irq_exits"} {
			if v, ok := a.Counters[name]; ok {
				fmt.Printf(" %s %d %+d", name, v, d.Counters[name])
			}
		}
		fmt.Println()
	}
	stat1, _ := os.ReadFile("/proc/stat")
	if still, _ := proto.StillCPUs(string(stat0), string(stat1)); len(still) > 0 {
		// Tracing changes patch kernel text and wait for every CPU to
		// take an IPI, and to pass an RCU grace period: a CPU that takes
		// no tick would hold this report until it does.
		fmt.Printf("(exits not traced: CPU %s took no tick)\n", strings.Join(still, ", "))
	} else {
		traceExits()
	}
	printRTRunqueues(paths.Debugfs)
	return 0
}

// printRTRunqueues prints the real-time run queues from the scheduler's
// debug file: jobs run under SCHED_RR (see pin.go), and rt_throttled
// says whether L1 is holding them off.
func printRTRunqueues(debugfs string) {
	b, err := os.ReadFile(debugfs + "/sched/debug")
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
		// Unfiltered with tp_printk back on, every exit would go to
		// L1's console: the shutdown trace goes instead.
		os.WriteFile(event+"enable", []byte("0"), 0)
		fmt.Printf("(trace exits: the shutdown filter is lost, its trace off: %v)\n", err)
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
