// Command soak boots and tears down many tiny VMs, inside the nested
// suite's L1 guest, and reports whether anything leaked (issue 5: "no
// leaks"). It runs two loops and prints one JSON line for each:
//
//   - api: -api VMs, one after another in this process, through package
//     machine's Go API (New, Run, Close), each with a virtio-blk disk
//     the guest really reads (see guest.go). After -warmup VMs it
//     samples the process's open fds, threads, goroutines, memory
//     mappings and RSS, again after the last VM, and the test compares
//     the two.
//   - cli: -cli runs of `vmm run` (the binary at -vmm) on the same guest,
//     with -out, checking each exit status and what the runs leave in
//     L1: scratch disks in the temporary directory, L1's free memory.
//
// Each VM's status is the first byte of its disk, which the soak varies,
// so a wrong or stale status is caught. The program exits 0 when it could
// run the loops, whatever it measured: judging the numbers is the test's
// job; it exits 1 only when the loops could not run at all.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/machine"
)

// Sample is one measurement of this process and of L1.
type Sample struct {
	FDs        int `json:"fds"`
	Threads    int `json:"threads"`
	Goroutines int `json:"goroutines"`
	Maps       int `json:"maps"` // lines of /proc/self/maps: a leaked guest RAM mapping adds one
	RSSKB      int `json:"rss_kb"`
	VmSizeKB   int `json:"vm_size_kb"`
	// MemAvailableKB is L1's, for leaks outside this process (KVM's
	// per-VM kernel memory).
	MemAvailableKB int `json:"mem_available_kb"`
}

// Failure is one VM that did not end as expected.
type Failure struct {
	VM     int    `json:"vm"`
	Want   int    `json:"want"`
	Got    int    `json:"got"` // -1: no status
	Reason string `json:"reason"`
}

// APIReport is the api loop's JSON line.
type APIReport struct {
	Phase    string    `json:"phase"` // "api"
	VMs      int       `json:"vms"`
	Warmup   int       `json:"warmup"`
	OK       int       `json:"ok"`
	Failures []Failure `json:"failures,omitempty"`
	LogLines []string  `json:"log_lines,omitempty"` // device trouble vmm reported (none expected)
	Before   Sample    `json:"before"`              // before the first VM
	Base     Sample    `json:"base"`                // after the warm-up
	Final    Sample    `json:"final"`               // after the last VM
	// Peak is, per field, the worst after any VM past the warm-up: the
	// largest, and for MemAvailableKB the smallest.
	Peak      Sample `json:"peak"`
	ElapsedMS int64  `json:"elapsed_ms"`
}

// CLIReport is the cli loop's JSON line.
type CLIReport struct {
	Phase     string    `json:"phase"` // "cli"
	Runs      int       `json:"runs"`
	OK        int       `json:"ok"`
	Failures  []Failure `json:"failures,omitempty"`
	Leftovers []string  `json:"leftovers"` // scratch disks left in the temporary directory
	OutFiles  []string  `json:"out_files"` // what -out brought back (nothing: the guest writes no tar)
	// MemAvailableKB is L1's after the first two runs (the page cache
	// and slabs warmed up) and after the last.
	BaseMemAvailableKB  int   `json:"base_mem_available_kb"`
	FinalMemAvailableKB int   `json:"final_mem_available_kb"`
	ElapsedMS           int64 `json:"elapsed_ms"`
}

// Limits of one VM.
const (
	vmTimeout = 90 * time.Second // per VM; it normally takes well under a second
	memSize   = 64 << 20         // above 16 MiB + init_size, where vmm puts the initrd
	diskSize  = 1 << 20
	// maxFailures stops a loop early: past a few, every VM is failing
	// the same way and the rest only costs time.
	maxFailures = 5
)

