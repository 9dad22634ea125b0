package kvmstats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// statLine is a /proc/<pid>/stat line with utime, stime and guest_time
// set, after the command name comm.
func statLine(comm string, utime, stime, guest int64) string {
	f := make([]string, 50) // fields 3..52
	for i := range f {
		f[i] = "0"
	}
	f[0] = "S"
	f[14-3] = strconv.FormatInt(utime, 10)
	f[15-3] = strconv.FormatInt(stime, 10)
	f[43-3] = strconv.FormatInt(guest, 10)
	return "1234 (" + comm + ") " + strings.Join(f, " ") + "\n"
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    CPU
		wantErr string
	}{
		{"plain", statLine("vmm", 120, 30, 100), CPU{User: 120, System: 30, Guest: 100}, ""},
		{"name with spaces and parentheses", statLine("a) b (c", 7, 8, 9), CPU{User: 7, System: 8, Guest: 9}, ""},
		{"QEMU's name", statLine("qemu-system-x86", 1, 2, 0), CPU{User: 1, System: 2}, ""},
		{"no name", "1234 S 1 2 3", CPU{}, "without a command name"},
		{"short line", "1234 (vmm) S 1 2 3", CPU{}, "want at least 14"},
		{"no guest time", "1234 (vmm) S" + strings.Repeat(" 1", 20), CPU{}, "want at least 43"},
		{"garbage", strings.Replace(statLine("vmm", 1, 2, 3), " 2 ", " x ", 1), CPU{}, "field 15"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if got.Total() != tt.want.User+tt.want.System {
				t.Errorf("Total %d", got.Total())
			}
		})
	}
}

// fakeTree builds a debugfs and a procfs: VM directories by name with
// their files, and processes with their threads, comm and stat.
type fakeProc struct {
	pid      int
	threads  []int
	comm     string
	stat     string
	children map[int][]int // thread -> the processes it started
	// switches are each thread's voluntary and nonvoluntary context
	// switches; a thread not listed has no status file.
	switches map[int][2]int64
	wchan    map[int]string // thread -> its wchan file, if any
}

func fakeTree(t *testing.T, vms map[string]map[string]string, procs []fakeProc) Paths {
	t.Helper()
	root := t.TempDir()
	p := Paths{Debugfs: filepath.Join(root, "debug"), Proc: filepath.Join(root, "proc")}
	write := func(path, s string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(p.Debugfs, "kvm"), 0o755)
	write(filepath.Join(p.Debugfs, "kvm", "mmu_audit"), "0\n") // a global file, not a VM
	for vm, files := range vms {
		os.MkdirAll(filepath.Join(p.Debugfs, "kvm", vm), 0o755)
		for name, v := range files {
			write(filepath.Join(p.Debugfs, "kvm", vm, name), v)
		}
	}
	for _, pr := range procs {
		dir := filepath.Join(p.Proc, strconv.Itoa(pr.pid))
		write(filepath.Join(dir, "comm"), pr.comm+"\n")
		write(filepath.Join(dir, "stat"), pr.stat)
		for _, tid := range pr.threads {
			os.MkdirAll(filepath.Join(dir, "task", strconv.Itoa(tid)), 0o755)
			if w, ok := pr.wchan[tid]; ok {
				write(filepath.Join(dir, "task", strconv.Itoa(tid), "wchan"), w)
			}
			if sw, ok := pr.switches[tid]; ok {
				write(filepath.Join(dir, "task", strconv.Itoa(tid), "status"), fmt.Sprintf(
					"Name:\t%s\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n", pr.comm, sw[0], sw[1]))
			}
			var kids []string
			for _, k := range pr.children[tid] {
				kids = append(kids, strconv.Itoa(k))
			}
			write(filepath.Join(dir, "task", strconv.Itoa(tid), "children"), strings.Join(kids, " "))
		}
	}
	os.MkdirAll(filepath.Join(p.Proc, "self"), 0o755)
	return p
}

