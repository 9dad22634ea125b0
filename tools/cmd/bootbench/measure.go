package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/pty"
	"github.com/vmm-dev/vmm/tools/container"
)

// readyMarker is what the guest's init (guest/cmd/vmm-init) prints once
// its userland is up, in a VM and in the container alike.
const readyMarker = "vmm-guest: ready"

// Sample is one boot of one system.
type Sample struct {
	System string `json:"system"`
	Round  int    `json:"round"`
	// ReadyMS is from just before the process (or container) was
	// started to the ready marker on its output, as the harness saw it:
	// the one figure every system has.
	ReadyMS float64 `json:"ready_ms"`
	// Phases are the ends of the system's phases in ms, each from the
	// same origin as ReadyMS (see phasesOf).
	Phases map[string]float64 `json:"phases,omitempty"`
	// L1Boot is which L1 boot the sample comes from (nested mode).
	L1Boot int `json:"l1_boot,omitempty"`
	// Cost is what the boot cost up to the marker (VMs that stay up
	// after it: not vmm-restore's job, which ends at once); CostError
	// says why it is missing.
	Cost      *BootCost `json:"cost,omitempty"`
	CostError string    `json:"cost_error,omitempty"`
}

// Kind is how a system is started and what it reports.
type Kind int

const (
	// KindVMM is vmm: powered off through the guest's shell so that
	// its -boot-timer report, printed at exit, is complete.
	KindVMM Kind = iota
	// KindPeer is another VMM: killed once ready, no phases.
	KindPeer
	// KindContainer is the initramfs started with package container.
	KindContainer
	// KindJob is `vmm run -snapshot`: a restored guest whose job
	// prints the marker and ends, and vmm with it.
	KindJob
)

// System is one thing to boot.
type System struct {
	Name   string
	Kind   Kind
	Args   []string // VMMs
	RAMMiB int      // VMMs: guest RAM, told apart from the VMM's own memory
	// Marker ends the boot when seen on the console; "" is readyMarker.
	Marker string
	// ExitLine, if set, means the guest powers itself off after the
	// marker and prints this line doing so (distro.PowerOffLine): the
	// harness waits for that (untimed) before the next boot, and a
	// guest that does not within selfPoweroffTimeout fails the boot.
	ExitLine string
	// EmptyDir is emptied before each boot, untimed: a cold kernel
	// cache. FillsDir is a warm one, which the first boot fills.
	EmptyDir, FillsDir string
	Config             container.Config // containers (Stdout/Stderr are set per boot)
}

// bootTimeout bounds one boot; nested boots under TCG take seconds, a
// verbose one up to half a minute.
const bootTimeout = 3 * time.Minute

// exitTimeout bounds the L1 side's exit after its last sample.
const exitTimeout = time.Minute

// poweroffTimeout bounds vmm's poweroff after the marker, and then its
// exit after SIGTERM.
const poweroffTimeout = 20 * time.Second

// selfPoweroffTimeout bounds a distro's own shutdown after its marker:
// systemd stopping its services, nested.
const selfPoweroffTimeout = 2 * time.Minute

// exitStatus is a process's status as a shell reports it (128+signal).
func exitStatus(err error) int {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// boot starts s once and measures it.
func boot(ctx context.Context, s System) (Sample, error) {
	switch s.Kind {
	case KindContainer:
		return bootContainer(ctx, s)
	case KindJob:
		return bootJob(ctx, s)
	default:
		return bootVM(ctx, s)
	}
}

// markerWatcher scans output for a marker (the ready marker), recording when it
// appeared, and keeps the output's tail for error messages.
type markerWatcher struct {
	marker []byte
	ready  chan time.Time
	mu     sync.Mutex
	tail   []byte
}

func newMarkerWatcher(marker string) *markerWatcher {
	return &markerWatcher{marker: []byte(marker), ready: make(chan time.Time, 1)}
}

// seen takes the marker's time if the watcher has sent it, without
// waiting. A process that prints the marker and exits at once makes its
// exit and the marker ready together; the marker, buffered before the
// watcher saw the end of the output, is there if it came at all.
func (w *markerWatcher) seen() (time.Time, bool) {
	select {
	case t := <-w.ready:
		return t, true
	default:
		return time.Time{}, false
	}
}

// watch reads r to its end. The marker is searched in lines, which a
// serial console ends with "\r\n".
func (m *markerWatcher) watch(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	found := false
	for {
		line, err := br.ReadSlice('\n')
		if !found && bytes.Contains(line, m.marker) {
			found = true
			m.ready <- time.Now()
		}
		m.keep(line)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return
		}
	}
}

