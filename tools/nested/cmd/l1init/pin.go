package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Jobs run on one L1 CPU, the last, because of how QEMU TCG's nested SVM
// fails. With jobs free to use both of L1's CPUs, vmm's threads that raise
// guest interrupts (the serial input reader, irqfd and ioeventfd work)
// run on one CPU while a vCPU thread is inside L2 on the other, so L1's
// KVM kicks that vCPU with an IPI, and the emulator now and then resumes
// L2 after a port I/O exit with an instruction fetch that faults: L1's
// kvm_exit trace shows a shutdown delivering a not-present fetch fault at
// io_serial_in+0x15 (the instruction after its IN; KASLR's offset taken
// off with the guest's own /proc/kallsyms). Measured with 64 KiB piped
// into `vmm run -- head -c 65536` in fresh L1s: unpinned on two CPUs, 9
// of 10 guests died this way within 22 s (the tenth L1 froze); on an L1
// booted with one CPU none died but all 4 L1s froze (the agent's
// heartbeats stopped); pinned to one of two CPUs, 4 of 4 passed. Real
// hardware has no such bug; pinning keeps the tests about vmm. When both
// threads share a CPU, the one raising the interrupt runs only while the
// vCPU is out of guest mode, so no kick is an IPI into L2.

// Jobs also run under SCHED_RR at the lowest real-time priority, with L1's
// round-robin slice cut to 4 ms, because of how L1's fair scheduler treats
// two vCPU threads that share that one CPU. A guest of two vCPUs stalled
// for tens of seconds now and then (vmm's and QEMU's alike: QEMU -accel kvm
// in 2 of 5 boots) with one vCPU spinning in stop_machine while the other's
// thread, runnable, did not run: /proc/<tid>/sched showed that thread's
// vruntime 22 s ahead of the queue's minimum (it had been charged 22 s of
// CPU in 30 s, 0.3 s of it guest time), so CFS ran the spinner until the
// two evened out. Round-robin at one priority has no such memory: each
// runnable thread gets its slice in turn. Measured in fresh L1s with
// `-smp 2` and a verbose console (which made most CFS boots stall): CFS 8
// of 8 boots stalled, SCHED_RR 0 of 9. With RR's default 100 ms slice a
// quiet `vmm run` reached init 2.4 times later than under CFS (a spinning
// vCPU holds the CPU for a whole slice); with 4 ms it was as fast as CFS.
// L1's RT throttling (95% of each second) still leaves kernel threads on
// that CPU their share.

// rrSliceMillis is what agentMain writes to sched_rr_timeslice_ms: one
// tick at the cloud kernel's HZ=250, the shortest slice RR has.
const rrSliceMillis = 4

// jobPriority is the SCHED_RR priority jobs start with: the lowest, so
// that L1's own real-time threads (migration, watchdogs) still preempt.
const jobPriority = 1

// placement says where and how job processes start.
type placement struct {
	cpus     *unix.CPUSet // nil: wherever the agent may run
	realtime bool         // SCHED_RR at jobPriority
}

// jobCPUSet is the CPU set jobs start with: the last online CPU, or nil
// (no pinning) on an L1 of one CPU.
func jobCPUSet() (*unix.CPUSet, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	if all.Count() < 2 {
		return nil, nil
	}
	last := -1
	for i := 0; i < len(all)*64; i++ {
		if all.IsSet(i) {
			last = i
		}
	}
	var set unix.CPUSet
	set.Set(last)
	return &set, nil
}

// startPlaced starts a process whose threads all begin with pl's CPU set
// and scheduling policy. The child inherits both from the thread that forks
// it, so the fork happens on a goroutine locked to a thread of its own that
// takes them; that goroutine ends still locked, which ends the thread too,
// so no other goroutine ever runs narrowed or real-time.
func startPlaced(pl placement, path string, args []string, attr *os.ProcAttr) (*os.Process, error) {
	if pl.cpus == nil && !pl.realtime {
		return os.StartProcess(path, args, attr)
	}
	type started struct {
		p   *os.Process
		err error
	}
	done := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if pl.cpus != nil {
			if err := unix.SchedSetaffinity(0, pl.cpus); err != nil {
				done <- started{nil, fmt.Errorf("pin job: sched_setaffinity: %w", err)}
				return
			}
		}
		if pl.realtime {
			sa := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_RR, Priority: jobPriority}
			if err := unix.SchedSetAttr(0, &sa, 0); err != nil {
				done <- started{nil, fmt.Errorf("job policy: sched_setattr SCHED_RR: %w", err)}
				return
			}
		}
		p, err := os.StartProcess(path, args, attr)
		done <- started{p, err}
	}()
	r := <-done
	return r.p, r.err
}

// housekeep keeps the agent off the jobs' CPU (job): every thread it
// has now, and so every thread and process it starts later that is not
// placed there on purpose. Jobs and execs' children are (startPlaced:
// most run vmm); an aside exec's child (a diagnostic, proto.OpExecAside)
// is not. A job's vCPU threads run real-time there and may hold that
// CPU for 95% of each second: an agent thread or a diagnostic left on it
// waits with them. In looped runs of
// TestSMPAndMemory, 1 L1 in about 15 ended with the job console stopped
// mid-line and an exec whose child never ran in 15 s, while the agent's
// heartbeats, sent from the other CPU, went on.
func housekeep(job *unix.CPUSet) error {
	if job == nil {
		return nil
	}
	var rest unix.CPUSet
	if err := unix.SchedGetaffinity(0, &rest); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	for i := 0; i < len(rest)*64; i++ {
		if job.IsSet(i) {
			rest.Clear(i)
		}
	}
	if rest.Count() == 0 {
		return nil
	}
	// A thread not yet narrowed may start another while the list is
	// read: go over it again until a pass finds no new thread.
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &rest); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("sched_setaffinity thread %d: %w", tid, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
}
