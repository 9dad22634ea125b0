// Package procthreads describes what a process's threads are doing, as
// Linux's /proc shows them, for the reports of harness tools when
// something hangs: the tests' redirect (a command past its -timeout)
// and L1's agent (a guest that stopped making progress). It has its own
// package because both are commands; Tree also gives package kvmstats
// the processes whose CPU time is a VMM's.
package procthreads

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Why look at threads: a command that hangs past its own deadline (vmm
// past -timeout) has threads that are either not scheduled (runnable,
// their CPU time frozen), asleep in the kernel (state D and a kernel
// stack that names what they wait for) or busy. The goroutine dump
// SIGQUIT brings shows only the Go side, and only if some thread of the
// command still runs to print it. So Describe reads /proc twice, a gap
// apart: each thread's state, CPU, scheduling policy, CPU time and its
// change, wait channel and kernel stack (the stack needs root, which the
// agent in L1 has).

// threadSample is one thread's line of /proc/PID/task/TID/stat.
type threadSample struct {
	pid, tid int
	comm     string
	state    string
	cpu      int    // last CPU it ran on (processor)
	policy   string // scheduling policy
	rtPrio   int
	ticks    uint64 // utime+stime in clock ticks
}

// policyNames are sched(7)'s policies by number (include/uapi/linux/sched.h).
var policyNames = map[int]string{0: "OTHER", 1: "FIFO", 2: "RR", 3: "BATCH", 5: "IDLE", 6: "DEADLINE"}

// parseTaskStat reads a /proc/PID/task/TID/stat line (proc(5)). comm is
// between the first '(' and the last ')', since it may hold either.
func parseTaskStat(pid, tid int, line string) (threadSample, error) {
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return threadSample{}, fmt.Errorf("stat of %d/%d: no (comm)", pid, tid)
	}
	f := strings.Fields(line[end+1:])
	// f[0] is field 3 (state): field N is f[N-3].
	const last = 41 // policy
	if len(f) < last-2 {
		return threadSample{}, fmt.Errorf("stat of %d/%d: %d fields after comm, want %d", pid, tid, len(f), last-2)
	}
	num := func(n int) uint64 {
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	s := threadSample{
		pid: pid, tid: tid,
		comm:   line[open+1 : end],
		state:  f[0],
		cpu:    int(num(39)),
		rtPrio: int(num(40)),
		ticks:  num(14) + num(15),
	}
	s.policy = policyNames[int(num(41))]
	if s.policy == "" {
		s.policy = strconv.FormatUint(num(41), 10)
	}
	return s, nil
}

// Tree is pid and its descendants, parents first, from
// /proc/PID/task/TID/children (a thread lists the processes it
// started). A pid listed twice, which a reused pid could make happen
// while /proc is read, is taken once.
func Tree(proc string, pid int) []int {
	tree := []int{pid}
	seen := map[int]bool{pid: true}
	for i := 0; i < len(tree); i++ {
		tasks, _ := os.ReadDir(filepath.Join(proc, strconv.Itoa(tree[i]), "task"))
		for _, t := range tasks {
			b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(tree[i]), "task", t.Name(), "children"))
			if err != nil {
				continue // the thread exited, or no CONFIG_PROC_CHILDREN
			}
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil && !seen[n] {
					seen[n] = true
					tree = append(tree, n)
				}
			}
		}
	}
	return tree
}

// sampleThreads reads every thread of the given processes.
func sampleThreads(proc string, pids []int) []threadSample {
	var out []threadSample
	for _, pid := range pids {
		tasks, _ := os.ReadDir(filepath.Join(proc, strconv.Itoa(pid), "task"))
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "task", t.Name(), "stat"))
			if err != nil {
				continue // ended meanwhile
			}
			if s, err := parseTaskStat(pid, tid, string(b)); err == nil {
				out = append(out, s)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].tid < out[j].tid })
	return out
}

// stackSummary is a kernel stack (/proc/PID/task/TID/stack) as its
// functions, innermost first: "[<0>] flush_work+0x5c/0x90" gives
// "flush_work".
func stackSummary(stack string, max int) string {
	var fns []string
	for _, line := range strings.Split(stack, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.IndexByte(line, ']'); i >= 0 {
			line = strings.TrimSpace(line[i+1:])
		}
		if line == "" {
			continue
		}
		if i := strings.IndexByte(line, '+'); i > 0 {
			line = line[:i]
		}
		fns = append(fns, line)
		if len(fns) == max {
			break
		}
	}
	return strings.Join(fns, " < ")
}

// Describe samples pid's tree (the process and its descendants) twice,
// gap apart, and gives one line per thread seen the second time.
func Describe(proc string, pid int, gap time.Duration) []string {
	before := map[int]uint64{}
	for _, s := range sampleThreads(proc, Tree(proc, pid)) {
		before[s.tid] = s.ticks
	}
	time.Sleep(gap)
	var lines []string
	for _, s := range sampleThreads(proc, Tree(proc, pid)) {
		delta := "new"
		if t, ok := before[s.tid]; ok {
			delta = fmt.Sprintf("+%d", s.ticks-t)
		}
		dir := filepath.Join(proc, strconv.Itoa(s.pid), "task", strconv.Itoa(s.tid))
		wchan, _ := os.ReadFile(filepath.Join(dir, "wchan"))
		stack, _ := os.ReadFile(filepath.Join(dir, "stack"))
		lines = append(lines, fmt.Sprintf("%d/%d %s state=%s cpu=%d policy=%s/%d ticks=%d(%s in %v) wchan=%s stack=%s",
			s.pid, s.tid, s.comm, s.state, s.cpu, s.policy, s.rtPrio, s.ticks, delta, gap,
			strings.TrimSpace(string(wchan)), stackSummary(string(stack), 8)))
	}
	return lines
}
