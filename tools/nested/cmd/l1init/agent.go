package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

const (
	jobConsole     = "/dev/ttyS0"
	controlConsole = "/dev/ttyS1"
	beatInterval   = 2 * time.Second
)

type agent struct {
	logger *log.Logger
	reaper *reaper

	ctlMu sync.Mutex // serializes whole lines on the control port
	ctl   *os.File

	jobMu sync.Mutex
	job   *runningJob // nil when idle

	kept *keptVM // see keepvm.go; held for L1's life
}

// runningJob is what the agent needs to finish a job: the pipe feeding its
// stdin in pipe mode, so an eof request or the job's exit can close it.
type runningJob struct {
	id    uint64
	stdin io.Closer // nil unless pipe mode
	once  sync.Once
}

func (j *runningJob) closeStdin() {
	j.once.Do(func() {
		if j.stdin != nil {
			j.stdin.Close()
		}
	})
}

func agentMain(logger *log.Logger) error {
	start := time.Now()
	if err := setupSystem(); err != nil {
		return err
	}
	cpus, err := jobCPUSet()
	if err != nil {
		logger.Printf("jobs not pinned: %v", err)
	}
	if err := housekeep(cpus); err != nil {
		logger.Printf("agent not kept off the jobs' CPU: %v", err)
	}
	pl := placement{cpus: cpus, realtime: true}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logger.Printf("read kernel command line: %v", err)
	}
	switch v := proto.JobSched(string(cmdline)); v {
	case proto.JobSchedCFS:
		logger.Printf("jobs under CFS: %s=%s", proto.JobSchedParam, v)
		pl.realtime = false
	case "", proto.JobSchedRR:
		if err := os.WriteFile("/proc/sys/kernel/sched_rr_timeslice_ms", []byte(fmt.Sprint(rrSliceMillis)), 0); err != nil {
			// RR with the default 100 ms slice is slower than CFS (see pin.go).
			logger.Printf("jobs under CFS: %v", err)
			pl.realtime = false
		}
	default:
		return fmt.Errorf("%s=%s: want %s or %s", proto.JobSchedParam, v, proto.JobSchedRR, proto.JobSchedCFS)
	}
	a := &agent{logger: logger, reaper: newReaper(pl)}
	go a.reaper.loop()

	hello := proto.Msg{Op: proto.OpHello}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		hello.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if err := a.prepareKVM(&hello); err != nil {
		hello.Error = err.Error()
		logger.Printf("%v", err)
	}
	if hello.KVM {
		// Evidence only: without it L1 still works.
		if err := traceShutdowns(); err != nil {
			logger.Printf("%v", err)
		}
		// L1 works without the kept VM too, but freezes more often
		// (keepvm.go).
		if a.kept, err = keepVM(); err != nil {
			logger.Printf("%v", err)
		}
	}

	ctl, err := os.OpenFile(controlConsole, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open control port: %w", err)
	}
	if err := withFd(ctl, setRaw); err != nil {
		return fmt.Errorf("control port %s: %w", controlConsole, err)
	}
	if err := withFd(ctl, flushInput); err != nil {
		return fmt.Errorf("control port %s: %w", controlConsole, err)
	}
	a.ctl = ctl
	hello.UptimeS = uptime()
	logger.Printf("ready in %v (kernel uptime %.2fs), kvm=%v", time.Since(start).Round(time.Millisecond), hello.UptimeS, hello.KVM)
	if err := a.send(hello); err != nil {
		return err
	}
	go a.heartbeat()
	return a.serve()
}

func (a *agent) prepareKVM(hello *proto.Msg) error {
	var cfg proto.InitConfig
	b, err := os.ReadFile(proto.InitConfigPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", proto.InitConfigPath, err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("parse %s: %w", proto.InitConfigPath, err)
		}
	}
	loaded, err := loadModules(cfg.Modules, a.logger)
	hello.Modules = loaded
	if err != nil {
		return fmt.Errorf("load kvm modules: %w", err)
	}
	if err := waitForFile("/dev/kvm", 3*time.Second); err != nil {
		return fmt.Errorf("no /dev/kvm after loading %v (does the L1 CPU have svm?): %w", loaded, err)
	}
	hello.KVM = true
	// Disks are probed while their driver loads, but their nodes appear
	// in devtmpfs a moment later.
	for _, d := range cfg.Devices {
		if err := waitForFile(d, 10*time.Second); err != nil {
			return fmt.Errorf("disk missing after loading %v: %w", loaded, err)
		}
	}
	return nil
}

