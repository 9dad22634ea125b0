// Package kvmstats reads what KVM and the kernel count for one VM and the
// process that runs it: KVM's per-VM statistics in debugfs
// (/sys/kernel/debug/kvm/<tid>-<fd>/: exits, io_exits, mmio_exits,
// halt_exits, irq_injections, ...; the vCPU counters there are summed
// over the VM's vCPUs), the process's CPU time from /proc/<pid>/stat and
// its threads' context switches from /proc/<pid>/task/<tid>/status.
//
// These are the cost of a workload that does not drift with the host's
// speed: a nested run under TCG makes every exit slower but not more
// frequent. The counters of a running VM are cumulative, so the cost of
// one phase is the difference of a sample taken before it and one taken
// after it (Diff). KVM removes the directory when the VM is destroyed, so
// a whole-lifetime count must be sampled while the VM lives (see
// tools/e2e/cmd/kvmstat).
//
// Reading debugfs needs root, as running either VMM on a TAP does.
package kvmstats

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmm-dev/vmm/tools/procthreads"
)

// Paths are the file systems read; tests point them at fake trees.
type Paths struct {
	Debugfs string // where debugfs is mounted
	Proc    string // procfs
}

// DefaultPaths are the real ones.
func DefaultPaths() Paths { return Paths{Debugfs: "/sys/kernel/debug", Proc: "/proc"} }

// ErrNoVM means the process has no VM (yet, or any more).
var ErrNoVM = errors.New("no KVM VM of this process in debugfs")

// TickMillis is the length of a clock tick of /proc/<pid>/stat's times
// in milliseconds: USER_HZ is 100 on every Linux architecture this
// project runs on (x86-64), whatever the kernel's HZ.
const TickMillis = 10

// Counters are a VM's statistics, file name -> value.
type Counters map[string]int64

// CPU is what a process cost the host's CPUs, all its threads together:
// its CPU time in clock ticks (TickMillis each) and how often its
// threads were switched to and from. User includes Guest: the kernel
// accounts the time a vCPU thread spends running the guest as the
// thread's user time, and also on its own as guest time.
//
// Switches counts what time alone hides: a request handed from one
// thread to another, or a thread that sleeps and is woken per request,
// costs a context switch each time, and more so nested, where the
// switch is the emulated CPU's work. It is the sum of
// voluntary_ctxt_switches and nonvoluntary_ctxt_switches (proc(5)) of
// every thread alive when sampled. /proc keeps no total for threads
// that ended, as it does for CPU time, so Diff takes the difference
// thread by thread (Sample.Threads): a thread that ended between two
// samples is left out, with what it did in between.
type CPU struct {
	User     int64 `json:"user"`
	System   int64 `json:"system"`
	Guest    int64 `json:"guest"`
	Switches int64 `json:"switches"`
}

// Total is user plus system time in ticks, what the process cost the
// host's CPUs (guest time included).
func (c CPU) Total() int64 { return c.User + c.System }

// Sample is one reading of a VM's counters and its process's CPU time.
type Sample struct {
	PID      int      `json:"pid"`
	VM       string   `json:"vm"` // the debugfs directory's name, <tid>-<fd>
	Counters Counters `json:"counters"`
	CPU      CPU      `json:"cpu"`
	// Procs names the processes whose CPU time CPU holds (pid's and
	// its running descendants'), pid's first.
	Procs []string `json:"procs,omitempty"`
	// Threads are those processes' threads by thread ID: which
	// threads the switches are, for finding whose they are when a
	// VMM switches more than another.
	Threads map[int]Thread `json:"threads,omitempty"`
}

// Thread is one thread's context switches when sampled, and what it was
// waiting for then.
type Thread struct {
	Proc     string `json:"proc"` // its process's command name
	Switches int64  `json:"switches"`
	// Wait is /proc/<pid>/task/<tid>/wchan, the kernel function the
	// thread sleeps in ("kvm_vcpu_block" for a halted vCPU,
	// "do_epoll_wait", "futex_wait_queue"), "running" when it was not
	// asleep (the file says 0), and empty when the kernel does not say.
	Wait string `json:"wait,omitempty"`
}

