package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
)

// vmm-restore is vmm restoring a snapshot of the default guest waiting
// for its job (`vmm snapshot`, made once per machine, outside the timed
// rounds, as a CI runner would make it once per image) and running
// restoreJob, which prints the ready marker: the figure is from starting
// vmm to the job's first output, the restored counterpart of a cold boot
// to init's marker.

// restoreJob is the job every restore runs: its first act prints the
// ready marker the other systems' init prints, through the job's stdout.
var restoreJob = []string{"echo", readyMarker}

// snapshotDir is where the snapshot goes under the work directory.
func snapshotDir(l Layout) string { return filepath.Join(l.WorkDir, "snapshot") }

// snapshotTimeout bounds `vmm snapshot`: one boot, then writing the
// guest's RAM.
const snapshotTimeout = 2 * bootTimeout

// makeSnapshot runs `vmm snapshot` of the benchmark's guest once and
// returns how long it took, from starting vmm to its exit.
func makeSnapshot(ctx context.Context, l Layout, g Guest) (time.Duration, error) {
	dir := snapshotDir(l)
	if err := os.RemoveAll(dir); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	args := append([]string{"snapshot"}, vmmGuestArgs(l, l.CloudKernel, g)...)
	args = append(args, "-o", dir)
	cmd := exec.CommandContext(ctx, l.VMM, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("vmm %s: %w\n%s", strings.Join(args, " "), err, lastLines(out.String(), 15))
	}
	return time.Since(t0), nil
}

// vmmGuestArgs are the flags that make vmm's guest the benchmark's: the
// cold boot's, `vmm snapshot`'s and (for memory) the cold job's alike.
func vmmGuestArgs(l Layout, kernel string, g Guest) []string {
	args := []string{"-kernel", kernel, "-initrd", l.Initrd, "-m", strconv.Itoa(g.MiB), "-smp", strconv.Itoa(g.CPUs), "-append", cmdlineAppend}
	if l.BootTimer {
		args = append(args, "-boot-timer")
	}
	return args
}

// restoreArgs is `vmm run -snapshot` of the benchmark's snapshot with
// job as its command.
func restoreArgs(l Layout, g Guest, job ...string) []string {
	args := []string{l.VMM, "run", "-snapshot", snapshotDir(l), "-m", strconv.Itoa(g.MiB), "-smp", strconv.Itoa(g.CPUs)}
	if l.BootTimer {
		args = append(args, "-boot-timer")
	}
	return append(append(args, "--"), job...)
}

