package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/nested"
)

// Soak sizes (issue 5: at least 100 VMs through the Go API in one process
// and 20 through the CLI).
const (
	soakAPIVMs  = 100
	soakWarmup  = 10
	soakCLIRuns = 20
	// soakTimeout bounds the whole soak in L1. It takes 1-3 minutes
	// nested; a hung VM is cut off by the soak's own per-VM deadline.
	soakTimeout = 10 * time.Minute
)

// Bounds on what may grow between the sample after the warm-up VMs and
// the one after the last VM, both taken after a GC that returns freed
// memory to the kernel. Each is far below what leaking anything per VM
// would add over 90 VMs, and above what the Go runtime itself may add.
const (
	// A VM holds at least five fds (/dev/kvm, the VM, its vCPU, an
	// ioeventfd, an irqfd) plus its disk; 2 allows for a runtime fd
	// opened late.
	soakMaxFDs = 2
	// vCPU threads are locked to their goroutine and exit with it; the
	// runtime may keep a few idle threads for blocking syscalls.
	soakMaxThreads = 4
	// Device workers and input forwarders end at Close; the runtime may
	// start a background goroutine or two.
	soakMaxGoroutines = 4
	// Guest RAM is one mapping per VM, unmapped by Close; the Go heap
	// can add an arena mapping or two as it grows.
	soakMaxMaps = 8
	// Per VM the queue's and the disk's preallocated buffers are over
	// 150 KiB and the guest touches a few pages of its RAM, so a VM
	// kept alive would add 13 MiB over 90 VMs; the heap after GC varies
	// by a few MiB.
	soakMaxRSSKB = 8 << 10
	// KVM's kernel memory per VM (VMCB, page tables, the vCPU) and the
	// page cache are L1-wide and noisy; this only catches a gross leak.
	soakMaxMemAvailableDropKB = 64 << 10
)

type soakSample struct {
	FDs            int `json:"fds"`
	Threads        int `json:"threads"`
	Goroutines     int `json:"goroutines"`
	Maps           int `json:"maps"`
	RSSKB          int `json:"rss_kb"`
	VmSizeKB       int `json:"vm_size_kb"`
	MemAvailableKB int `json:"mem_available_kb"`
}

type soakFailure struct {
	VM     int    `json:"vm"`
	Want   int    `json:"want"`
	Got    int    `json:"got"`
	Reason string `json:"reason"`
}

// soakReport mirrors both of tools/e2e/cmd/soak's report lines.
type soakReport struct {
	Phase     string        `json:"phase"`
	VMs       int           `json:"vms"`
	Runs      int           `json:"runs"`
	OK        int           `json:"ok"`
	Failures  []soakFailure `json:"failures"`
	LogLines  []string      `json:"log_lines"`
	Before    soakSample    `json:"before"`
	Base      soakSample    `json:"base"`
	Final     soakSample    `json:"final"`
	Peak      soakSample    `json:"peak"`
	Leftovers []string      `json:"leftovers"`
	OutFiles  []string      `json:"out_files"`
	BaseMem   int           `json:"base_mem_available_kb"`
	FinalMem  int           `json:"final_mem_available_kb"`
	ElapsedMS int64         `json:"elapsed_ms"`
}

