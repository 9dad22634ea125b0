// Package nested runs vmm where there is no /dev/kvm: it boots a Linux "L1"
// guest under QEMU TCG with an emulated AMD-V CPU, loads kvm-amd there, and
// runs jobs (typically vmm booting its own L2 guest) inside it.
//
// L1 has three serial ports. ttyS0, the job console, carries only the
// current job's bytes in both directions, so a job behaves as if the
// caller's terminal were attached. ttyS1 is a line-based JSON control
// channel to the agent (tools/nested/cmd/l1init) that is L1's /init. ttyS2 receives
// L1's kernel log (and the agent's own log), which is saved to a file.
// ttyS0 and ttyS1 are socketpairs shared with QEMU; no paths, no races.
//
// TCG with nested SVM sometimes freezes all of L1. A watchdog notices when
// both the console and the agent's heartbeats stop during a job, asks
// QEMU's monitor where L1's CPUs are (monitor.go), kills QEMU, and
// reports ErrFrozen with that answer.
//
// # Retry discipline
//
// WithL1 (Retry in tests) runs a test in a fresh L1 and, when it fails,
// retries it in another only if Judge puts the failure on the emulator,
// and says so with the reason each time. A retry can hide a real vmm
// bug, so the bar is evidence from L1 itself, not the L2 symptom alone:
//
//   - A frozen L1 (ErrFrozen) is retried: console and heartbeats went
//     silent together, which is L1 as a whole stopping. So is an L1 that
//     died (ErrL1Exited) with L1Signature in its kernel log, such as an
//     oops in KVM's switch to its guest. Once per test for the two.
//   - An L2 guest crash (ErrGuestCrashed, or a GuestCrash line on the
//     job console) is retried only when vmm stayed intact (no Go crash;
//     tools/e2e also checks vmm's exit status) and L1's own kernel log
//     shows the emulator at work (L1Signature): L1's KVM intercepting
//     the guest's shutdown while it delivered a page fault on fetching
//     its own kernel text, an external interrupt or an NMI, or L1
//     itself stalling (RCU stalls, soft
//     lockups) or its KVM warning.
//   - A wait on a guest that timed out is retried as such a crash when
//     L1's own counters and backtraces show one of its CPUs held inside
//     the guest (ErrCPUHeld, HeldCPUs): its /proc/stat time counters
//     stood still for 2 s while another CPU's advanced, and its NMI
//     backtrace ran through KVM_RUN. L1's timer interrupt makes any
//     running guest exit; only the emulator keeps a CPU in there. A
//     wait that ends while L1 has been silent for a while waits for the
//     watchdog's verdict first (a freeze, retried as one). A command
//     run through Exec (tools/e2e's redirect running vmm) has no wait
//     to time out, so ExecWatch looks at L1's CPUs the same way while
//     its output stands still, and WatchedExec.TimedOut gives a run
//     that a timeout ended ErrCPUHeld when a look since the output last
//     moved found a CPU held: by the time vmm's own -timeout ends the
//     run, the emulator may have let go.
//
// The shutdown line is there because the agent asks for it: KVM logs
// nothing when a guest shuts down, and in 3 emulator triple faults of
// 10 hostile-guest runs L1's log held only what every L2 boot prints
// there (KVM's "SMP vm created on host with unstable TSC" and
// "Unhandled WRMSR(0xc0010007)", the once-per-boot "hrtimer: interrupt
// took N ns"). So L1 boots with tp_printk and the agent enables KVM's
// kvm_exit tracepoint filtered to shutdown intercepts, which L1's kernel
// then prints on its console with the pending event. In an emulator
// crash that event was a page fault on an instruction fetch at the
// kernel-text address L1's KVM had just resumed the guest at, after
// emulating its wrmsr: Linux's text is always mapped, so the emulated
// page walk went wrong, and vmm's only way to that is writing over the
// guest's page tables (a risk this leaves, which the hostile test's
// disk checks would likely catch otherwise). A vmm that sets its guest
// up wrong crashes it before its kernel runs there, and a guest that
// triple-faults on its own shows another event (tools/e2e's crasher:
// #UD at its entry). A triple fault without the signature, and an L2
// RCU stall with L1 quiet, fail their test with a message saying why
// they were not retried; the tests keep their exits to vmm's userspace
// few (see tools/e2e's hostile test), which makes all of these rare.
//
// A test suite whose packages run as separate test binaries bounds its
// retries as a whole with a Ledger (`make e2e` allows E2E_RETRY_BUDGET, 12): every retry is
// a line there, and WithL1 retries nothing once the budget is spent.
package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

