package bench

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/kvmstats"
)

func TestReport(t *testing.T) {
	r := &Report{Date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Nested: true, Rounds: 3, Params: DefaultParams(), Duration: 90 * time.Second}
	for _, v := range []float64{100, 300, 200} {
		r.Add(SysVMM, "blk-seq-read", v)
	}
	for _, v := range []float64{50, 100, 400} {
		r.Add(SysQEMU, "blk-seq-read", v)
	}
	r.Add(SysVMM, "blk-rand-read", 12345)
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"3 interleaved rounds, medians; 2026-01-02 03:04 UTC",
		"Absolute numbers are not meaningful, only the vmm/QEMU ratios",
		"| figure | vmm | QEMU | vmm/QEMU |",
		"| virtio-blk sequential read (MiB/s) | 200 | 100 | 2.00 (0.50-3.00) |",
		"| virtio-blk 4 KiB random read (IOPS) | 12345 | n/a | n/a |",
		"| virtio-net TCP guest → host, TAP (MiB/s) | n/a | n/a | n/a |",
		"| virtio-net TCP host → guest, user-mode network's port forward (MiB/s) | n/a | n/a | n/a |",
		"blk-seq-read           vmm 100 300 200 / QEMU 50.0 100 400",
		"Total time 1m30s.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	r.Nested = false
	b.Reset()
	r.WriteMarkdown(&b)
	if strings.Contains(b.String(), "not meaningful") || !strings.Contains(b.String(), "directly on this host") {
		t.Errorf("direct report:\n%s", b.String())
	}

	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var j jsonReport
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Figures) != len(Figures) || j.Rounds != 3 || j.DurationS != 90 {
		t.Fatalf("json %s", raw)
	}
	f := j.Figures[0]
	if f.Key != "blk-seq-read" || *f.VMM.Median != 200 || *f.QEMU.Median != 100 || *f.Ratio != 2 || len(f.QEMU.Samples) != 3 ||
		!slices.Equal(f.Ratios, []float64{2, 3, 0.5}) {
		t.Errorf("json figure %+v", f)
	}
	rr := j.Figures[2]
	if rr.Ratio != nil || rr.QEMU.Median != nil || rr.QEMU.Samples == nil || rr.Ratios == nil || len(rr.Ratios) != 0 {
		t.Errorf("json figure without QEMU samples: %s", raw)
	}
}

func TestThreadLine(t *testing.T) {
	groups := []kvmstats.ThreadSwitches{
		{Proc: "vmm", Wait: "futex_wait_queue", Threads: 2, Switches: 4800},
		{Proc: "vmm", Wait: "running", Threads: 1, Switches: 300},
		{Proc: "vmm", Wait: "", Threads: 3, Switches: 360000},
		{Proc: "vmm", Wait: "do_epoll_wait", Threads: 1, Switches: 100}, // 1/3 per file: left out
	}
	for _, tt := range []struct {
		name string
		c    Cost
		want string
	}{
		{"per file", Cost{Units: 300, Threads: groups},
			"context switches per unit of work by thread, as it waited at the end: vmm futex_wait_queue (2 threads) 16.0, vmm running (1 thread) 1.00, vmm unknown (3 threads) 1200"},
		{"no units", Cost{Threads: groups}, ""},
		{"all below half a switch", Cost{Units: 1e6, Threads: groups}, ""},
		{"no threads", Cost{Units: 300}, ""},
	} {
		if got := tt.c.threadLine(); got != tt.want {
			t.Errorf("%s: threadLine() = %q, want %q", tt.name, got, tt.want)
		}
	}
}