// MountDebugfs mounts debugfs at p.Debugfs unless KVM's directory is
// already there (a bare L1 init mounts nothing).
func (p Paths) MountDebugfs() error {
	if _, err := os.Stat(filepath.Join(p.Debugfs, "kvm")); err == nil {
		return nil
	}
	if err := syscall.Mount("none", p.Debugfs, "debugfs", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("mount debugfs on %s: %w", p.Debugfs, err)
	}
	return nil
}

// VMDir returns the debugfs directory of the VM process pid created.
// KVM names it "<tid>-<fd>" after the thread that called KVM_CREATE_VM
// (virt/kvm/kvm_main.c, kvm_create_vm_debugfs), which in a Go program is
// any of its threads and in QEMU its main thread, so the directory is
// matched against all of pid's threads. Only the first VM is found: both
// VMMs create one.
func (p Paths) VMDir(pid int) (string, error) {
	ents, err := os.ReadDir(filepath.Join(p.Debugfs, "kvm"))
	if err != nil {
		return "", fmt.Errorf("kvmstats: %w", err)
	}
	for _, e := range ents {
		tid, _, ok := strings.Cut(e.Name(), "-")
		if !e.IsDir() || !ok {
			continue
		}
		if _, err := strconv.Atoi(tid); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(p.Proc, strconv.Itoa(pid), "task", tid)); err != nil {
			continue
		}
		return filepath.Join(p.Debugfs, "kvm", e.Name()), nil
	}
	return "", fmt.Errorf("kvmstats: pid %d: %w", pid, ErrNoVM)
}

// ReadCounters reads every numeric file of a VM's debugfs directory.
// Subdirectories (one per vCPU) and files that do not hold one integer
// (histograms) are skipped; an empty result means the VM went away
// while it was read.
func ReadCounters(dir string) (Counters, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("kvmstats: %w", err)
	}
	out := Counters{}
	for _, f := range files {
		if f.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			out[f.Name()] = n
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("kvmstats: %s: no counters: %w", dir, ErrNoVM)
	}
	return out, nil
}

// VMCounters reads the counters of pid's VM.
func (p Paths) VMCounters(pid int) (Counters, string, error) {
	dir, err := p.VMDir(pid)
	if err != nil {
		return nil, "", err
	}
	c, err := ReadCounters(dir)
	return c, filepath.Base(dir), err
}

// ParseStat reads the CPU times from the contents of /proc/<pid>/stat
// (proc(5)): utime, stime and guest_time are fields 14, 15 and 43. The
// command name (field 2) is in parentheses and may itself hold spaces
// and parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (CPU, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return CPU{}, errors.New("kvmstats: /proc stat line without a command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state).
	field := func(n int) (int64, error) {
		if n-3 >= len(f) {
			return 0, fmt.Errorf("kvmstats: /proc stat line has %d fields, want at least %d", len(f)+2, n)
		}
		v, err := strconv.ParseInt(f[n-3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("kvmstats: /proc stat field %d: %w", n, err)
		}
		return v, nil
	}
	var c CPU
	var err error
	if c.User, err = field(14); err != nil {
		return CPU{}, err
	}
	if c.System, err = field(15); err != nil {
		return CPU{}, err
	}
	if c.Guest, err = field(43); err != nil {
		return CPU{}, err
	}
	return c, nil
}

// ProcessCPU reads pid's CPU times, all its threads together, with the
// user and system times of the processes it started: a VMM's cost
// includes its helpers' (vmm runs -nic user's network in its vmm-net
// child; QEMU's virtiofsd is its child through the benchmark's
// daemon-exec). A running descendant counts by its own
// times (procthreads.Tree finds it), and one that has exited and been
// waited for by its parent's cutime and cstime (proc(5), fields 16 and
// 17), so a helper's time does not vanish when it ends. Guest stays
// pid's own.
func (p Paths) ProcessCPU(pid int) (CPU, error) {
	c, _, err := p.processCPU(pid)
	return c, err
}