var (
	// ErrFrozen means L1 stopped producing any output while a job or exec
	// was outstanding and was killed; retrying in a fresh L1 usually works.
	ErrFrozen = errors.New("L1 froze")
	// ErrL1Exited means QEMU went away on its own (L1 panicked, QEMU failed).
	ErrL1Exited = errors.New("L1 exited")
	// ErrNotReady means L1 booted for Config.BootTimeout without its
	// agent saying hello, and neither died nor reported an error. Judge
	// takes it for the emulator stopping L1 while it booted, as it now
	// and then stops a running one (ErrFrozen).
	ErrNotReady = errors.New("L1 agent not ready")
	// ErrClosed means the L1 was closed by its owner.
	ErrClosed = errors.New("L1 closed")
	// ErrGuestCrashed is for a test to wrap when the guest vmm runs in
	// L1 (L2) died in the way QEMU TCG's emulated nested SVM kills
	// guests: a triple fault or a CPU that stops taking interrupts (an
	// RCU stall), while vmm itself kept working and reported it; or
	// when L1's own kernel saw one of its CPUs held inside that guest
	// (VCPUStall), which stops vmm's threads pinned there too. The
	// rate grows with the number of exits from L2 to vmm's userspace: a
	// guest making about 400,000 port accesses died in one run of
	// three, and QEMU (-accel kvm, in L1) lost its guest the same way
	// under the same load. It is only a claim: WithL1 retries it only
	// with L1's evidence (see Judge and the package doc).
	ErrGuestCrashed = errors.New("the L2 guest crashed under emulated nested SVM")
	// ErrCPUHeld marks a wait on a guest that timed out while one of
	// L1's CPUs took no timer tick for proto.CPUTimesGap with its NMI
	// backtrace inside KVM_RUN (HeldCPUs): the emulator holding that
	// CPU in L2, which Judge retries as it does VCPUStall's report. It
	// marks likewise a watched command's run that a timeout ended after
	// its output stood still with a CPU so (WatchedExec.TimedOut).
	ErrCPUHeld = errors.New("an L1 CPU held inside its guest")
)

// Config describes an L1. Zero values get the defaults noted.
type Config struct {
	QEMU       string            // default "qemu-system-x86_64"
	Kernel     string            // L1 bzImage
	ModulesDir string            // L1's lib/modules/<version>; empty: no modules loaded
	Modules    []string          // module names to load from ModulesDir; default kvm-amd
	Init       string            // l1init binary; empty: built with BuildInit into the work dir
	Files      map[string]string // L1 path -> host path, copied into L1's initramfs
	MemoryMiB  int               // default 3072
	CPUs       int               // default 2
	Append     string            // extra L1 kernel command line

	// JobSched is the scheduling policy L1's agent starts jobs with:
	// "rr" (SCHED_RR, the default, see cmd/l1init/pin.go) or "cfs"
	// (Linux's fair scheduler). Empty: $NESTED_JOB_SCHED, else "rr". It
	// is a switch for comparing the two, as pin.go's measurements did.
	JobSched string
	WorkDir  string    // parent for per-L1 directories; empty: a temporary directory, removed on Close
	Log      io.Writer // progress lines; nil: discarded

	// Disks are host files L1 sees as virtio-blk disks, /dev/vda,
	// /dev/vdb, ... in this order (see DiskPath). The harness loads their
	// drivers and waits for the devices before Start returns.
	Disks []Disk

	// ConsoleOut, if set, receives every byte of the job console as it
	// arrives, e.g. the user's terminal.
	ConsoleOut io.Writer

	BootTimeout   time.Duration // boot to agent hello; default 2m
	FreezeTimeout time.Duration // silence that counts as a freeze; default 90s
	ExecTimeout   time.Duration // Exec without a context deadline; default 5m

	// GuestCrashRetries is how many times one WithL1 call may retry fn
	// after the emulator crashed its guest (see Judge), each time in a
	// fresh L1; default 2.
	GuestCrashRetries int
	// FreezeRetries is how many times one WithL1 call may retry fn
	// after L1 froze or died (see Judge), each time in a fresh L1;
	// default 1. A test whose fn resumes where the last attempt stopped
	// may take more, as its retries redo little.
	FreezeRetries int

	// Ledger, if it has a Path, records every retry WithL1 makes and
	// refuses retries beyond its budget, across all the processes of a
	// test suite; Retry takes it from the environment.
	Ledger Ledger
}