// uptime is the kernel's, from /proc/uptime because sysinfo(2) rounds to
// whole seconds and L1 boots in a few.
func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return 0
	}
	return v
}

func (a *agent) send(m proto.Msg) error {
	b, err := proto.Encode(m)
	if err != nil {
		return err
	}
	a.ctlMu.Lock()
	defer a.ctlMu.Unlock()
	if _, err := a.ctl.Write(b); err != nil {
		return fmt.Errorf("write control port: %w", err)
	}
	return nil
}

func (a *agent) sendLogged(m proto.Msg) {
	if err := a.send(m); err != nil {
		a.logger.Printf("%v", err)
	}
}

// heartbeat lets the host distinguish a job that is merely quiet from an L1
// that has frozen: only the latter stops the beats.
func (a *agent) heartbeat() {
	t := time.NewTicker(beatInterval)
	defer t.Stop()
	for range t.C {
		a.sendLogged(proto.Msg{Op: proto.OpBeat})
	}
}

func (a *agent) serve() error {
	r := proto.NewReader(a.ctl)
	r.Skipped = func(line []byte, err error) { a.logger.Printf("skipped control line: %v", err) }
	for {
		m, err := r.Next()
		if err != nil {
			return fmt.Errorf("control channel: %w", err)
		}
		switch m.Op {
		case proto.OpRun:
			if err := a.startJob(m); err != nil {
				a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: err.Error()})
			}
		case proto.OpExec, proto.OpExecAside:
			go a.exec(m)
		case proto.OpSysrq:
			go a.sysrq(m)
		case proto.OpCPUTimes:
			go a.cpuTimes(m)
		case proto.OpReadFile:
			go a.readFile(m)
		case proto.OpEOF:
			a.jobMu.Lock()
			if a.job != nil && a.job.id == m.ID {
				a.job.closeStdin()
			}
			a.jobMu.Unlock()
		case proto.OpPoweroff:
			a.logger.Printf("power off requested")
			return nil
		default:
			a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: fmt.Sprintf("unknown op %q", m.Op)})
		}
	}
}

func (a *agent) env(m proto.Msg) []string {
	term := "vt100"
	env := []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/tmp"}
	for _, e := range m.Env {
		if strings.HasPrefix(e, "TERM=") {
			term = ""
		}
	}
	if term != "" {
		env = append(env, "TERM="+term)
	}
	return append(env, m.Env...)
}