// processCPU is ProcessCPU, also naming the running processes counted
// (the command names of their stat lines, pid's first), so that a report
// can show whose time a VMM's cost holds.
func (p Paths) processCPU(pid int) (CPU, []string, error) {
	c, names, _, err := p.processCost(pid)
	return c, names, err
}

// processCost is processCPU with the threads it counted.
func (p Paths) processCost(pid int) (CPU, []string, map[int]Thread, error) {
	var total CPU
	var names []string
	threads := map[int]Thread{}
	for i, proc := range procthreads.Tree(p.Proc, pid) {
		b, err := os.ReadFile(filepath.Join(p.Proc, strconv.Itoa(proc), "stat"))
		if err != nil {
			if i == 0 {
				return CPU{}, nil, nil, fmt.Errorf("kvmstats: %w", err)
			}
			continue // it exited meanwhile: its parent's cutime has it once waited for
		}
		c, err := ParseStat(b)
		if err == nil {
			var cu, cs int64
			if cu, cs, err = parseChildTimes(b); err == nil {
				c.User += cu
				c.System += cs
			}
		}
		switch {
		case err != nil && i == 0:
			return CPU{}, nil, nil, err
		case err != nil:
			continue
		case i == 0:
			total = c
		default:
			total.User += c.User
			total.System += c.System
		}
		total.Switches += p.threads(proc, statComm(b), threads)
		names = append(names, statComm(b))
	}
	return total, names, threads, nil
}

// threads adds pid's threads, of process comm, to m and returns the sum
// of their context switches; a thread that ended meanwhile, or whose
// status lacks the counts, adds none.
func (p Paths) threads(pid int, comm string, m map[int]Thread) int64 {
	dir := filepath.Join(p.Proc, strconv.Itoa(pid), "task")
	tasks, _ := os.ReadDir(dir)
	var n int64
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "status"))
		if err != nil {
			continue
		}
		v, err := ParseSwitches(b)
		if err != nil {
			continue
		}
		th := Thread{Proc: comm, Switches: v}
		if w, err := os.ReadFile(filepath.Join(dir, t.Name(), "wchan")); err == nil {
			th.Wait = strings.TrimSpace(string(w))
			if th.Wait == "0" {
				th.Wait = "running"
			}
		}
		m[tid] = th
		n += v
	}
	return n
}

// ParseSwitches reads a thread's context switches from the contents of
// its /proc/<pid>/task/<tid>/status: voluntary_ctxt_switches (it slept)
// plus nonvoluntary_ctxt_switches (it was preempted). A status without
// either line is an error.
func ParseSwitches(b []byte) (int64, error) {
	var n int64
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "voluntary_ctxt_switches" && key != "nonvoluntary_ctxt_switches") {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("kvmstats: /proc status %s: %q", key, strings.TrimSpace(val))
		}
		n += v
		found++
	}
	if found != 2 {
		return 0, errors.New("kvmstats: /proc status without both context switch counts")
	}
	return n, nil
}

// statComm is the command name in a /proc/<pid>/stat line ParseStat
// accepted: field 2, between the first '(' and the last ')'.
func statComm(b []byte) string {
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return ""
	}
	return string(b[i+1 : j])
}

// parseChildTimes reads cutime and cstime (fields 16 and 17) from a
// /proc/<pid>/stat line ParseStat accepted.
func parseChildTimes(b []byte) (cu, cs int64, err error) {
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if cu, err = strconv.ParseInt(f[16-3], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("kvmstats: /proc stat field 16: %w", err)
	}
	if cs, err = strconv.ParseInt(f[17-3], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("kvmstats: /proc stat field 17: %w", err)
	}
	return cu, cs, nil
}