// Disk is a raw image on the host that L1 sees as a virtio-blk PCI disk.
// QEMU writes through the host's page cache (cache=writeback), so once L1
// has powered off (the agent syncs first, see Close) the file holds
// everything L1 wrote, and the host can check it: that is how tests read
// back what a guest inside L1 wrote to its disk.
type Disk struct {
	Path     string
	ReadOnly bool // L1 cannot write it (QEMU's readonly=on)
}

// DiskPath is L1's device for Config.Disks[i]: L1 has no other virtio
// disks, so the kernel names them in PCI slot order, which is Disks order.
func DiskPath(i int) string {
	name := ""
	for i++; i > 0; i = (i - 1) / 26 {
		name = string(rune('a'+(i-1)%26)) + name
	}
	return "/dev/vd" + name
}

// diskModules drive L1's disks: QEMU's virtio-blk-pci needs the PCI
// transport and the block driver, modules in Debian's kernels.
var diskModules = []string{"virtio_pci", "virtio_blk"}

// modules is what L1 loads: Config.Modules, plus the disk drivers if
// there are disks.
func (c Config) modules() []string {
	mods := append([]string(nil), c.Modules...)
	if len(c.Disks) > 0 {
		mods = append(mods, diskModules...)
	}
	return mods
}

func (c Config) checkDisks() error {
	for i, d := range c.Disks {
		st, err := os.Stat(d.Path)
		if err != nil {
			return fmt.Errorf("nested: disk %d: %w", i, err)
		}
		if !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
			return fmt.Errorf("nested: disk %d: %s is neither a file nor a block device", i, d.Path)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Modules == nil {
		c.Modules = []string{"kvm-amd"}
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 3072
	}
	if c.CPUs == 0 {
		c.CPUs = 2
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = 2 * time.Minute
	}
	if c.FreezeTimeout == 0 {
		c.FreezeTimeout = 90 * time.Second
	}
	if c.ExecTimeout == 0 {
		c.ExecTimeout = 5 * time.Minute
	}
	if c.JobSched == "" {
		c.JobSched = os.Getenv(JobSchedEnv)
	}
	if c.JobSched == "" {
		c.JobSched = proto.JobSchedRR
	}
	return c
}

// JobSchedEnv names the environment variable Config.JobSched defaults to.
const JobSchedEnv = "NESTED_JOB_SCHED"

// L1 is a running L1 guest. Its methods are safe for concurrent use, but
// only one job runs at a time.
type L1 struct {
	cfg      Config
	cmd      *exec.Cmd
	con, ctl net.Conn
	mon      net.Conn // QEMU's human monitor, read only on a freeze
	dir      string
	ownDir   bool
	klogPath string
	console  *tailBuffer
	qemuErr  *tailBuffer
	exited   chan struct{} // closed once QEMU has been waited for
	deadCh   chan struct{} // closed when dead is set
	hello    chan proto.Msg
	ctlMu    sync.Mutex // whole messages on the control channel
	now      func() time.Time
	closing  sync.Once
	started  time.Time

	// Console bytes taken from the socket and fully processed, to tell
	// whether output is still in flight (see finishJob).
	conReads, conDone atomic.Uint64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever state changes
	dead    error         // why L1 is unusable; nil while it runs
	nextID  uint64
	pending map[uint64]chan proto.Msg
	job     *Job
	wd      watchdog

	// BootTime is from starting QEMU to the agent's hello.
	BootTime time.Duration
	// Hello is what the agent reported when it came up.
	Hello proto.Msg
}

// Start boots an L1 and waits until its agent is ready and /dev/kvm works.
// ctx bounds only the boot; the L1 lives until Close.
func Start(ctx context.Context, c Config) (*L1, error) {
	c = c.withDefaults()
	if c.Kernel == "" {
		return nil, errors.New("nested: no L1 kernel configured")
	}
	qemuPath, err := exec.LookPath(c.QEMU)
	if err != nil {
		return nil, fmt.Errorf("nested: %s not found (Debian: apt-get install qemu-system-x86): %w", c.QEMU, err)
	}
	if err := c.checkDisks(); err != nil {
		return nil, err
	}
	if c.JobSched != proto.JobSchedRR && c.JobSched != proto.JobSchedCFS {
		return nil, fmt.Errorf("nested: job scheduler %q (from Config.JobSched or $%s): want %q or %q", c.JobSched, JobSchedEnv, proto.JobSchedRR, proto.JobSchedCFS)
	}
	l := &L1{
		cfg:     c,
		console: newTailBuffer(256 << 10),
		qemuErr: newTailBuffer(16 << 10),
		exited:  make(chan struct{}),
		deadCh:  make(chan struct{}),
		hello:   make(chan proto.Msg, 1),
		changed: make(chan struct{}),
		pending: map[uint64]chan proto.Msg{},
		now:     time.Now,
		wd:      watchdog{timeout: c.FreezeTimeout},
	}
	if err := l.makeDir(); err != nil {
		return nil, err
	}
	if err := l.boot(ctx, qemuPath); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *L1) makeDir() error {
	parent := l.cfg.WorkDir
	if parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("nested: work dir: %w", err)
		}
	}
	dir, err := os.MkdirTemp(parent, "l1-")
	if err != nil {
		return fmt.Errorf("nested: work dir: %w", err)
	}
	l.dir, l.ownDir = dir, parent == ""
	l.klogPath = filepath.Join(dir, "l1-kernel.log")
	return nil
}