func TestTake(t *testing.T) {
	vms := map[string]map[string]string{
		// vmm's VM, created by one of its other threads.
		"502-11": {"exits": "1000\n", "io_exits": "40\n", "mmio_exits": "300\n", "halt_exits": "7\n",
			"halt_poll_fail_hist": "0 1 2\n", "vcpu0/exits": "1000\n"},
		// Another process's VM.
		"900-9": {"exits": "5\n"},
		// A VM being torn down: no files left.
		"777-3": {},
	}
	procs := []fakeProc{
		{pid: 500, threads: []int{500, 501, 502}, comm: "vmm", stat: statLine("vmm", 50, 10, 40),
			switches: map[int][2]int64{500: {2, 1}, 501: {10, 0}, 502: {5, 5}},
			wchan:    map[int]string{501: "kvm_vcpu_block\n", 502: "0"}}, // 0: running; 500 has none
		{pid: 600, threads: []int{600}, comm: "qemu-system-x86", stat: statLine("qemu-system-x86", 1, 1, 0)},
		{pid: 700, threads: []int{700}, comm: "vmm", stat: statLine("vmm", 1, 1, 0)},
		{pid: 777, threads: []int{777}, comm: "gone", stat: statLine("gone", 1, 1, 0)},
	}
	p := fakeTree(t, vms, procs)
	os.MkdirAll(filepath.Join(p.Debugfs, "kvm", "502-11", "vcpu0"), 0o755)

	s, err := p.Take(500)
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{PID: 500, VM: "502-11", Counters: Counters{"exits": 1000, "io_exits": 40, "mmio_exits": 300, "halt_exits": 7},
		CPU: CPU{User: 50, System: 10, Guest: 40, Switches: 23}, Procs: []string{"vmm"},
		Threads: map[int]Thread{500: {Proc: "vmm", Switches: 3}, 501: {Proc: "vmm", Switches: 10, Wait: "kvm_vcpu_block"}, 502: {Proc: "vmm", Switches: 10, Wait: "running"}}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Take(500) = %+v, want %+v", s, want)
	}
	for _, tc := range []struct {
		pid  int
		want error
	}{{600, ErrNoVM}, {777, ErrNoVM}, {12345, ErrNoVM}} {
		if _, err := p.Take(tc.pid); !errors.Is(err, tc.want) {
			t.Errorf("Take(%d): %v, want %v", tc.pid, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		want []int
	}{{"vmm", []int{500, 700}}, {"qemu-system-x86", []int{600}}, {"qemu", nil}} {
		got, err := p.FindComm(tc.name)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("FindComm(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestDiff(t *testing.T) {
	before := Sample{PID: 1, VM: "1-10", Counters: Counters{"exits": 100, "io_exits": 10, "pages_4k": 50, "gone": 3}, CPU: CPU{User: 10, System: 5, Guest: 8, Switches: 500}}
	tests := []struct {
		name    string
		after   Sample
		want    Delta
		wantErr bool
	}{
		{"counts", Sample{PID: 1, VM: "1-10", Counters: Counters{"exits": 250, "io_exits": 10, "pages_4k": 40, "new": 9}, CPU: CPU{User: 30, System: 6, Guest: 20, Switches: 800}},
			Delta{Counters: Counters{"exits": 150, "io_exits": 0, "pages_4k": -10}, CPU: CPU{User: 20, System: 1, Guest: 12, Switches: 300}}, false},
		// Without threads, a thread with 400 switches that ended makes
		// the totals fall: the difference is none rather than negative.
		{"thread ended, totals", Sample{PID: 1, VM: "1-10", CPU: CPU{User: 10, System: 5, Guest: 8, Switches: 450}},
			Delta{Counters: Counters{}, CPU: CPU{}}, false},
		{"another process", Sample{PID: 2, VM: "1-10"}, Delta{}, true},
		{"another VM", Sample{PID: 1, VM: "1-12"}, Delta{}, true},
	}
	// With threads, the same ended thread leaves the others' 100.
	withThreads := before
	withThreads.Threads = map[int]Thread{1: {Proc: "qemu", Switches: 100}, 2: {Proc: "qemu", Switches: 400}}
	got, err := Diff(withThreads, Sample{PID: 1, VM: "1-10", CPU: CPU{Switches: 200}, Threads: map[int]Thread{1: {Proc: "qemu", Switches: 200}}})
	if err != nil || got.CPU.Switches != 100 {
		t.Errorf("Diff with an ended thread: %d switches, %v; want 100", got.CPU.Switches, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Diff(before, tt.after)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Diff = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// A VMM's CPU time includes its helpers', running (by their own times,
// whichever thread started them) or exited and waited for (its cutime and
// cstime); guest time stays its own.
func TestProcessCPUIncludesHelpers(t *testing.T) {
	withChildTimes := func(line string, cu, cs int64) string {
		i := strings.LastIndexByte(line, ')')
		f := strings.Fields(line[i+1:])
		f[16-3] = strconv.FormatInt(cu, 10)
		f[17-3] = strconv.FormatInt(cs, 10)
		return line[:i+1] + " " + strings.Join(f, " ") + "\n"
	}
	p := fakeTree(t, nil, []fakeProc{
		// vmm: 50+10 of its own, 4+1 from a helper it waited for, and
		// its vmm-net, started by thread 502, still running.
		{pid: 500, threads: []int{500, 501, 502}, comm: "vmm", stat: withChildTimes(statLine("vmm", 50, 10, 40), 4, 1),
			children: map[int][]int{502: {510}}, switches: map[int][2]int64{500: {3, 1}, 501: {100, 20}, 502: {7, 0}}},
		// vmm-net's thread 511 has no status (it ended): it adds none.
		{pid: 510, threads: []int{510, 511}, comm: "vmm-net", stat: statLine("vmm-net", 20, 7, 0),
			switches: map[int][2]int64{510: {1000, 2}}},
		// A process listed as a child that has gone: skipped.
		{pid: 600, threads: []int{600}, comm: "qemu-system-x86", stat: statLine("qemu-system-x86", 1, 2, 0),
			children: map[int][]int{600: {601}}},
	})
	for _, tt := range []struct {
		pid   int
		want  CPU
		procs []string
	}{
		{500, CPU{User: 50 + 4 + 20, System: 10 + 1 + 7, Guest: 40, Switches: 4 + 120 + 7 + 1002}, []string{"vmm", "vmm-net"}},
		{510, CPU{User: 20, System: 7, Switches: 1002}, []string{"vmm-net"}},
		{600, CPU{User: 1, System: 2}, []string{"qemu-system-x86"}},
	} {
		got, err := p.ProcessCPU(tt.pid)
		if err != nil || got != tt.want {
			t.Errorf("ProcessCPU(%d) = %+v, %v; want %+v", tt.pid, got, err, tt.want)
		}
		if _, procs, _ := p.processCPU(tt.pid); !reflect.DeepEqual(procs, tt.procs) {
			t.Errorf("ProcessCPU(%d) counted %q, want %q", tt.pid, procs, tt.procs)
		}
	}
}

func TestParseSwitches(t *testing.T) {
	for _, tt := range []struct {
		name, status string
		want         int64
		wantErr      bool
	}{
		{"both", "Name:\tvmm\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n", 15, false},
		{"no trailing newline", "voluntary_ctxt_switches:  0\nnonvoluntary_ctxt_switches: 9", 9, false},
		{"one missing", "Name:\tvmm\nvoluntary_ctxt_switches:\t12\n", 0, true},
		{"not a number", "voluntary_ctxt_switches:\tx\nnonvoluntary_ctxt_switches:\t3\n", 0, true},
		{"negative", "voluntary_ctxt_switches:\t-1\nnonvoluntary_ctxt_switches:\t3\n", 0, true},
		{"empty", "", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSwitches([]byte(tt.status))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseSwitches = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The real /proc of this test's own process parses, and its threads
// have switched at least once (the test binary started them).
func TestSwitchesOfSelf(t *testing.T) {
	p := DefaultPaths()
	c, err := p.ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if c.Switches <= 0 {
		t.Errorf("this process's threads switched %d times", c.Switches)
	}
}

func TestSwitchesByThread(t *testing.T) {
	before := Sample{Threads: map[int]Thread{
		1: {Proc: "vmm", Switches: 100},
		2: {Proc: "vmm", Switches: 50},
		3: {Proc: "vmm", Switches: 10},
		4: {Proc: "vmm", Switches: 7},
		5: {Proc: "vmm", Switches: 900}, // its ID is reused below
	}}
	after := Sample{Threads: map[int]Thread{
		1: {Proc: "vmm", Switches: 130, Wait: "futex_wait_queue"},
		2: {Proc: "vmm", Switches: 60, Wait: "futex_wait_queue"},
		3: {Proc: "vmm", Switches: 55, Wait: "kvm_vcpu_block"},
		4: {Proc: "vmm", Switches: 7, Wait: "do_epoll_wait"},      // idle: left out
		5: {Proc: "vmm", Switches: 3, Wait: "running"},            // a new thread: all of it
		6: {Proc: "vmm-net", Switches: 40, Wait: "do_epoll_wait"}, // new: all of it
		7: {Proc: "vmm-net", Switches: 20, Wait: "do_epoll_wait"}, // was vmm's: new
	}}
	before.Threads[7] = Thread{Proc: "vmm", Switches: 5}
	want := []ThreadSwitches{ // most first, equal counts by name
		{Proc: "vmm-net", Wait: "do_epoll_wait", Threads: 2, Switches: 60},
		{Proc: "vmm", Wait: "kvm_vcpu_block", Threads: 1, Switches: 45},
		{Proc: "vmm", Wait: "futex_wait_queue", Threads: 2, Switches: 40},
		{Proc: "vmm", Wait: "running", Threads: 1, Switches: 3},
	}
	if got := SwitchesByThread(before, after); !reflect.DeepEqual(got, want) {
		t.Errorf("SwitchesByThread = %+v, want %+v", got, want)
	}
}