func main() {
	dir := flag.String("dir", "/tmp/soak", "working directory (created)")
	apiVMs := flag.Int("api", 100, "VMs to boot through the Go API")
	warmup := flag.Int("warmup", 10, "API VMs before the baseline sample")
	cliRuns := flag.Int("cli", 20, "`vmm run` invocations")
	vmmPath := flag.String("vmm", "/vmm", "vmm binary for the CLI runs")
	flag.Parse()
	if err := soak(*dir, *apiVMs, *warmup, *cliRuns, *vmmPath); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func soak(dir string, apiVMs, warmup, cliRuns int, vmmPath string) error {
	if warmup >= apiVMs && apiVMs > 0 {
		return fmt.Errorf("-warmup %d must be less than -api %d", warmup, apiVMs)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kernel := filepath.Join(dir, "kernel")
	if err := os.WriteFile(kernel, testkernel.Build(testkernel.Options{Entry64: guestCode()}), 0o644); err != nil {
		return err
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, diskSize), 0o644); err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	if apiVMs > 0 {
		rep, err := apiLoop(kernel, disk, apiVMs, warmup)
		if err != nil {
			return err
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	if cliRuns > 0 {
		rep, err := cliLoop(dir, kernel, disk, vmmPath, cliRuns)
		if err != nil {
			return err
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	return nil
}

// statusFor is VM i's expected status: never 0 (the zero RAM a broken
// read leaves), cycling so consecutive VMs differ.
func statusFor(i int) uint8 { return uint8(1 + i%200) }

// setStatus puts the status the next VM must report on its disk.
func setStatus(disk string, s uint8) error {
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte{s}, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func apiLoop(kernel, disk string, n, warmup int) (APIReport, error) {
	rep := APIReport{Phase: "api", VMs: n, Warmup: warmup}
	// Device goroutines log too, hence the lock.
	var logMu sync.Mutex
	var logs []string
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		if len(logs) < 20 {
			logs = append(logs, fmt.Sprintf(format, args...))
		}
	}
	start := time.Now()
	rep.Before = sample(true)
	for i := 0; i < n; i++ {
		want := statusFor(i)
		if err := setStatus(disk, want); err != nil {
			return rep, err
		}
		var console bytes.Buffer
		cfg := machine.Config{
			Kernel: kernel, Cmdline: "console=ttyS0", MemSize: memSize, CPUs: 1,
			Console: &console, Disks: []machine.Disk{{Path: disk}}, Logf: logf,
			// The soak's guest drives virtio-mmio's registers itself
			// (guest.go): a kernel without PCI.
			Transport: machine.VirtioMMIO,
		}
		got, reason := runVM(cfg)
		if got == int(want) {
			rep.OK++
		} else {
			rep.Failures = append(rep.Failures, Failure{VM: i, Want: int(want), Got: got, Reason: reason})
			if len(rep.Failures) >= maxFailures {
				break
			}
		}
		switch {
		case i == warmup-1:
			rep.Base = sample(true)
			rep.Peak = rep.Base
		case i >= warmup:
			rep.Peak = worst(rep.Peak, sample(false))
		}
	}
	rep.Final = sample(true)
	logMu.Lock()
	rep.LogLines = logs
	logMu.Unlock()
	rep.ElapsedMS = time.Since(start).Milliseconds()
	return rep, nil
}

// runVM builds, runs and closes one VM and returns its exit status (-1
// for none) and, when something went wrong, why.
func runVM(cfg machine.Config) (int, string) {
	m, err := machine.New(cfg)
	if err != nil {
		return -1, "new: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), vmTimeout)
	err = m.Run(ctx)
	cancel()
	reason := m.Reason()
	status, ok := m.ExitStatus()
	if cerr := m.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	switch {
	case err != nil:
		return -1, fmt.Sprintf("run (%v): %v", reason, err)
	case !ok:
		return -1, fmt.Sprintf("stopped (%v) without an exit status", reason)
	}
	return status, ""
}

func cliLoop(dir, kernel, disk, vmmPath string, runs int) (CLIReport, error) {
	rep := CLIReport{Phase: "cli", Runs: runs}
	out := filepath.Join(dir, "out")
	tmp := os.TempDir()
	start := time.Now()
	for i := 0; i < runs; i++ {
		want := statusFor(i + 7) // not the api loop's first values
		if err := setStatus(disk, want); err != nil {
			return rep, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), vmTimeout)
		cmd := exec.CommandContext(ctx, vmmPath, "run", "-virtio-transport", "mmio", "-kernel", kernel, "-disk", disk, "-out", out, "-timeout", "60s", "--", "true")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		err := cmd.Run()
		cancel()
		got := 0
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			got = ee.ExitCode()
		case err != nil:
			return rep, fmt.Errorf("run %s: %w", vmmPath, err)
		}
		if got == int(want) {
			rep.OK++
		} else {
			rep.Failures = append(rep.Failures, Failure{VM: i, Want: int(want), Got: got, Reason: lastLines(stderr.String(), 5)})
			if len(rep.Failures) >= maxFailures {
				break
			}
		}
		if i == 1 {
			rep.BaseMemAvailableKB = sample(true).MemAvailableKB
		}
	}
	rep.FinalMemAvailableKB = sample(true).MemAvailableKB
	rep.ElapsedMS = time.Since(start).Milliseconds()
	var err error
	if rep.Leftovers, err = filepath.Glob(filepath.Join(tmp, "vmm-out-*")); err != nil {
		return rep, err
	}
	rep.Leftovers = append([]string{}, rep.Leftovers...)
	entries, err := os.ReadDir(out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return rep, err
	}
	rep.OutFiles = []string{}
	for _, e := range entries {
		rep.OutFiles = append(rep.OutFiles, e.Name())
	}
	return rep, nil
}

// sample measures the process; settle first collects garbage and returns
// freed memory to the kernel, so RSS reflects what is still referenced.
func sample(settle bool) Sample {
	if settle {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var s Sample
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.FDs = len(fds) - 1 // without the directory ReadDir itself had open
	}
	s.Goroutines = runtime.NumGoroutine()
	status := procFields("/proc/self/status")
	s.Threads = status["Threads"]
	s.RSSKB = status["VmRSS"]
	s.VmSizeKB = status["VmSize"]
	s.MemAvailableKB = procFields("/proc/meminfo")["MemAvailable"]
	if b, err := os.ReadFile("/proc/self/maps"); err == nil {
		s.Maps = bytes.Count(b, []byte("\n"))
	}
	return s
}

// procFields reads the "Name: value [kB]" lines of a /proc file.
func procFields(path string) map[string]int {
	out := map[string]int{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.Atoi(f[0]); err == nil {
			out[name] = v
		}
	}
	return out
}

func worst(a, b Sample) Sample {
	return Sample{
		FDs: max(a.FDs, b.FDs), Threads: max(a.Threads, b.Threads), Goroutines: max(a.Goroutines, b.Goroutines),
		Maps: max(a.Maps, b.Maps), RSSKB: max(a.RSSKB, b.RSSKB), VmSizeKB: max(a.VmSizeKB, b.VmSizeKB),
		MemAvailableKB: min(a.MemAvailableKB, b.MemAvailableKB),
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