func (m *markerWatcher) keep(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tail = append(m.tail, b...)
	if len(m.tail) > 4096 {
		m.tail = append(m.tail[:0], m.tail[len(m.tail)-2048:]...)
	}
}

func (m *markerWatcher) Tail() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return string(m.tail)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func bootVM(ctx context.Context, s System) (Sample, error) {
	if s.EmptyDir != "" {
		if err := os.RemoveAll(s.EmptyDir); err != nil {
			return Sample{}, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	cmd := exec.Command(s.Args[0], s.Args[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Sample{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Sample{}, err
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := newMarkerWatcher(cmp.Or(s.Marker, readyMarker))
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return Sample{}, fmt.Errorf("%s: start: %w", s.Name, err)
	}
	// Wait closes stdout once the process is gone, so it must come after
	// the watcher has read the console to its end: a guest that dies at
	// once would otherwise be reported without its last words.
	watched := make(chan struct{})
	go func() { w.watch(stdout); close(watched) }()
	exited := make(chan error, 1)
	go func() { <-watched; exited <- cmd.Wait() }()
	fail := func(err error) (Sample, error) {
		cmd.Process.Kill()
		<-exited
		return Sample{}, fmt.Errorf("%s: %w\n--- console (tail) ---\n%s\n--- stderr (tail) ---\n%s", s.Name, err, lastLines(w.Tail(), 15), lastLines(stderr.String(), 15))
	}
	timer := time.NewTimer(bootTimeout)
	defer timer.Stop()
	var ready time.Time
	gone := false // the process ended with the marker: nothing to sample
	select {
	case ready = <-w.ready:
	case err := <-exited:
		exited <- err
		gone = true
		var ok bool
		if ready, ok = w.seen(); !ok {
			return fail(fmt.Errorf("exited before the ready marker: %v", err))
		}
	case <-timer.C:
		return fail(fmt.Errorf("no ready marker within %v", bootTimeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	// A cached system whose vmm could not fill its cache (no vmm-unpack
	// beside it, a cache it may not write) boots the bzImage, which
	// must not be timed under the cached system's name.
	if dir := cmp.Or(s.EmptyDir, s.FillsDir); dir != "" {
		if entries, _ := filepath.Glob(filepath.Join(dir, "*.vmlinux")); len(entries) == 0 {
			return fail(fmt.Errorf("ready with no entry in its kernel cache %s: vmm booted the bzImage, not the cached vmlinux (is vmm-unpack beside vmm?)", dir))
		}
	}
	smp := Sample{System: s.Name, ReadyMS: ms(ready.Sub(t0))}
	if gone {
		smp.CostError = "the VMM had exited when its marker was seen"
	} else if c, err := sampleCost(cmd.Process.Pid, s.RAMMiB); err != nil {
		smp.CostError = err.Error()
	} else {
		smp.Cost = c
	}
	if s.Kind != KindVMM {
		if s.ExitLine != "" {
			// The guest powers itself off; one that does not, or dies
			// on the way, leaves its disk unclean for the next boot,
			// so the boot fails (and is tried again) rather than
			// quietly skewing the next sample.
			select {
			case err := <-exited:
				exited <- err
				if err != nil {
					return fail(fmt.Errorf("exited with %v after the marker", err))
				}
				if !strings.Contains(w.Tail(), s.ExitLine) {
					return fail(fmt.Errorf("exited after the marker without printing %q", s.ExitLine))
				}
				return smp, nil
			case <-time.After(selfPoweroffTimeout):
				return fail(fmt.Errorf("still running %v after the marker; it should have powered off", selfPoweroffTimeout))
			}
		}
		cmd.Process.Kill()
		<-exited
		return smp, nil
	}
	// Power off through the guest's shell, so the boot timer sees the
	// poweroff and vmm's exit, then prints its report. The shell starts
	// just after the marker; should the line reach the console before
	// anyone reads it and be lost, it is typed again. A guest that
	// halts instead (a kernel whose ACPI is not working) is stopped
	// with SIGTERM, after which vmm prints its report all the same.
	io.WriteString(stdin, "poweroff\n")
	deadline := time.NewTimer(poweroffTimeout)
	defer deadline.Stop()
	retype := time.NewTicker(5 * time.Second)
	defer retype.Stop()
	terminated := false
wait:
	for {
		select {
		case err := <-exited:
			if err != nil && !(terminated && exitStatus(err) == 128+int(syscall.SIGTERM)) {
				return fail(fmt.Errorf("vmm exited with %v after poweroff", err))
			}
			break wait
		case <-retype.C:
			io.WriteString(stdin, "poweroff\n")
		case <-deadline.C:
			if terminated {
				return fail(fmt.Errorf("vmm still running %v after SIGTERM", poweroffTimeout))
			}
			terminated = true
			cmd.Process.Signal(syscall.SIGTERM)
			deadline.Reset(poweroffTimeout)
		}
	}
	stamps, err := report.ParseReport(strings.NewReader(stderr.String()))
	if err != nil {
		return fail(err)
	}
	smp.Phases = phasesOf(stamps, smp.ReadyMS)
	return smp, nil
}

// phasesOf turns vmm's boot-timer stamps (from vmm's own start) into
// phase ends from the harness's origin (just before it started vmm). The
// offset between the two clocks is estimated from the ready marker: the
// harness saw it ReadyMS after its origin, vmm stamped "ready" (the port
// write just before the marker's printing) at its own offset; what is
// left is exec and Go runtime start plus the console's latency, and it
// is reported as a phase of its own, "exec+console".
func phasesOf(stamps []report.Stamp, readyMS float64) map[string]float64 {
	if len(stamps) == 0 {
		return nil
	}
	byName := map[string]float64{}
	for _, s := range stamps {
		byName[s.Phase.String()] = ms(s.Since)
	}
	r, ok := byName[guestabi.Ready.String()]
	if !ok {
		return nil // a guest that stamps nothing: the total has to do
	}
	offset := readyMS - r
	if offset < 0 {
		offset = 0
	}
	out := map[string]float64{"exec+console": offset}
	for n, v := range byName {
		out[n] = v + offset
	}
	return out
}

func bootContainer(ctx context.Context, s System) (Sample, error) {
	c := s.Config
	master, term, err := pty.Open()
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w", s.Name, err)
	}
	defer master.Close()
	var stderr syncBuffer // stays empty: the terminal carries both streams
	c.Stdin, c.Stdout, c.Stderr = term, term, term
	w := newMarkerWatcher(readyMarker)
	go w.watch(master)
	ct, err := container.Start(c)
	term.Close()
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w", s.Name, err)
	}
	defer func() {
		ct.Kill()
		ct.Wait()
	}()
	timer := time.NewTimer(bootTimeout)
	defer timer.Stop()
	var ready time.Time
	select {
	case ready = <-w.ready:
	case <-ct.Done():
		return Sample{}, fmt.Errorf("%s: exited before the ready marker: %v\n%s\n%s", s.Name, ct.Wait(), lastLines(w.Tail(), 15), lastLines(stderr.String(), 15))
	case <-timer.C:
		return Sample{}, fmt.Errorf("%s: no ready marker within %v\n%s", s.Name, bootTimeout, lastLines(w.Tail(), 15))
	case <-ctx.Done():
		return Sample{}, ctx.Err()
	}
	smp := Sample{System: s.Name, ReadyMS: ms(ready.Sub(ct.StartedAt))}
	smp.Phases = map[string]float64{
		"container-setup": ms(ct.ExecAt.Sub(ct.StartedAt)),
		"ready":           smp.ReadyMS,
	}
	if cg := ct.Cgroup(); cg != "" {
		if err := checkCgroup(cg, c.Limits); err != nil {
			return Sample{}, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return smp, nil
}

// checkCgroup confirms the limits are in force while the container runs:
// the comparison is only fair if they are.
func checkCgroup(dir string, l container.Limits) error {
	read := func(f string) string {
		b, _ := os.ReadFile(dir + "/" + f)
		return strings.TrimSpace(string(b))
	}
	if l.MemoryBytes > 0 && read("memory.max") != fmt.Sprint(l.MemoryBytes) {
		return fmt.Errorf("cgroup %s: memory.max %q, want %d", dir, read("memory.max"), l.MemoryBytes)
	}
	if l.CPUs > 0 && read("cpu.max") != fmt.Sprintf("%d 100000", l.CPUs*100000) {
		return fmt.Errorf("cgroup %s: cpu.max %q", dir, read("cpu.max"))
	}
	if read("cgroup.procs") == "" {
		return fmt.Errorf("cgroup %s: no processes in it", dir)
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
