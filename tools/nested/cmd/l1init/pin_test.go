package main

import (
	"errors"
	"github.com/vmm-dev/vmm/tools/nested/proto"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStartPlaced: a child started with a CPU set may run only there (the
// kernel's affinity for its pid says so), one started without keeps the
// parent's; one started real-time runs under SCHED_RR at jobPriority, the
// others under the parent's policy; the caller's own thread is left as it
// was.
func TestStartPlaced(t *testing.T) {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		t.Fatal(err)
	}
	first := -1
	for i := 0; i < len(own)*64 && first < 0; i++ {
		if own.IsSet(i) {
			first = i
		}
	}
	ownAttr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var set unix.CPUSet
	set.Set(first)
	for _, tc := range []struct {
		name       string
		pl         placement
		want       unix.CPUSet // the child's affinity
		wantPolicy uint32
		wantPrio   uint32
	}{
		{"pinned", placement{cpus: &set}, set, ownAttr.Policy, ownAttr.Priority},
		{"unpinned", placement{}, own, ownAttr.Policy, ownAttr.Priority},
		{"pinned-realtime", placement{cpus: &set, realtime: true}, set, unix.SCHED_RR, jobPriority},
		{"realtime", placement{realtime: true}, own, unix.SCHED_RR, jobPriority},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startPlaced(tc.pl, "/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
			if tc.pl.realtime && errors.Is(err, unix.EPERM) {
				t.Skipf("no CAP_SYS_NICE here: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Wait()
			defer p.Kill()
			var got unix.CPUSet
			if err := unix.SchedGetaffinity(p.Pid, &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("child may run on %d CPUs, want %d", got.Count(), tc.want.Count())
			}
			a, err := unix.SchedGetAttr(p.Pid, 0)
			if err != nil {
				t.Fatal(err)
			}
			if a.Policy != tc.wantPolicy || a.Priority != tc.wantPrio {
				t.Errorf("child's policy %d priority %d, want %d priority %d", a.Policy, a.Priority, tc.wantPolicy, tc.wantPrio)
			}
			if now, err := unix.SchedGetAttr(0, 0); err != nil || now.Policy != ownAttr.Policy || now.Priority != ownAttr.Priority {
				t.Errorf("this thread's policy changed: %+v, %v", now, err)
			}
			var after unix.CPUSet
			if err := unix.SchedGetaffinity(0, &after); err != nil {
				t.Fatal(err)
			}
			if after != own {
				t.Errorf("this thread's affinity changed to %d CPUs", after.Count())
			}
		})
	}
}

// TestHousekeep: once the agent keeps off the jobs' CPU, none of its
// threads and no process it starts may run there, except a job started
// pinned to it. It runs in a child process: housekeep narrows the
// affinity of every thread of the process that calls it.
func TestHousekeep(t *testing.T) {
	job, err := jobCPUSet()
	if err != nil {
		t.Fatal(err)
	}
	if job == nil {
		t.Skip("one CPU: nothing to keep off")
	}
	if os.Getenv("L1INIT_HOUSEKEEP_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHousekeep$", "-test.v")
		cmd.Env = append(os.Environ(), "L1INIT_HOUSEKEEP_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestHousekeep") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	if err := housekeep(job); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	overlaps := func(pid int) bool {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &got); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(got)*64; i++ {
			if got.IsSet(i) && job.IsSet(i) {
				return true
			}
		}
		return got.Count() == 0
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if overlaps(tid) {
			t.Errorf("thread %d may still run on the jobs' CPU", tid)
		}
	}
	for _, tc := range []struct {
		name    string
		pl      placement
		wantJob bool
	}{
		{"aside exec", execPlacement(proto.OpExecAside, placement{cpus: job}), false},
		{"exec", execPlacement(proto.OpExec, placement{cpus: job}), true},
		{"job", placement{cpus: job}, true},
	} {
		p, err := startPlaced(tc.pl, "/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		if got := overlaps(p.Pid); got != tc.wantJob {
			t.Errorf("%s: child on the jobs' CPU: %v, want %v", tc.name, got, tc.wantJob)
		}
		p.Kill()
		p.Wait()
	}
}