func (a *agent) startJob(m proto.Msg) error {
	a.jobMu.Lock()
	defer a.jobMu.Unlock()
	if a.job != nil {
		return fmt.Errorf("job %d is still running", a.job.id)
	}
	if len(m.Args) == 0 {
		return errors.New("run: no command")
	}
	// The child's end of the console; StartProcess makes it blocking,
	// which is what programs expect of their terminal.
	tty, err := os.OpenFile(jobConsole, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open job console: %w", err)
	}
	defer tty.Close()
	fd := int(tty.Fd())

	job := &runningJob{id: m.ID}
	sys := &syscall.SysProcAttr{Setsid: true}
	files := []*os.File{nil, tty, tty}
	var feeder *os.File // agent's own, non-blocking console end (pipe mode)
	var stdinR *os.File
	switch m.Stdin {
	case proto.StdinTTY, "":
		if err := setCooked(fd); err != nil {
			return err
		}
		if err := setWinsize(fd, m.Rows, m.Cols); err != nil {
			return err
		}
		files[0] = tty
		// A controlling terminal makes ^C a SIGINT to the job and lets it
		// use job control and raw mode as it would on a real terminal.
		sys.Setctty = true
		sys.Ctty = 0
	case proto.StdinPipe:
		if err := setRaw(fd); err != nil {
			return err
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("stdin pipe: %w", err)
		}
		feeder, err = os.OpenFile(jobConsole, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			pr.Close()
			pw.Close()
			return fmt.Errorf("open job console for stdin: %w", err)
		}
		stdinR = pr
		files[0] = pr
		job.stdin = multiCloser{pw, feeder}
		go func() {
			// Ends when the job exits or eof closes the pipe or console.
			io.Copy(pw, feeder)
			pw.Close()
		}()
	case proto.StdinNull:
		if err := setRaw(fd); err != nil {
			return err
		}
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fmt.Errorf("open %s: %w", os.DevNull, err)
		}
		defer null.Close()
		files[0] = null
	default:
		return fmt.Errorf("unknown stdin mode %q", m.Stdin)
	}
	if err := flushInput(fd); err != nil {
		job.closeStdin()
		return err
	}

	// The reaper must know the pid before the exit can be observed, so
	// the registration is done under the reaper's lock inside start.
	pid, exited, err := a.reaper.start(a.reaper.pl, lookPath(m.Args[0]), m.Args, &os.ProcAttr{Env: a.env(m), Files: files, Sys: sys})
	if stdinR != nil {
		stdinR.Close()
	}
	if err != nil {
		job.closeStdin()
		return fmt.Errorf("start %s: %w", m.Args[0], err)
	}
	a.job = job
	a.logger.Printf("job %d: started %q pid %d stdin=%s", m.ID, m.Args, pid, m.Stdin)
	a.sendLogged(proto.Msg{Op: proto.OpStarted, ID: m.ID, PID: pid})
	go a.finishJob(job, exited)
	return nil
}

func (a *agent) finishJob(job *runningJob, exited <-chan unix.WaitStatus) {
	ws := <-exited
	job.closeStdin()
	code := exitCode(ws)
	if tty, err := os.OpenFile(jobConsole, os.O_RDWR|unix.O_NOCTTY, 0); err == nil {
		done := make(chan struct{})
		go func() {
			if err := drain(int(tty.Fd())); err != nil {
				a.logger.Printf("%v", err)
			}
			close(done)
		}()
		// A host that stopped reading must not wedge the agent.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			a.logger.Printf("job %d: console did not drain", job.id)
		}
		tty.Close()
	}
	a.jobMu.Lock()
	a.job = nil
	a.jobMu.Unlock()
	a.logger.Printf("job %d: exit %d", job.id, code)
	a.sendLogged(proto.Msg{Op: proto.OpExit, ID: job.id, Code: code})
}

func (a *agent) exec(m proto.Msg) {
	out, code, err := a.execOutput(m)
	if err != nil {
		a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: err.Error(), Output: out})
		return
	}
	a.sendLogged(proto.Msg{Op: proto.OpResult, ID: m.ID, Code: code, Output: out})
}

// sysrq asks L1's kernel, from the agent's own process, for what m's
// keys show (CPU backtraces, blocked tasks) in its log: when L1 is
// wedged enough that an exec's child never runs, this still works.
func (a *agent) sysrq(m proto.Msg) {
	if len(m.Args) != 1 {
		a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: "sysrq: want one argument, the keys"})
		return
	}
	for _, k := range m.Args[0] {
		if err := os.WriteFile("/proc/sysrq-trigger", []byte(string(k)), 0); err != nil {
			a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: fmt.Sprintf("sysrq %c: %v", k, err)})
			return
		}
	}
	a.sendLogged(proto.Msg{Op: proto.OpResult, ID: m.ID})
}

// cpuTimes reads each CPU's time counters twice, proto.CPUTimesGap
// apart, from the agent's own process: a CPU whose counters stand still
// while the others' advance took no timer tick in between (the host's
// judge, package nested, HeldCPUs).
func (a *agent) cpuTimes(m proto.Msg) {
	first, err := os.ReadFile("/proc/stat")
	if err == nil {
		time.Sleep(proto.CPUTimesGap)
		var second []byte
		if second, err = os.ReadFile("/proc/stat"); err == nil {
			a.sendLogged(proto.Msg{Op: proto.OpResult, ID: m.ID, Output: append(append(first, proto.CPUTimesSep...), second...)})
			return
		}
	}
	a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: err.Error()})
}