// Dir is the directory holding this L1's initramfs and kernel log.
func (l *L1) Dir() string { return l.dir }

// KernelLogPath is the file receiving L1's kernel log (ttyS2).
func (l *L1) KernelLogPath() string { return l.klogPath }

func (l *L1) logf(format string, args ...any) {
	fmt.Fprintf(l.cfg.Log, "nested: "+format+"\n", args...)
}

func (l *L1) boot(ctx context.Context, qemuPath string) error {
	init := l.cfg.Init
	if init == "" {
		init = filepath.Join(l.dir, "l1init")
		if err := BuildInit(ctx, init); err != nil {
			return err
		}
	}
	var modules []string
	if want := l.cfg.modules(); l.cfg.ModulesDir != "" && len(want) > 0 {
		var err error
		if modules, err = ResolveModules(l.cfg.ModulesDir, want); err != nil {
			return fmt.Errorf("nested: L1 modules: %w", err)
		}
	}
	var devices []string
	for i := range l.cfg.Disks {
		devices = append(devices, DiskPath(i))
	}
	initrd, err := buildImage(l.dir, imageSpec{Init: init, Modules: modules, Files: l.cfg.Files, Devices: devices})
	if err != nil {
		return fmt.Errorf("nested: %w", err)
	}

	conHost, conQEMU, err := socketPair("console")
	if err != nil {
		return err
	}
	defer conQEMU.Close()
	ctlHost, ctlQEMU, err := socketPair("control")
	if err != nil {
		conHost.Close()
		return err
	}
	defer ctlQEMU.Close()
	monHost, monQEMU, err := socketPair("monitor")
	if err != nil {
		conHost.Close()
		ctlHost.Close()
		return err
	}
	defer monQEMU.Close()
	l.con, l.ctl, l.mon = conHost, ctlHost, monHost

	cmd := exec.Command(qemuPath, qemuArgs(l.cfg, qemuSpec{Initrd: initrd, KernelLog: l.klogPath})...)
	cmd.ExtraFiles = []*os.File{conQEMU, ctlQEMU, monQEMU}
	cmd.Stdout = l.qemuErr
	cmd.Stderr = l.qemuErr
	// Own process group: a ^C meant for the job (or for the caller's
	// terminal) must not kill QEMU behind the harness's back. But QEMU
	// dies with the harness (Pdeathsig): a test binary killed by go
	// test's -timeout or by hand left its L1 running, two emulated
	// cores' worth of load for whatever ran next. (Linux sends it when
	// the thread that started QEMU exits; Go keeps its threads unless a
	// goroutine exits locked to one, which the harness never does.)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	l.started = l.now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("nested: start %s: %w", qemuPath, err)
	}
	l.cmd = cmd
	go l.waitQEMU()
	go l.readConsole()
	go l.readControl()
	go l.watch()

	timer := time.NewTimer(l.cfg.BootTimeout)
	defer timer.Stop()
	select {
	case h := <-l.hello:
		l.BootTime = l.now().Sub(l.started)
		l.Hello = h
		if h.Error != "" {
			return l.withTails(fmt.Errorf("nested: L1 agent is up but not usable: %s", h.Error))
		}
		if !h.KVM && len(modules) > 0 {
			return l.withTails(errors.New("nested: L1 has no /dev/kvm"))
		}
		l.logf("L1 up in %.1fs (kernel %s, uptime %.1fs, modules %v)", l.BootTime.Seconds(), h.Kernel, h.UptimeS, h.Modules)
		return nil
	case <-l.deadCh:
		return l.withTails(fmt.Errorf("nested: L1 died while booting: %w", l.deadErr()))
	case <-timer.C:
		return l.withTails(fmt.Errorf("nested: %w within %v", ErrNotReady, l.cfg.BootTimeout))
	case <-ctx.Done():
		return l.withTails(fmt.Errorf("nested: waiting for L1 agent: %w", ctx.Err()))
	}
}

