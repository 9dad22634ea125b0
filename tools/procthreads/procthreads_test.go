package procthreads

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseTaskStat(t *testing.T) {
	// A vCPU thread of vmm under SCHED_RR 1 on CPU 1 (proc(5) fields 3-52),
	// and a comm with a space and parentheses of its own.
	const tail = " R 1 100 100 0 -1 4194368 5 0 0 0 1234 567 0 0 -2 0 9 0 300 1268008 2627 18446744073709551615 4194304 8384000 140737 0 0 0 0 0 0 0 0 0 -1 1 1 2 0 0 0 0 0 0 0 0 0 0 0"
	tests := []struct {
		line    string
		want    threadSample
		wantErr bool
	}{
		{line: "101 (vmm)" + tail, want: threadSample{pid: 100, tid: 101, comm: "vmm", state: "R", cpu: 1, policy: "RR", rtPrio: 1, ticks: 1801}},
		{line: "101 (a) (b))" + tail, want: threadSample{pid: 100, tid: 101, comm: "a) (b)", state: "R", cpu: 1, policy: "RR", rtPrio: 1, ticks: 1801}},
		{line: "101 (vmm) R 1 100", wantErr: true},
		{line: "101 vmm" + tail, wantErr: true},
		{line: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseTaskStat(100, 101, tt.line)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v", tt.line, err)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("%q: got %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestStackSummary(t *testing.T) {
	stack := "[<0>] flush_work+0x5c/0x90\n[<0>] __lru_add_drain_all+0x147/0x1f0\n[<0>] khugepaged+0x68/0x970\n[<0>] kthread+0xd7/0x100\n"
	if got, want := stackSummary(stack, 3), "flush_work < __lru_add_drain_all < khugepaged"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := stackSummary("", 3); got != "" {
		t.Errorf("empty stack: got %q", got)
	}
}

// TestDescribe reads this test's own process, whose threads are
// real: at least the one running this test, in user space or the kernel.
func TestDescribe(t *testing.T) {
	lines := Describe("/proc", os.Getpid(), 10*time.Millisecond)
	if len(lines) == 0 {
		t.Fatal("no threads described")
	}
	for _, l := range lines {
		if !strings.Contains(l, " state=") || !strings.Contains(l, " policy=") || !strings.Contains(l, " ticks=") {
			t.Errorf("line lacks a field: %q", l)
		}
	}
}