// readFile answers with the start of a file, up to proto.ReadFileMax
// bytes, read by the agent's own process. The host reads a running
// command's progress so (package nested, ExecWatch): an exec's child
// starts on the jobs' CPU (reaper.start), where it would wait behind the
// run it watches, or for ever if the emulator holds that CPU.
func (a *agent) readFile(m proto.Msg) {
	if len(m.Args) != 1 {
		a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: "readfile: want one argument, the path"})
		return
	}
	b, err := readFileMax(m.Args[0], proto.ReadFileMax)
	if err != nil {
		a.sendLogged(proto.Msg{Op: proto.OpError, ID: m.ID, Error: err.Error()})
		return
	}
	a.sendLogged(proto.Msg{Op: proto.OpResult, ID: m.ID, Output: b})
}

// readFileMax returns at most max bytes from the start of the file at path.
func readFileMax(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// execPlacement is where the child of an exec (op) starts: as a job
// does (job), since most run vmm; an aside one (a diagnostic) where the
// agent runs, which housekeep keeps off the jobs' CPU.
func execPlacement(op string, job placement) placement {
	// On an L1 of one CPU (job.cpus nil) there is nowhere aside to go,
	// and a diagnostic outside the jobs' real-time policy would get
	// only what the RT throttle leaves: it starts as a job does.
	if op == proto.OpExecAside && job.cpus != nil {
		return placement{}
	}
	return job
}

func (a *agent) execOutput(m proto.Msg) ([]byte, int, error) {
	if len(m.Args) == 0 {
		return nil, 0, errors.New("exec: no command")
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, 0, fmt.Errorf("output pipe: %w", err)
	}
	defer pr.Close()
	_, exited, err := a.reaper.start(execPlacement(m.Op, a.reaper.pl), lookPath(m.Args[0]), m.Args, &os.ProcAttr{
		Env: a.env(m), Files: []*os.File{null, pw, pw}, Sys: &syscall.SysProcAttr{Setsid: true},
	})
	pw.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", m.Args[0], err)
	}
	outc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		outc <- b
	}()
	code := exitCode(<-exited)
	select {
	case out := <-outc:
		return out, code, nil
	case <-time.After(2 * time.Second):
		// A background descendant holds the pipe; report what we have.
		pr.SetReadDeadline(time.Now())
		return <-outc, code, nil
	}
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	var errs []error
	for _, c := range m {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return -1
	}
}

// lookPath resolves bare names against the few directories an L1 image may
// have; there is no shell to do it.
func lookPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return name
}

func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("raw conn control: %w", err)
	}
	return ferr
}

// reaper is the only caller of wait4: as PID 1 the agent inherits every
// orphan in L1 and must reap them, which would race with per-process waits.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
	pl      placement // where and how jobs start (see pin.go)
}

func newReaper(pl placement) *reaper {
	return &reaper{waiting: map[int]chan unix.WaitStatus{}, pl: pl}
}

func (r *reaper) loop() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	t := time.NewTicker(time.Second) // in case a SIGCHLD was coalesced away
	defer t.Stop()
	for {
		select {
		case <-ch:
		case <-t.C:
		}
		r.reapAll()
	}
}

func (r *reaper) reapAll() {
	for {
		r.mu.Lock()
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil || pid <= 0 {
			r.mu.Unlock()
			return
		}
		if c, ok := r.waiting[pid]; ok {
			c <- ws
			delete(r.waiting, pid)
		}
		r.mu.Unlock()
	}
}

// start starts a child placed as pl says. It holds the reaper's lock
// across the fork so the child cannot be reaped before its pid is
// registered.
func (r *reaper) start(pl placement, path string, args []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := startPlaced(pl, path, args, attr)
	if err != nil {
		return 0, nil, err
	}
	c := make(chan unix.WaitStatus, 1)
	r.waiting[p.Pid] = c
	pid := p.Pid
	p.Release()
	return pid, c, nil
}