// socketPair returns the host's end as a net.Conn (for deadlines) and
// QEMU's end as a file to inherit.
func socketPair(what string) (net.Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("nested: %s socketpair: %w", what, err)
	}
	hostFile := os.NewFile(uintptr(fds[0]), what+"-host")
	defer hostFile.Close()
	conn, err := net.FileConn(hostFile)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("nested: %s socket: %w", what, err)
	}
	return conn, os.NewFile(uintptr(fds[1]), what+"-qemu"), nil
}

// broadcastLocked wakes everyone waiting for a state change.
func (l *L1) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// setDead records the first reason L1 became unusable.
func (l *L1) setDead(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.setDeadLocked(err)
}

func (l *L1) setDeadLocked(err error) bool {
	if l.dead != nil {
		return false
	}
	l.dead = err
	close(l.deadCh)
	l.broadcastLocked()
	return true
}

func (l *L1) deadErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead
}

func (l *L1) waitQEMU() {
	err := l.cmd.Wait()
	if err == nil {
		err = errors.New("QEMU exited")
	}
	l.setDead(fmt.Errorf("%w: %v; QEMU output: %s", ErrL1Exited, err, l.qemuErr.Lines(10)))
	close(l.exited)
	// Unblock readers; the sockets have nothing more to say.
	l.con.Close()
	l.ctl.Close()
	l.mon.Close()
}

func (l *L1) readConsole() {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.con.Read(buf)
		l.conReads.Add(1)
		if n > 0 {
			chunk := buf[:n]
			l.console.Write(chunk)
			l.mu.Lock()
			now := l.now()
			l.wd.activity(now)
			if l.job != nil && !l.job.done {
				l.job.appendLocked(chunk)
			}
			l.broadcastLocked()
			l.mu.Unlock()
			if l.cfg.ConsoleOut != nil {
				l.cfg.ConsoleOut.Write(chunk)
			}
		}
		l.conDone.Add(1)
		if err != nil {
			return
		}
	}
}

func (l *L1) readControl() {
	r := proto.NewReader(l.ctl)
	r.Skipped = func(line []byte, err error) { l.logf("ignoring control line: %v", err) }
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.wd.activity(l.now())
		switch m.Op {
		case proto.OpHello:
			select {
			case l.hello <- m:
			default:
			}
		case proto.OpBeat:
		case proto.OpExit:
			if j := l.job; j != nil && j.id == m.ID {
				go l.finishJob(j, m.Code)
			}
		default:
			if c, ok := l.pending[m.ID]; ok {
				delete(l.pending, m.ID)
				c <- m
			} else {
				l.mu.Unlock()
				l.logf("unexpected control message %q id %d", m.Op, m.ID)
				continue
			}
		}
		l.mu.Unlock()
	}
}

// watch kills L1 when the watchdog says it froze.
func (l *L1) watch() {
	t := time.NewTicker(l.wd.pollInterval())
	defer t.Stop()
	for {
		select {
		case <-l.exited:
			return
		case <-t.C:
		}
		l.mu.Lock()
		silent, frozen := l.wd.expired(l.now())
		l.mu.Unlock()
		if !frozen {
			continue
		}
		// Ask QEMU before killing it (monitor.go): the answer tells
		// the emulator stopping from L1's kernel stuck.
		probe := probeMonitor(l.mon, monitorWait(l.cfg.FreezeTimeout))
		l.mu.Lock()
		if _, still := l.wd.expired(l.now()); !still {
			// L1 spoke while the monitor was asked (reading the
			// registers stops and resumes every CPU): not frozen.
			l.mu.Unlock()
			l.logf("console silent %v, then L1 spoke again during the monitor probe (%s); not killed", silent.Round(time.Second), probe)
			continue
		}
		frozen = l.setDeadLocked(fmt.Errorf("%w: job console and control channel silent for %v (%s)", ErrFrozen, silent.Round(time.Second), probe))
		l.mu.Unlock()
		if frozen {
			l.logf("console silent %v, killing L1; %s", silent.Round(time.Second), probe)
			l.cmd.Process.Kill()
		}
	}
}

