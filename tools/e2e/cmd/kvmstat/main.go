// Command kvmstat runs a VMM (vmm, or QEMU with -accel kvm) in L1 and
// reports what KVM counted for its VM: the per-VM statistics KVM keeps in
// debugfs (/sys/kernel/debug/kvm/<pid>-<fd>/: exits, io_exits,
// mmio_exits, irq_injections, halt_exits, ...) and, with -trace, how the
// exits split by exit code, I/O port and MMIO address, from histogram
// triggers on KVM's tracepoints. It makes no exits of its own in the VM,
// so the counts of two VMMs booting the same guest can be compared.
//
//	kvmstat [-trace] -- VMM ARGS...
//
// The VMM keeps kvmstat's stdin, stdout and stderr. When it ends, kvmstat
// prints one line "kvmstat: {JSON}" (see Report) on stderr and exits with
// the VMM's status. KVM removes a VM's debugfs directory when the VM is
// destroyed, so the statistics are sampled every 50 ms while it lives and
// the last sample is reported: the exits of the final 50 ms or less are
// missing. The reading is package kvmstats's. Histograms are global, so only one VM may run at a time.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/tools/kvmstats"
)

// Report is kvmstat's output.
type Report struct {
	Args    []string         `json:"args"`
	Status  int              `json:"status"`
	Stats   map[string]int64 `json:"stats"`   // the last sample of the VM's debugfs counters
	Samples int              `json:"samples"` // how many samples were taken
	// Exits, PIO and MMIO are the histograms of -trace: exit code (SVM
	// or VMX, as L1's KVM traced it), "port/dir" (dir 0 in, 1 out),
	// and "gpa/type" (type 0 read, 1 write, as kvm_mmio traces them) ->
	// count.
	Exits map[string]int64 `json:"exits,omitempty"`
	PIO   map[string]int64 `json:"pio,omitempty"`
	MMIO  map[string]int64 `json:"mmio,omitempty"`
	Error string           `json:"error,omitempty"`
}

const (
	debugfs = "/sys/kernel/debug"
	// Histogram triggers (Documentation/trace/histogram.rst) on the
	// tracepoints of arch/x86/kvm/trace.h.
	traceDir = debugfs + "/tracing/events/kvm"
)

// hists are the triggers -trace sets: tracepoint -> key spec.
var hists = []struct{ event, keys string }{
	{"kvm_exit", "exit_reason"},
	{"kvm_pio", "port,rw"},
	{"kvm_mmio", "gpa,type"},
}

func main() {
	trace := flag.Bool("trace", false, "also count exits by exit code, port and MMIO address (tracepoint histograms)")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: kvmstat [-trace] -- VMM ARGS...")
		os.Exit(2)
	}
	rep := Report{Args: args}
	paths := kvmstats.DefaultPaths()
	if err := paths.MountDebugfs(); err != nil {
		rep.Error = err.Error()
	}
	if *trace && rep.Error == "" {
		if err := setHists(true); err != nil {
			rep.Error = err.Error()
		}
	}
	rep.Status = run(paths, args, &rep)
	if *trace {
		rep.Exits, _ = readHist("kvm_exit")
		rep.PIO, _ = readHist("kvm_pio")
		rep.MMIO, _ = readHist("kvm_mmio")
		setHists(false)
	}
	b, _ := json.Marshal(rep)
	fmt.Fprintf(os.Stderr, "\nkvmstat: %s\n", b)
	os.Exit(rep.Status)
}

// run starts the VMM, samples its VM's counters until it exits and
// returns its status as a shell would.
func run(paths kvmstats.Paths, args []string, rep *Report) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		rep.Error = err.Error()
		return 127
	}
	// Signals meant for the VMM (the harness's ^C) reach it through the
	// terminal; kvmstat waits for it and reports.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			var ee *exec.ExitError
			switch {
			case err == nil:
				return 0
			case errors.As(err, &ee):
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ee.ExitCode()
			default:
				rep.Error = err.Error()
				return 1
			}
		case <-tick.C:
			// Nothing yet, or torn down under us: keep the
			// last sample.
			if s, _, err := paths.VMCounters(pid); err == nil {
				rep.Stats = s
				rep.Samples++
			}
		}
	}
}

// setHists adds (on) or removes the histogram triggers; removing also
// clears the counts.
func setHists(on bool) error {
	for _, h := range hists {
		spec := "hist:keys=" + h.keys + ":size=4096"
		if !on {
			spec = "!" + spec
		}
		p := filepath.Join(traceDir, h.event, "trigger")
		if err := os.WriteFile(p, []byte(spec), 0o644); err != nil && on {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// readHist parses a hist file: lines "{ key: v, key2: v2 } hitcount: n",
// keyed here by the values joined with "/". Numeric values are printed as
// the kernel prints them (decimal, or 0x.. with the .hex modifier).
func readHist(event string) (map[string]int64, error) {
	f, err := os.Open(filepath.Join(traceDir, event, "hist"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, n, ok := parseHistLine(sc.Text())
		if ok {
			out[key] += n
		}
	}
	return out, sc.Err()
}

func parseHistLine(line string) (string, int64, bool) {
	open := strings.Index(line, "{")
	closeIdx := strings.Index(line, "}")
	hit := strings.Index(line, "hitcount:")
	if open < 0 || closeIdx < open || hit < closeIdx {
		return "", 0, false
	}
	var vals []string
	for _, kv := range strings.Split(line[open+1:closeIdx], ",") {
		_, v, ok := strings.Cut(kv, ":")
		if !ok {
			return "", 0, false
		}
		vals = append(vals, strings.Join(strings.Fields(v), " "))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line[hit+len("hitcount:"):]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return strings.Join(vals, "/"), n, true
}