// TestSoak boots 100 VMs in one process through package machine and 20
// through `vmm run`, each a tiny guest that reads its virtio-blk disk and
// reports the byte it read as its exit status, and checks that nothing
// grows from one VM to the next (issue 5, "No leaks").
func TestSoak(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := ciConfig(t, map[string]string{"/bin/soak": ciBuild(t).soak})
	// One L1 vCPU: with two, QEMU's TCG froze L1 (see README, "Nested
	// mode") in two of three runs of a few hundred back-to-back VM
	// creations, too often for the harness's single retry; with one it
	// has not, and the soak runs faster (vmm's threads take turns
	// rather than bouncing between emulated CPUs).
	c.CPUs = 1
	nested.Retry(t, c, func(l *nested.L1) error {
		ctx, cancel := context.WithTimeout(t.Context(), soakTimeout)
		defer cancel()
		t0 := time.Now()
		out, code, err := l.Exec(ctx, "/bin/soak", "-dir", "/tmp/soak",
			"-api", fmt.Sprint(soakAPIVMs), "-warmup", fmt.Sprint(soakWarmup), "-cli", fmt.Sprint(soakCLIRuns), "-vmm", "/vmm")
		if err != nil {
			return err
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s\n--- soak output ---\n%s\n--- L1 kernel log (tail) ---\n%s\n---", fmt.Sprintf(format, args...), out, l.KernelLogTail(30))
		}
		if code != 0 {
			return fail("soak exited with status %d", code)
		}
		t.Logf("soak took %.1fs in L1", time.Since(t0).Seconds())
		var api, cli *soakReport
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var r soakReport
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return fail("soak report line %q: %v", line, err)
			}
			switch r.Phase {
			case "api":
				api = &r
			case "cli":
				cli = &r
			}
		}
		if api == nil || cli == nil {
			return fail("soak printed no api or no cli report")
		}
		if err := checkSoakAPI(t, api); err != nil {
			return fail("Go API loop: %v", err)
		}
		if err := checkSoakCLI(t, cli); err != nil {
			return fail("CLI loop: %v", err)
		}
		return nil
	})
}

func checkSoakAPI(t *testing.T, r *soakReport) error {
	b, f, p := r.Base, r.Final, r.Peak
	t.Logf("api: %d/%d VMs in %.1fs (%.0f ms each)", r.OK, r.VMs, float64(r.ElapsedMS)/1000, float64(r.ElapsedMS)/float64(max(r.VMs, 1)))
	t.Logf("api: before first VM %+v", r.Before)
	t.Logf("api: after warm-up   %+v", b)
	t.Logf("api: after last VM   %+v", f)
	t.Logf("api: peak            %+v", p)
	if r.OK != soakAPIVMs || len(r.Failures) > 0 {
		return fmt.Errorf("%d of %d VMs ended with the status on their disk; failures: %+v", r.OK, soakAPIVMs, r.Failures)
	}
	if len(r.LogLines) > 0 {
		return fmt.Errorf("vmm reported device trouble for a well-behaved guest: %q", r.LogLines)
	}
	for _, g := range []struct {
		what             string
		base, final, max int
	}{
		{"open fds", b.FDs, f.FDs, soakMaxFDs},
		{"threads", b.Threads, f.Threads, soakMaxThreads},
		{"goroutines", b.Goroutines, f.Goroutines, soakMaxGoroutines},
		{"memory mappings", b.Maps, f.Maps, soakMaxMaps},
		{"RSS (KiB)", b.RSSKB, f.RSSKB, soakMaxRSSKB},
	} {
		if g.final-g.base > g.max {
			return fmt.Errorf("%s grew from %d after the warm-up to %d after %d more VMs (bound +%d)", g.what, g.base, g.final, soakAPIVMs-soakWarmup, g.max)
		}
	}
	if drop := b.MemAvailableKB - f.MemAvailableKB; drop > soakMaxMemAvailableDropKB {
		return fmt.Errorf("L1's MemAvailable dropped by %d KiB over %d VMs (bound %d)", drop, soakAPIVMs-soakWarmup, soakMaxMemAvailableDropKB)
	}
	return nil
}

func checkSoakCLI(t *testing.T, r *soakReport) error {
	t.Logf("cli: %d/%d runs in %.1fs; L1 MemAvailable %d KiB after 2 runs, %d KiB after %d", r.OK, r.Runs, float64(r.ElapsedMS)/1000, r.BaseMem, r.FinalMem, r.Runs)
	if r.OK != soakCLIRuns || len(r.Failures) > 0 {
		return fmt.Errorf("%d of %d runs exited with the status on their disk; failures: %+v", r.OK, soakCLIRuns, r.Failures)
	}
	if len(r.Leftovers) > 0 {
		return fmt.Errorf("scratch disks left in L1's /tmp: %q", r.Leftovers)
	}
	if len(r.OutFiles) > 0 {
		return fmt.Errorf("-out brought back files the guest never wrote: %q", r.OutFiles)
	}
	if drop := r.BaseMem - r.FinalMem; drop > soakMaxMemAvailableDropKB {
		return fmt.Errorf("L1's MemAvailable dropped by %d KiB over %d runs (bound %d)", drop, soakCLIRuns-2, soakMaxMemAvailableDropKB)
	}
	return nil
}