// consolePending reports whether job console output is still on its way
// from the socket to the job's buffer.
func (l *L1) consolePending() bool {
	if l.conReads.Load() != l.conDone.Load() {
		return true
	}
	sc, ok := l.con.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// send writes one control message.
func (l *L1) send(m proto.Msg) error {
	b, err := proto.Encode(m)
	if err != nil {
		return err
	}
	l.ctlMu.Lock()
	defer l.ctlMu.Unlock()
	l.ctl.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := l.ctl.Write(b); err != nil {
		return fmt.Errorf("nested: send %s: %w", m.Op, err)
	}
	return nil
}

// request sends m with a fresh id and waits for the reply to that id.
// While it waits the watchdog is armed: a reply is owed.
func (l *L1) request(ctx context.Context, m proto.Msg, timeout time.Duration) (proto.Msg, error) {
	c := make(chan proto.Msg, 1)
	l.mu.Lock()
	if l.dead != nil {
		err := l.dead
		l.mu.Unlock()
		return proto.Msg{}, err
	}
	l.nextID++
	m.ID = l.nextID
	l.pending[m.ID] = c
	l.wd.arm(l.now())
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, m.ID)
		l.wd.disarm()
		l.mu.Unlock()
	}()
	if err := l.send(m); err != nil {
		return proto.Msg{}, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-c:
		return r, nil
	case <-l.deadCh:
		return proto.Msg{}, l.deadErr()
	case <-timer.C:
		return proto.Msg{}, fmt.Errorf("nested: no reply to %s within %v", m.Op, timeout)
	case <-ctx.Done():
		return proto.Msg{}, fmt.Errorf("nested: waiting for reply to %s: %w", m.Op, ctx.Err())
	}
}

// Exec runs a command in L1 with stdin /dev/null and returns its combined
// output and exit status; it is for checks, not for interactive programs.
// The command starts as a job does, on the jobs' CPU.
func (l *L1) Exec(ctx context.Context, args ...string) (string, int, error) {
	return l.exec(ctx, proto.OpExec, args)
}

// execAside is Exec for a diagnostic: the command starts where the
// agent runs, off the jobs' CPU, so a job or the emulator holding that
// CPU does not keep it from running.
func (l *L1) execAside(ctx context.Context, args ...string) (string, int, error) {
	return l.exec(ctx, proto.OpExecAside, args)
}

func (l *L1) exec(ctx context.Context, op string, args []string) (string, int, error) {
	timeout := l.cfg.ExecTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	r, err := l.request(ctx, proto.Msg{Op: op, Args: args}, timeout)
	if err != nil {
		return "", 0, l.withTails(fmt.Errorf("nested: exec %q: %w", args, err))
	}
	if r.Op == proto.OpError {
		return string(r.Output), 0, l.withTails(fmt.Errorf("nested: exec %q: %s", args, r.Error))
	}
	return string(r.Output), r.Code, nil
}

// ConsoleTail returns the last n lines of the job console.
func (l *L1) ConsoleTail(n int) string { return l.console.Lines(n) }

// KernelLogTail returns the last n lines of L1's kernel log.
func (l *L1) KernelLogTail(n int) string {
	b, err := l.kernelLogEnd(64 << 10)
	if err != nil {
		return fmt.Sprintf("(kernel log: %v)", err)
	}
	return lastLines(b, n)
}