// FindComm returns the processes whose command name (/proc/<pid>/comm,
// the file's base name cut to 15 bytes) is name.
func (p Paths) FindComm(name string) ([]int, error) {
	ents, err := os.ReadDir(p.Proc)
	if err != nil {
		return nil, fmt.Errorf("kvmstats: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.Proc, e.Name(), "comm"))
		if err != nil {
			continue // exited meanwhile
		}
		if strings.TrimSuffix(string(b), "\n") == name {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Take samples pid's VM and CPU time. The CPU time is read after the
// counters, so a phase's CPU time is never short of its exits.
func (p Paths) Take(pid int) (Sample, error) {
	c, vm, err := p.VMCounters(pid)
	if err != nil {
		return Sample{}, err
	}
	cpu, procs, threads, err := p.processCost(pid)
	if err != nil {
		return Sample{}, err
	}
	return Sample{PID: pid, VM: vm, Counters: c, CPU: cpu, Procs: procs, Threads: threads}, nil
}

// Delta is what happened between two samples of one VM.
type Delta struct {
	Counters Counters `json:"counters"`
	CPU      CPU      `json:"cpu"`
	// Threads are CPU.Switches by process and wait
	// (SwitchesByThread); nil when a sample listed no threads.
	Threads []ThreadSwitches `json:"threads,omitempty"`
}

// Diff is after minus before for every counter in both. Samples of
// different processes or VMs (the VMM was restarted, or created another
// VM) cannot be compared and are an error. A few statistics are levels,
// not counts (max_mmu_page_hash_collisions, pages_4k, ...): their
// difference is what changed and may be negative.
func Diff(before, after Sample) (Delta, error) {
	if before.PID != after.PID || before.VM != after.VM {
		return Delta{}, fmt.Errorf("kvmstats: samples of different VMs (pid %d VM %s, then pid %d VM %s)", before.PID, before.VM, after.PID, after.VM)
	}
	d := Delta{Counters: Counters{}, CPU: CPU{
		User:   after.CPU.User - before.CPU.User,
		System: after.CPU.System - before.CPU.System,
		Guest:  after.CPU.Guest - before.CPU.Guest,
	}}
	if len(before.Threads) > 0 && len(after.Threads) > 0 {
		// Thread by thread, so that one that ended in between does
		// not take its whole count off the others' (QEMU's block
		// workers end after seconds idle).
		d.Threads = SwitchesByThread(before, after)
		for _, g := range d.Threads {
			d.CPU.Switches += g.Switches
		}
	} else {
		// Samples without threads (older benchtools): the totals,
		// which a thread that ended pulls down, never below none.
		d.CPU.Switches = max(after.CPU.Switches-before.CPU.Switches, 0)
	}
	for k, a := range after.Counters {
		if b, ok := before.Counters[k]; ok {
			d.Counters[k] = a - b
		}
	}
	return d, nil
}

// ThreadSwitches are the context switches of a group of threads between
// two samples: the threads of one process that were waiting for the same
// thing when the second sample was taken.
type ThreadSwitches struct {
	Proc     string `json:"proc"`
	Wait     string `json:"wait"`
	Threads  int    `json:"threads"`
	Switches int64  `json:"switches"`
}

// SwitchesByThread groups the context switches between two samples of
// one process tree by process and by what each thread waited for at the
// second sample (a thread's wait then is where it spends its sleeps, as
// a thread in Go's network poller or a halted vCPU keeps returning to
// the same one), most switches first. A thread started in between
// counts all of its switches, and so does one whose ID another thread
// had at the first sample (of another process, or with more switches
// than it has now); one that ended in between is left out.
func SwitchesByThread(before, after Sample) []ThreadSwitches {
	type key struct{ proc, wait string }
	groups := map[key]*ThreadSwitches{}
	for tid, a := range after.Threads {
		n := a.Switches
		if b, ok := before.Threads[tid]; ok && b.Proc == a.Proc && b.Switches <= a.Switches {
			n -= b.Switches
		}
		if n <= 0 {
			continue // idle
		}
		k := key{a.Proc, a.Wait}
		g := groups[k]
		if g == nil {
			g = &ThreadSwitches{Proc: a.Proc, Wait: a.Wait}
			groups[k] = g
		}
		g.Threads++
		g.Switches += n
	}
	out := make([]ThreadSwitches, 0, len(groups))
	for _, g := range groups {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b ThreadSwitches) int {
		if c := cmp.Compare(b.Switches, a.Switches); c != 0 {
			return c
		}
		return cmp.Compare(a.Proc+" "+a.Wait, b.Proc+" "+b.Wait)
	})
	return out
}
