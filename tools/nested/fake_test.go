package nested

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// The test binary doubles as a fake QEMU so that the host side (sockets,
// protocol, watchdog, retry) is tested without booting anything.
const fakeQEMUEnv = "NESTED_FAKE_QEMU"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeQEMUEnv); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeQEMU plays agent on fd 4 and job console on fd 3. Mode "freeze" goes
// silent after starting a job, as a frozen L1 does; "freeze-once:FILE"
// freezes only if FILE does not exist yet (creating it), so a retry works.
func fakeQEMU(mode string, args []string) int {
	con := os.NewFile(qemuConsoleFD, "con")
	ctl := os.NewFile(qemuControlFD, "ctl")
	klog := ""
	for i, a := range args {
		if p, ok := strings.CutPrefix(a, "file,id=klog,path="); ok && i > 0 {
			klog = strings.ReplaceAll(p, ",,", ",")
			os.WriteFile(klog, []byte("fake kernel: booted\n"), 0o644)
		}
	}
	freeze := mode == "freeze"
	if freeze {
		go fakeMonitor(os.NewFile(qemuMonitorFD, "mon"), nil)
	}
	// "recover" goes silent like "freeze" until its monitor is asked,
	// then carries on, as an L1 stalled rather than frozen would.
	var resume chan struct{}
	if mode == "recover" {
		freeze = true
		resume = make(chan struct{})
		go fakeMonitor(os.NewFile(qemuMonitorFD, "mon"), resume)
	}
	if f, ok := strings.CutPrefix(mode, "freeze-once:"); ok {
		if _, err := os.Stat(f); err != nil {
			freeze = true
			os.WriteFile(f, nil, 0o644)
		}
	}
	// "held" is an L1 whose CPU 1 the emulator holds inside its guest:
	// its time counters stand still, its NMI backtrace is in KVM_RUN,
	// and a watched command's output stops until the emulator lets go
	// (fakeWatched). "held-once:" is held only if FILE does not exist
	// yet (creating it), so a retry works. "stall" stops a watched
	// command's output with every CPU ticking, as a hang of vmm's own
	// would.
	var held atomic.Bool
	held.Store(mode == "held")
	if f, ok := strings.CutPrefix(mode, "held-once:"); ok {
		if _, err := os.Stat(f); err != nil {
			held.Store(true)
			os.WriteFile(f, nil, 0o644)
		}
		mode = "beat"
	}
	stall := held.Load() || mode == "stall"
	send := func(m proto.Msg) {
		b, _ := proto.Encode(m)
		ctl.Write(b)
	}
	send(proto.Msg{Op: proto.OpHello, KVM: true, Kernel: "fake"})
	if mode == "beat" || mode == "held" || mode == "stall" {
		// A live L1: beats, and answers requests, with or without a
		// job; a watched command's run is quiet on the control channel
		// for longer than fakeConfig's freeze timeout.
		go func() {
			for {
				time.Sleep(30 * time.Millisecond)
				send(proto.Msg{Op: proto.OpBeat})
			}
		}()
	}
	r := proto.NewReader(ctl)
	for {
		m, err := r.Next()
		if err != nil {
			return 0
		}
		switch m.Op {
		case proto.OpRun:
			send(proto.Msg{Op: proto.OpStarted, ID: m.ID, PID: 42})
			fmt.Fprintf(con, "job output\r\n")
			if mode == "beat" || mode == "held" || mode == "stall" {
				continue // a quiet job in a live L1
			}
			if resume != nil {
				<-resume
			} else if freeze {
				// A frozen L1: nothing, ever, until killed. Not select{}:
				// with no other goroutine the runtime calls that a
				// deadlock and exits, which is not a freeze.
				time.Sleep(time.Hour)
			}
			fmt.Fprintf(con, "done\r\n")
			send(proto.Msg{Op: proto.OpExit, ID: m.ID, Code: 5})
		case proto.OpExec:
			if len(m.Args) > 1 && m.Args[0] == "watched" {
				go fakeWatched(m, stall, &held, send)
				continue
			}
			send(proto.Msg{Op: proto.OpResult, ID: m.ID, Code: 1, Output: []byte("exec " + strings.Join(m.Args, " "))})
		case proto.OpExecAside:
			send(proto.Msg{Op: proto.OpResult, ID: m.ID, Code: 1, Output: []byte("aside " + strings.Join(m.Args, " "))})
		case proto.OpSysrq:
			if held.Load() {
				// What sysrq l printed when the emulator held CPU 1.
				f, _ := os.OpenFile(klog, os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString(strings.ReplaceAll(klogSysrqHeld, "\n", "\r\n"))
				f.Close()
			}
			send(proto.Msg{Op: proto.OpResult, ID: m.ID})
		case proto.OpCPUTimes:
			// Held: CPU 1's counters stand still while CPU 0's advance.
			times := "cpu0 1 2\ncpu1 5 6\n" + proto.CPUTimesSep + "cpu0 2 2\ncpu1 5 7\n"
			if held.Load() {
				times = "cpu0 1 2\ncpu1 5 6\n" + proto.CPUTimesSep + "cpu0 2 2\ncpu1 5 6\n"
			}
			send(proto.Msg{Op: proto.OpResult, ID: m.ID, Output: []byte(times)})
		case proto.OpReadFile:
			// The fake L1's files are the host's.
			if b, err := os.ReadFile(m.Args[0]); err != nil {
				send(proto.Msg{Op: proto.OpError, ID: m.ID, Error: err.Error()})
			} else {
				send(proto.Msg{Op: proto.OpResult, ID: m.ID, Output: b})
			}
		case proto.OpPoweroff:
			return 0
		}
	}
}

// fakeWatchedStall is how long fakeWatched's stalled command stands
// still before its -timeout ends it: longer than the tests' Stall, and
// than a look (finishProbe waits a second).
const fakeWatchedStall = 1500 * time.Millisecond

// fakeWatched plays a command run under ExecWatch, as redirect running
// vmm is: args "watched FILE [forever|recovers]". Its output moves three
// times (FILE rewritten), then, if stall, stands still for
// fakeWatchedStall, and the emulator lets go of the CPU it held (held),
// too late: the command ends with vmm's -timeout status, 124, or, with
// "forever", never answers. A look after that finds every CPU ticking.
// With "recovers" the output moves three times more once the CPU is
// let go, then stands still again with every CPU ticking, as a hang of
// vmm's own would, and the command ends with 124. Without stall it ends
// with 0.
func fakeWatched(m proto.Msg, stall bool, held *atomic.Bool, send func(proto.Msg)) {
	written := 0
	move := func() {
		for range 3 {
			// Whole or not at all, as redirect writes it.
			written += 4096
			os.WriteFile(m.Args[1]+".new", []byte(fmt.Sprintf("%d 0\n", written)), 0o644)
			os.Rename(m.Args[1]+".new", m.Args[1])
			time.Sleep(40 * time.Millisecond)
		}
	}
	move()
	if !stall {
		send(proto.Msg{Op: proto.OpResult, ID: m.ID, Output: []byte("all of it\n")})
		return
	}
	time.Sleep(fakeWatchedStall)
	held.Store(false)
	how := ""
	if len(m.Args) > 2 {
		how = m.Args[2]
	}
	switch how {
	case "forever":
		return
	case "recovers":
		move()
		time.Sleep(fakeWatchedStall)
	}
	send(proto.Msg{Op: proto.OpResult, ID: m.ID, Code: 124, Output: []byte(fmt.Sprintf("%d bytes\nvmm: guest stopped: -timeout 4m0s reached\n", written))})
}

// fakeMonitor answers HMP's commands as QEMU 7.2 does for a running L1
// with one CPU in its kernel and one halted; the first question closes
// resume, if there is one.
func fakeMonitor(mon *os.File, resume chan struct{}) {
	fmt.Fprintf(mon, "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ")
	r := bufio.NewScanner(mon)
	for r.Scan() {
		switch r.Text() {
		case "info status":
			if resume != nil {
				close(resume)
				resume = nil
				time.Sleep(20 * time.Millisecond) // the job's output first
			}
			fmt.Fprintf(mon, "info status\r\nVM status: running\r\n(qemu) ")
		case "info registers -a":
			fmt.Fprintf(mon, "\r\nCPU#0\r\nRAX=0000000000000000\r\n"+
				"RIP=ffffffff81a3c2d5 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n\r\n"+
				"CPU#1\r\nRIP=ffffffff81b0e1ce RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n(qemu) ")
		default:
			fmt.Fprintf(mon, "unknown command\r\n(qemu) ")
		}
	}
}

func fakeConfig(t *testing.T, mode string) Config {
	t.Helper()
	t.Setenv(fakeQEMUEnv, mode)
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{QEMU: self, Kernel: f, Init: f, WorkDir: dir, FreezeTimeout: 300 * time.Millisecond}
}

func TestFakeJobAndExec(t *testing.T) {
	var log bytes.Buffer
	c := fakeConfig(t, "ok")
	c.Log = &log
	l, err := Start(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, code, err := l.Exec(t.Context(), "/bin/x", "y")
	if err != nil || code != 1 || out != "exec /bin/x y" {
		t.Errorf("Exec = %q %d %v", out, code, err)
	}
	j, err := l.Run(t.Context(), []string{"/x"}, StdinTTY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Expect(regexp.MustCompile(`done`), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if code, err := j.Wait(5 * time.Second); err != nil || code != 5 {
		t.Errorf("Wait = %d %v, want 5", code, err)
	}
	_, err = j.Expect(regexp.MustCompile(`never`), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited with status 5") {
		t.Errorf("Expect after exit: %v", err)
	}
	// The quiet time between jobs is not a freeze: the watchdog is disarmed.
	time.Sleep(600 * time.Millisecond)
	if _, _, err := l.Exec(t.Context(), "/y"); err != nil {
		t.Errorf("idle L1 was treated as frozen: %v", err)
	}
	if !strings.Contains(log.String(), "nested: L1 up in") {
		t.Errorf("log lacks boot line: %q", log.String())
	}
}

// startFakeJob boots a fake L1 with c and starts a job in it; the L1 is
// closed when the test ends.
func startFakeJob(t *testing.T, c Config) (*L1, *Job) {
	t.Helper()
	l, err := Start(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	j, err := l.Run(t.Context(), []string{"/x"}, StdinTTY)
	if err != nil {
		t.Fatal(err)
	}
	return l, j
}

func TestFakeFreeze(t *testing.T) {
	l, j := startFakeJob(t, fakeConfig(t, "freeze"))
	t0 := time.Now()
	_, err := j.Wait(10 * time.Second)
	if !errors.Is(err, ErrFrozen) {
		t.Fatalf("Wait = %v, want ErrFrozen", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("freeze noticed after %v with a 300ms timeout", d)
	}
	for _, want := range []string{"job output", "fake kernel: booted", "silent for",
		"probe 2: VM status: running, CPU0 RIP=ffffffff81a3c2d5 CPL=0, CPU1 RIP=ffffffff81b0e1ce CPL=0 halted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q (tails of both consoles): %v", want, err)
		}
	}
	select {
	case <-l.exited:
	case <-time.After(5 * time.Second):
		t.Error("QEMU not killed after freeze")
	}
	if err := j.Send("x"); !errors.Is(err, ErrFrozen) {
		t.Errorf("Send after freeze: %v", err)
	}
}

// A wait on the guest shorter than the watchdog's timeout that ends
// while L1 is silent waits for the watchdog's verdict: the freeze is
// reported as one (which the retry judge excuses), not as the guest's
// timeout. A quiet job in a live L1 still times out, with the threads
// report.
func TestFakeFreezeDuringShortWait(t *testing.T) {
	_, j := startFakeJob(t, fakeConfig(t, "freeze"))
	_, err := j.Expect(regexp.MustCompile(`never`), 150*time.Millisecond)
	if !errors.Is(err, ErrFrozen) {
		t.Errorf("Expect = %v, want ErrFrozen", err)
	}
	_, j = startFakeJob(t, fakeConfig(t, "beat"))
	_, err = j.Expect(regexp.MustCompile(`never`), 150*time.Millisecond)
	if err == nil || errors.Is(err, ErrFrozen) || !strings.Contains(err.Error(), "timed out after 150ms") {
		t.Errorf("Expect in a live L1 = %v, want a timeout", err)
	}
	// Aside: off the jobs' CPU, which a held CPU would keep it from.
	if err != nil && !strings.Contains(err.Error(), "aside /init threads vmm") {
		t.Errorf("timeout lacks the threads report: %v", err)
	}
}

// A wait that times out while L1's agent shows one of its CPUs held
// inside the guest (its counters still, its NMI backtrace in KVM_RUN)
// says so, and Judge retries it as the emulator's; the same wait in an
// L1 whose CPUs all tick is an ordinary timeout.
func TestFakeHeldCPU(t *testing.T) {
	l, j := startFakeJob(t, fakeConfig(t, "held"))
	_, err := j.Expect(regexp.MustCompile(`never`), 150*time.Millisecond)
	if !errors.Is(err, ErrCPUHeld) {
		t.Fatalf("Expect = %v, want ErrCPUHeld", err)
	}
	if v := Judge(err, l.evidence()); v.Cause != CauseGuestCrash || !strings.Contains(v.Reason, "CPU 1 took no timer tick") {
		t.Errorf("Judge = %v %q, want a guest crash for CPU 1", v.Cause, v.Reason)
	}
	_, j = startFakeJob(t, fakeConfig(t, "beat"))
	_, err = j.Expect(regexp.MustCompile(`never`), 150*time.Millisecond)
	if err == nil || errors.Is(err, ErrCPUHeld) {
		t.Errorf("Expect with every CPU ticking = %v, want a plain timeout", err)
	}
}

// An L1 that speaks again while the watchdog asks its monitor is not
// killed: the job finishes with its own status.
func TestFakeRecoversDuringProbe(t *testing.T) {
	log := &lockedLog{}
	c := fakeConfig(t, "recover")
	c.Log = log
	l, j := startFakeJob(t, c)
	code, err := j.Wait(10 * time.Second)
	if err != nil || code != 5 {
		t.Fatalf("Wait = %d, %v; want the job's 5", code, err)
	}
	// The job ended during the probe; the watchdog logs once it is done.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "L1 spoke again during the monitor probe"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks the recovery: %q", log.String())
		}
	}
	if l.deadErr() != nil {
		t.Errorf("L1 marked dead after it recovered: %v", l.deadErr())
	}
}

// lockedLog is a log the watchdog's goroutine writes while the test reads.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestWithL1RetriesFreezeOnce(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "froze")
	var log bytes.Buffer
	c := fakeConfig(t, "freeze-once:"+marker)
	c.Log = &log
	attempts := 0
	err := WithL1(t.Context(), c, func(l *L1) error {
		attempts++
		j, err := l.Run(t.Context(), []string{"/x"}, StdinTTY)
		if err != nil {
			return err
		}
		_, err = j.Wait(10 * time.Second)
		return err
	})
	if err != nil || attempts != 2 {
		t.Errorf("WithL1 = %v after %d attempts, want success on the 2nd", err, attempts)
	}
	if !strings.Contains(log.String(), "L1 froze") || !strings.Contains(log.String(), "nested: RETRY") {
		t.Errorf("retry not reported: %q", log.String())
	}
	// This fake's monitor is as silent as the rest of it, as QEMU's is
	// when the emulator itself stops.
	if !strings.Contains(log.String(), "probe 1: QEMU's monitor did not answer within") {
		t.Errorf("monitor probe not reported: %q", log.String())
	}

	// Two freezes in a row are a real failure.
	c = fakeConfig(t, "freeze")
	attempts = 0
	err = WithL1(t.Context(), c, func(l *L1) error {
		attempts++
		j, err := l.Run(t.Context(), []string{"/x"}, StdinTTY)
		if err != nil {
			return err
		}
		_, err = j.Wait(10 * time.Second)
		return err
	})
	if !errors.Is(err, ErrFrozen) || attempts != 2 {
		t.Errorf("WithL1 = %v after %d attempts, want ErrFrozen after 2", err, attempts)
	}
	// Other errors are not retried.
	attempts = 0
	c = fakeConfig(t, "ok")
	err = WithL1(t.Context(), c, func(l *L1) error { attempts++; return errors.New("boom") })
	if err == nil || attempts != 1 {
		t.Errorf("WithL1 = %v after %d attempts, want boom after 1", err, attempts)
	}
}

// fakeTB is the part of a test Retry uses, recorded.
type fakeTB struct {
	t     *testing.T
	logs  []string
	fatal []string
}

func (f *fakeTB) Helper()                  {}
func (f *fakeTB) Name() string             { return "TestRetryFake/sub" }
func (f *fakeTB) Log(a ...any)             { f.logs = append(f.logs, fmt.Sprint(a...)) }
func (f *fakeTB) Fatal(a ...any)           { f.fatal = append(f.fatal, fmt.Sprint(a...)) }
func (f *fakeTB) Context() context.Context { return f.t.Context() }

// Retry takes the suite's ledger from the environment, records its retry
// there under the test's name, and logs it with its reason.
func TestRetryLedgerFromEnv(t *testing.T) {
	ledger := filepath.Join(t.TempDir(), "retries")
	t.Setenv(LedgerEnv, ledger)
	t.Setenv(BudgetEnv, "1")
	c := fakeConfig(t, "freeze-once:"+filepath.Join(t.TempDir(), "froze"))
	run := func(l *L1) error {
		j, err := l.Run(t.Context(), []string{"/x"}, StdinTTY)
		if err != nil {
			return err
		}
		_, err = j.Wait(10 * time.Second)
		return err
	}
	tb := &fakeTB{t: t}
	Retry(tb, c, run)
	if len(tb.fatal) != 0 {
		t.Fatalf("Retry failed: %q", tb.fatal)
	}
	if !slices.ContainsFunc(tb.logs, func(s string) bool {
		return strings.Contains(s, "nested: RETRY") && strings.Contains(s, "suite retry 1 of 1") && strings.Contains(s, "L1 froze")
	}) {
		t.Errorf("retry not logged with its reason: %q", tb.logs)
	}
	lines, err := (Ledger{Path: ledger}).Lines()
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "TestRetryFake/sub: the whole L1 froze (") {
		t.Errorf("ledger %q, want one line for the freeze", lines)
	}

	// The budget is spent: the next freeze fails the test.
	tb = &fakeTB{t: t}
	Retry(tb, fakeConfig(t, "freeze"), run)
	if len(tb.fatal) != 1 || !strings.Contains(tb.fatal[0], "retry budget is spent") {
		t.Errorf("Retry with the budget spent: fatal %q", tb.fatal)
	}

	t.Setenv(BudgetEnv, "x")
	tb = &fakeTB{t: t}
	Retry(tb, fakeConfig(t, "ok"), func(*L1) error { t.Error("ran with a bad budget"); return nil })
	if len(tb.fatal) != 1 || !strings.Contains(tb.fatal[0], BudgetEnv) {
		t.Errorf("bad %s: fatal %q", BudgetEnv, tb.fatal)
	}
}

// A missing disk image is reported before QEMU starts, naming the file.
func TestFakeMissingDisk(t *testing.T) {
	c := fakeConfig(t, "ok")
	c.Disks = []Disk{{Path: filepath.Join(t.TempDir(), "missing.img")}}
	l, err := Start(t.Context(), c)
	if err == nil {
		l.Close()
		t.Fatal("Start with a missing disk succeeded")
	}
	if !strings.Contains(err.Error(), "missing.img") {
		t.Errorf("error %v does not name the disk", err)
	}
	c.Disks = []Disk{{Path: t.TempDir()}}
	if l, err := Start(t.Context(), c); err == nil {
		l.Close()
		t.Fatal("Start with a directory as disk succeeded")
	}
}