// KernelLogMark is where L1's kernel log ends now, for KernelLogSince to
// read what a step writes after it.
func (l *L1) KernelLogMark() int64 {
	st, err := os.Stat(l.klogPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// KernelLogSince returns what L1's kernel wrote to its log after mark
// (KernelLogMark), at most its last evidenceLogBytes.
func (l *L1) KernelLogSince(mark int64) string {
	f, err := os.Open(l.klogPath)
	if err != nil {
		return fmt.Sprintf("(kernel log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(kernel log: %v)", err)
	}
	b, err := io.ReadAll(io.NewSectionReader(f, max(mark, st.Size()-evidenceLogBytes), evidenceLogBytes))
	if err != nil {
		return fmt.Sprintf("(kernel log: %v)", err)
	}
	return string(b)
}

// kernelLogEnd returns at most the last max bytes of L1's kernel log.
func (l *L1) kernelLogEnd(max int64) ([]byte, error) {
	f, err := os.Open(l.klogPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

// tailError carries the evidence needed to debug a nested failure without
// rerunning it: what the job printed and what L1's kernel said.
type tailError struct {
	err     error
	console string
	klog    string
	threads string // withThreads: what vmm's threads were doing
	cpus    string // WatchedExec.TimedOut: L1's CPUs while the run's output stood still
}

func (e *tailError) Error() string {
	threads := ""
	if e.threads != "" {
		threads = "\n--- vmm's threads in L1 ---\n" + strings.TrimRight(e.threads, "\n")
	}
	if e.cpus != "" {
		threads += "\n--- L1's CPUs while the run's output stood still ---\n" + strings.TrimRight(e.cpus, "\n")
	}
	return fmt.Sprintf("%v\n--- job console (tail) ---\n%s\n--- L1 kernel log (tail) ---\n%s%s\n---", e.err, e.console, e.klog, threads)
}

func (e *tailError) Unwrap() error { return e.err }

func (l *L1) withTails(err error) error {
	var te *tailError
	if errors.As(err, &te) {
		return err
	}
	return &tailError{err: err, console: l.ConsoleTail(25), klog: l.KernelLogTail(40)}
}

// suspectSilence is how long L1 may have said nothing (the agent beats
// every 2 s) at the end of a wait on a guest before the wait asks the
// watchdog for its verdict instead of reporting a timeout; a third of
// Config.FreezeTimeout if that is shorter.
const suspectSilence = 10 * time.Second

// freezeVerdict returns L1's death (ErrFrozen, when the watchdog finds
// it froze) if L1 has been silent for suspectSilence or more, once the
// watchdog decides, or nil if L1 speaks again first or was not silent.
// A test's wait is often shorter than the watchdog's timeout; a freeze
// that began during it would otherwise be reported as the guest's
// timeout, which the retry judge rightly does not excuse.
func (l *L1) freezeVerdict() error {
	if l.cfg.FreezeTimeout <= 0 {
		return nil // no watchdog
	}
	l.mu.Lock()
	silent, _ := l.wd.expired(l.now())
	l.mu.Unlock()
	if silent == 0 || silent < min(suspectSilence, l.cfg.FreezeTimeout/3) {
		return nil
	}
	give := time.NewTimer(l.cfg.FreezeTimeout - silent + monitorWait(l.cfg.FreezeTimeout) + 2*l.wd.pollInterval())
	defer give.Stop()
	tick := time.NewTicker(l.wd.pollInterval())
	defer tick.Stop()
	for {
		l.mu.Lock()
		dead := l.dead
		now, _ := l.wd.expired(l.now())
		changed := l.changed
		l.mu.Unlock()
		switch {
		case dead != nil:
			return dead
		case now < silent:
			return nil // L1 spoke
		}
		silent = now
		select {
		case <-changed:
		case <-tick.C:
		case <-give.C:
			return nil
		}
	}
}

// threadsTimeout bounds the agent's threads report (an exec of its
// threads tool), which samples for a second.
const threadsTimeout = 15 * time.Second

// sysrqTimeout bounds the agent's answer to a sysrq request, which it
// serves without starting a process: sysrq l waits up to 10 s for CPUs
// that do not take its NMI (lib/nmi_backtrace.c), which is what a held
// CPU might do.
const sysrqTimeout = 12 * time.Second

// threadsLogLines bounds the kernel log withThreads adds: two CPUs'
// backtraces and a few blocked tasks.
const threadsLogLines = 300

// withThreads adds to a tailError what the threads of vmm and its helper
// were doing in L1 (l1init's "threads" tool), for a wait on a guest that
// timed out: a guest that stops making progress while L1 stays alive
// leaves no other trace of whether vmm or the emulator stopped it. If
// one of L1's CPUs was held inside its guest (HeldCPUs), the error also
// wraps ErrCPUHeld. It takes up to about 35 s.
func (l *L1) withThreads(err error) error {
	var te *tailError
	if !errors.As(err, &te) || te.threads != "" || l.deadErr() != nil {
		return err
	}
	p := l.probeCPUs(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), threadsTimeout)
	defer cancel()
	rep, _, xerr := l.execAside(ctx, "/init", "threads", "vmm")
	out := p.note + rep
	if xerr != nil {
		out += fmt.Sprintf("(no report: %v)\n", firstLine(xerr))
	}
	s := l.finishProbe(p)
	te.threads = out + "--- L1 kernel log since ---\n" + lastLines([]byte(s.klog), threadsLogLines)
	if len(s.held) > 0 {
		te.err = fmt.Errorf("%w; %w: %s", te.err, ErrCPUHeld, heldSummary(s.held))
	}
	return err
}

// cpuProbe is a look at L1's CPUs under way (probeCPUs): the time
// counters read, the backtraces asked for.
type cpuProbe struct {
	times string // the two readings of proto.OpCPUTimes; "" if the agent gave none
	note  string // the readings as text, and what the agent could not do
	mark  int64  // where L1's kernel log ended before the backtraces were asked for
}

// cpuSample is a finished look (finishProbe): the CPUs HeldCPUs found
// held, and L1's kernel log written after the readings.
type cpuSample struct {
	cpuProbe
	held []string
	klog string
}

// probeCPUs reads L1's per-CPU time counters twice, proto.CPUTimesGap
// apart, then asks for every CPU's backtrace and the blocked tasks
// (sysrq l and w), which go to L1's kernel log: what HeldCPUs weighs.
// The agent does all of it from its own process, which keeps off the
// jobs' CPU, so none of it needs that CPU but for its NMI; the
// backtraces reach the host on the log's own serial port even if the
// agent's answer then hangs. It takes up to about 26 s (sysrqTimeout).
// The readings come first so that a CPU the backtraces find in KVM_RUN
// is known to have taken no tick just before.
func (l *L1) probeCPUs(ctx context.Context) cpuProbe {
	var p cpuProbe
	switch r, err := l.request(ctx, proto.Msg{Op: proto.OpCPUTimes}, proto.CPUTimesGap+sysrqTimeout); {
	case err != nil:
		p.note = fmt.Sprintf("(cpu times: %v)\n", err)
	case r.Op != proto.OpResult:
		p.note = fmt.Sprintf("(cpu times: %s)\n", r.Error)
	default:
		p.times = string(r.Output)
		first, second, _ := strings.Cut(p.times, proto.CPUTimesSep)
		p.note = fmt.Sprintf("L1's CPU times (/proc/stat), %v apart:\n%s%s", proto.CPUTimesGap, cpuStatLines(first), cpuStatLines(second))
	}
	p.mark = l.KernelLogMark()
	if r, err := l.request(ctx, proto.Msg{Op: proto.OpSysrq, Args: []string{"lw"}}, sysrqTimeout); err != nil {
		p.note += fmt.Sprintf("(sysrq: %v)\n", err)
	} else if r.Op == proto.OpError {
		p.note += fmt.Sprintf("(sysrq: %s)\n", r.Error)
	}
	return p
}

// finishProbe waits a second for the last of p's backtraces to reach
// the host through L1's serial port, then weighs them (HeldCPUs).
func (l *L1) finishProbe(p cpuProbe) cpuSample {
	time.Sleep(time.Second)
	since := l.KernelLogSince(p.mark)
	return cpuSample{cpuProbe: p, held: HeldCPUs(p.times, since), klog: since}
}

// heldSummary is what an error wrapping ErrCPUHeld says of the CPUs
// HeldCPUs found; Judge quotes it as its reason to retry.
func heldSummary(held []string) string {
	return fmt.Sprintf("CPU %s took no timer tick in %v, its NMI backtrace in KVM_RUN", strings.Join(held, ", "), proto.CPUTimesGap)
}

// cpuStatLines returns the per-CPU lines of a /proc/stat reading.
func cpuStatLines(stat string) string {
	var b strings.Builder
	for _, line := range strings.Split(stat, "\n") {
		if strings.HasPrefix(line, "cpu") && !strings.HasPrefix(line, "cpu ") {
			b.WriteString("  " + line + "\n")
		}
	}
	return b.String()
}

// Close powers L1 off (killing QEMU if it does not comply) and removes the
// work directory if Start created it.
func (l *L1) Close() error {
	var err error
	l.closing.Do(func() {
		if l.cmd != nil && l.deadErr() == nil {
			if serr := l.send(proto.Msg{Op: proto.OpPoweroff}); serr == nil {
				select {
				case <-l.exited:
				case <-time.After(10 * time.Second):
				}
			}
		}
		l.setDead(ErrClosed)
		if l.cmd != nil {
			select {
			case <-l.exited:
			default:
				l.cmd.Process.Kill()
				select {
				case <-l.exited:
				case <-time.After(10 * time.Second):
					err = fmt.Errorf("nested: QEMU pid %d did not exit after SIGKILL", l.cmd.Process.Pid)
				}
			}
		} else {
			if l.con != nil {
				l.con.Close()
			}
			if l.ctl != nil {
				l.ctl.Close()
			}
			if l.mon != nil {
				l.mon.Close()
			}
		}
		if l.ownDir {
			if rerr := os.RemoveAll(l.dir); rerr != nil && err == nil {
				err = fmt.Errorf("nested: remove work dir: %w", rerr)
			}
		}
	})
	return err
}