// bootJob runs a restored job (restoreJob), timed to the marker on its
// stdout. The job ends by itself, and so does vmm, with the job's status
// (0) and, with -boot-timer, its report on stderr.
func bootJob(ctx context.Context, s System) (Sample, error) {
	cmd := exec.Command(s.Args[0], s.Args[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Sample{}, err
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := newMarkerWatcher(readyMarker)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return Sample{}, fmt.Errorf("%s: start: %w", s.Name, err)
	}
	watched := make(chan struct{})
	go func() { w.watch(stdout); close(watched) }()
	type exit struct {
		err error
		at  time.Time
	}
	exited := make(chan exit, 1)
	go func() { <-watched; err := cmd.Wait(); exited <- exit{err, time.Now()} }()
	fail := func(err error) (Sample, error) {
		cmd.Process.Kill()
		<-exited
		return Sample{}, fmt.Errorf("%s: %w\n--- stdout (tail) ---\n%s\n--- stderr (tail) ---\n%s", s.Name, err, lastLines(w.Tail(), 15), lastLines(stderr.String(), 15))
	}
	timer := time.NewTimer(bootTimeout)
	defer timer.Stop()
	var ready time.Time
	select {
	case ready = <-w.ready:
	case e := <-exited:
		exited <- e
		var ok bool
		if ready, ok = w.seen(); !ok {
			return fail(fmt.Errorf("exited before the ready marker: %v", e.err))
		}
	case <-timer.C:
		return fail(fmt.Errorf("no ready marker within %v", bootTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	smp := Sample{System: s.Name, ReadyMS: ms(ready.Sub(t0))}
	timer.Reset(poweroffTimeout)
	var e exit
	select {
	case e = <-exited:
	case <-timer.C:
		return fail(fmt.Errorf("vmm still running %v after the job's marker", poweroffTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if e.err != nil {
		exited <- e
		return fail(fmt.Errorf("vmm exited with %v", e.err))
	}
	stamps, err := report.ParseReport(strings.NewReader(stderr.String()))
	if err != nil {
		exited <- e
		return fail(err)
	}
	smp.Phases = restorePhases(stamps, smp.ReadyMS, ms(e.at.Sub(t0)))
	return smp, nil
}

// restorePhases turns a restored vmm's boot-timer stamps into phase ends
// from the harness's origin. A restored guest stamps nothing (its init
// stamped before the snapshot), so the clocks are matched at vmm's exit
// instead of at the ready stamp: the harness saw the process end exitMS
// after its origin, vmm stamped vmm-exit at its own offset, and what is
// left (exec and Go start, plus the exit's latency) is "exec+console".
// "restore" ends at the first KVM_RUN: the snapshot opened and checked,
// RAM mapped from it, the VM and devices set to the saved state. The
// rest, to the marker, is the guest taking the job and running it.
func restorePhases(stamps []report.Stamp, readyMS, exitMS float64) map[string]float64 {
	var run, exit float64
	var haveRun, haveExit bool
	for _, s := range stamps {
		switch s.Phase.String() {
		case "first-kvm-run":
			run, haveRun = ms(s.Since), true
		case "vmm-exit":
			exit, haveExit = ms(s.Since), true
		}
	}
	if !haveRun || !haveExit {
		return nil
	}
	offset := max(exitMS-exit, 0)
	return map[string]float64{"exec+console": offset, "restore": run + offset, "ready": readyMS}
}

// MemoryReport is the memory of restored VMs running at once against a
// cold-booted one, all idle in their job (cat, reading stdin), as the
// proportional set size of each vmm process: pages the restored VMs map
// from the snapshot's memory file (MAP_PRIVATE) and never wrote are
// shared, and PSS divides each shared page among its mappers.
type MemoryReport struct {
	RestoredVMs    int     `json:"restored_vms"`
	RestoredPSSKiB []int64 `json:"restored_pss_kib,omitempty"` // each vmm process
	PerRestoredMiB float64 `json:"per_restored_vm_mib,omitempty"`
	ColdPSSKiB     int64   `json:"cold_pss_kib,omitempty"`
	ColdMiB        float64 `json:"cold_vm_mib,omitempty"`
	// ColdPerRestored is the cold VM's PSS over a restored one's.
	ColdPerRestored float64 `json:"cold_per_restored,omitempty"`
	// Error says why the figure is missing, when it is.
	Error string `json:"error,omitempty"`
}

// summarize fills the per-VM figures from the PSS samples.
func (m *MemoryReport) summarize() {
	if len(m.RestoredPSSKiB) == 0 || m.ColdPSSKiB <= 0 {
		return
	}
	var sum int64
	for _, v := range m.RestoredPSSKiB {
		sum += v
	}
	m.PerRestoredMiB = float64(sum) / float64(len(m.RestoredPSSKiB)) / 1024
	m.ColdMiB = float64(m.ColdPSSKiB) / 1024
	if m.PerRestoredMiB > 0 {
		m.ColdPerRestored = m.ColdMiB / m.PerRestoredMiB
	}
}

// parsePSS reads the Pss line of /proc/PID/smaps_rollup, in KiB.
func parsePSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Pss:" {
			continue
		}
		if len(f) != 3 || f[2] != "kB" {
			return 0, fmt.Errorf("smaps_rollup: malformed line %q", sc.Text())
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("smaps_rollup: malformed line %q", sc.Text())
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("smaps_rollup: no Pss line")
}

func pssOf(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	v, err := parsePSS(f)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return v, nil
}

// idleMarker is the line each memory job echoes back once it runs: the
// job is cat, and the harness writes the line to its stdin.
const idleMarker = "bootbench-idle"

// idleVM is a vmm whose job (cat) idles reading its stdin.
type idleVM struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	w      *markerWatcher
	stderr *syncBuffer
	exited chan error
}

func startIdle(args []string) (*idleVM, error) {
	v := &idleVM{cmd: exec.Command(args[0], args[1:]...), w: newMarkerWatcher(idleMarker), stderr: &syncBuffer{}, exited: make(chan error, 1)}
	v.cmd.Stderr = v.stderr
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := v.cmd.Start(); err != nil {
		return nil, err
	}
	watched := make(chan struct{})
	go func() { v.w.watch(stdout); close(watched) }()
	go func() { <-watched; v.exited <- v.cmd.Wait() }()
	io.WriteString(v.stdin, idleMarker+"\n")
	return v, nil
}

// waitIdle waits until the job echoed the marker, that is runs.
func (v *idleVM) waitIdle(ctx context.Context) error {
	select {
	case <-v.w.ready:
		return nil
	case err := <-v.exited:
		v.exited <- err
		return fmt.Errorf("exited before its job ran: %v\n%s", err, lastLines(v.stderr.String(), 15))
	case <-ctx.Done():
		return fmt.Errorf("its job did not run: %w\n%s", ctx.Err(), lastLines(v.stderr.String(), 15))
	}
}

// stop ends the job by closing its stdin, and vmm with it; a vmm that
// does not exit is killed.
func (v *idleVM) stop() {
	v.stdin.Close()
	select {
	case <-v.exited:
	case <-time.After(poweroffTimeout):
		v.cmd.Process.Kill()
		<-v.exited
	}
}

// measureMemory runs n restored VMs at once, each idle in its job, and
// reads each vmm's PSS once all run; then one cold-booted VM the same way.
func measureMemory(ctx context.Context, l Layout, g Guest, n int) MemoryReport {
	rep := MemoryReport{RestoredVMs: n}
	fail := func(what string, err error) MemoryReport {
		rep.Error = fmt.Sprintf("%s: %v", what, err)
		return rep
	}
	pss, err := idlePSS(ctx, n, func() []string { return restoreArgs(l, g, "cat") })
	if err != nil {
		return fail(fmt.Sprintf("%d restored VMs", n), err)
	}
	rep.RestoredPSSKiB = pss
	cold, err := idlePSS(ctx, 1, func() []string {
		return append(append([]string{l.VMM, "run"}, vmmGuestArgs(l, l.CloudKernel, g)...), "--", "cat")
	})
	if err != nil {
		return fail("cold-booted VM", err)
	}
	rep.ColdPSSKiB = cold[0]
	rep.summarize()
	return rep
}

// idlePSS starts n vmm processes at once, waits until every job runs and
// returns each process's PSS, read then, before any is stopped.
func idlePSS(ctx context.Context, n int, args func() []string) ([]int64, error) {
	var vms []*idleVM
	defer func() {
		for _, v := range vms {
			v.stop()
		}
	}()
	for range n {
		v, err := startIdle(args())
		if err != nil {
			return nil, err
		}
		vms = append(vms, v)
	}
	// One deadline for all: they boot side by side, on few CPUs.
	ctx, cancel := context.WithTimeout(ctx, bootTimeout*time.Duration(max(1, n/2)))
	defer cancel()
	for i, v := range vms {
		if err := v.waitIdle(ctx); err != nil {
			return nil, fmt.Errorf("VM %d of %d: %w", i+1, n, err)
		}
	}
	var out []int64
	for _, v := range vms {
		p, err := pssOf(v.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
