package machine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/virtio"
)

// runFake runs m and fails the test if it has not stopped by itself
// within a generous bound (a stop that never reaches a vCPU hangs).
func runFake(t *testing.T, m *Machine) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := runBounded(ctx, t, m)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("Run did not stop by itself")
	}
	return err
}

// runBounded runs m with ctx. If Run has not returned 10 seconds after
// ctx ended, the stop protocol failed: it kicks the fake vCPUs itself,
// so the test fails instead of hanging.
func runBounded(ctx context.Context, t *testing.T, m *Machine) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
	}
	for _, v := range m.vcpus {
		v.kick()
	}
	<-done
	t.Fatal("Run did not return after its context ended: the stop did not reach every vCPU")
	return nil
}

// checkContract fails the test if the loop broke a rule of the vcpu
// interface on any of vs: Run before bindThread, or from another thread.
func checkContract(t *testing.T, vs ...*fakeVCPU) {
	t.Helper()
	for _, v := range vs {
		if v.misuse != "" {
			t.Errorf("vCPU %d: %s", v.id, v.misuse)
		}
	}
}

// exitWith is the guest's last word in most scripts: a status written to
// the exit port, which stops the machine cleanly.
func exitWith(status byte) fakeRun { return ioOut(guestabi.ExitPort, 1, status) }

// unclaimedPort is a port no device of the layout answers.
const unclaimedPort = 0x1234

func TestIOExits(t *testing.T) {
	type want struct {
		buf     []byte // what the IN exit's data must hold after the run
		console string
		job     string
	}
	tests := []struct {
		name    string
		withJob bool
		// exit is the access under test; in is true for an IN, whose
		// data the devices fill in.
		out  fakeRun
		in   func() (fakeRun, []byte)
		want want
	}{
		{name: "outb to COM1 reaches the console", out: ioOut(com1Port, 1, 'h'), want: want{console: "h"}},
		{name: "rep outsb to COM1 is count writes to one port", out: ioOut(com1Port, 1, 'a', 'b', 'c'), want: want{console: "abc"}},
		{name: "outb to COM2 reaches the job's output", withJob: true, out: ioOut(com2Port, 1, 'j'), want: want{job: "j"}},
		{name: "outb to COM2 without a job goes nowhere", out: ioOut(com2Port, 1, 'j')},
		{name: "outl to an unclaimed port is ignored", out: ioOut(unclaimedPort, 4, 1, 2, 3, 4)},
		{name: "inb from an unclaimed port reads all ones", in: func() (fakeRun, []byte) { return ioIn(unclaimedPort, 1, 1) },
			want: want{buf: []byte{0xff}}},
		{name: "inw from an unclaimed port reads all ones", in: func() (fakeRun, []byte) { return ioIn(unclaimedPort, 2, 1) },
			want: want{buf: []byte{0xff, 0xff}}},
		{name: "inl from an unclaimed port reads all ones", in: func() (fakeRun, []byte) { return ioIn(unclaimedPort, 4, 1) },
			want: want{buf: []byte{0xff, 0xff, 0xff, 0xff}}},
		{name: "rep insw from an unclaimed port reads all ones", in: func() (fakeRun, []byte) { return ioIn(unclaimedPort, 2, 3) },
			want: want{buf: bytes.Repeat([]byte{0xff}, 6)}},
		// LSR of an idle 16550A: THR empty, transmitter empty.
		{name: "inb from COM1's LSR", in: func() (fakeRun, []byte) { return ioIn(com1Port+5, 1, 1) },
			want: want{buf: []byte{0x60}}},
		// String input repeats one port; it does not walk the registers
		// the way one wide access does.
		{name: "rep insb from COM1's LSR reads the LSR each time", in: func() (fakeRun, []byte) { return ioIn(com1Port+5, 1, 3) },
			want: want{buf: []byte{0x60, 0x60, 0x60}}},
		{name: "inb from COM2 without a job reads all ones", in: func() (fakeRun, []byte) { return ioIn(com2Port+5, 1, 1) },
			want: want{buf: []byte{0xff}}},
		{name: "inl from the exit port reads zero", in: func() (fakeRun, []byte) { return ioIn(guestabi.ExitPort, 4, 1) },
			want: want{buf: []byte{0, 0, 0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var console, job bytes.Buffer
			cfg := Config{Console: &console}
			if tt.withJob {
				cfg.JobOutput = &job
			}
			access, buf := tt.out, []byte(nil)
			if tt.in != nil {
				access, buf = tt.in()
			}
			v := newFakeVCPU(0, access, exitWith(0))
			m, _ := newFakeMachine(t, cfg, v)
			if err := runFake(t, m); err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkContract(t, v)
			if tt.in != nil && !bytes.Equal(buf, tt.want.buf) {
				t.Errorf("IN data %#x, want %#x", buf, tt.want.buf)
			}
			if got := console.String(); got != tt.want.console {
				t.Errorf("console %q, want %q", got, tt.want.console)
			}
			if got := job.String(); got != tt.want.job {
				t.Errorf("job output %q, want %q", got, tt.want.job)
			}
			if s, ok := m.ExitStatus(); !ok || s != 0 {
				t.Errorf("ExitStatus() = %d, %v; want 0, true: the access stopped the loop early", s, ok)
			}
		})
	}
}

// newDisk makes a one-sector raw image for a virtio-blk disk.
func newDisk(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 512), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMMIOExits(t *testing.T) {
	virtioMagic := []byte("virt") // MagicValue, virtio v1.2 §4.2.2
	tests := []struct {
		name  string
		disks int
		read  func() (fakeRun, []byte) // nil for a write
		write fakeRun
		want  []byte
	}{
		{name: "1-byte read of nothing reads all ones", read: func() (fakeRun, []byte) { return mmioRead(0xe0000000, 1) }, want: []byte{0xff}},
		{name: "8-byte read of nothing reads all ones", read: func() (fakeRun, []byte) { return mmioRead(0xe0000000, 8) }, want: bytes.Repeat([]byte{0xff}, 8)},
		{name: "write to nothing is ignored", write: mmioWrite(0xe0000000, 1, 2, 3, 4)},
		{name: "virtio transport at its layout address", disks: 1,
			read: func() (fakeRun, []byte) { return mmioRead(virtioMMIOBase+virtio.MMIOMagicValue, 4) }, want: virtioMagic},
		{name: "second virtio transport one stride up", disks: 2,
			read: func() (fakeRun, []byte) { return mmioRead(virtioMMIOBase+virtioMMIOStride, 4) }, want: virtioMagic},
		{name: "no transport past the last disk", disks: 1,
			read: func() (fakeRun, []byte) { return mmioRead(virtioMMIOBase+virtioMMIOStride, 4) }, want: bytes.Repeat([]byte{0xff}, 4)},
		{name: "write to a virtio transport's read-only register", disks: 1, write: mmioWrite(virtioMMIOBase+virtio.MMIOMagicValue, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Transport: VirtioMMIO}
			for range tt.disks {
				cfg.Disks = append(cfg.Disks, Disk{Path: newDisk(t)})
			}
			access, buf := tt.write, []byte(nil)
			if tt.read != nil {
				access, buf = tt.read()
			}
			v := newFakeVCPU(0, access, exitWith(0))
			m, _ := newFakeMachine(t, cfg, v)
			if err := runFake(t, m); err != nil {
				t.Fatalf("Run: %v", err)
			}
			checkContract(t, v)
			if tt.read != nil && !bytes.Equal(buf, tt.want) {
				t.Errorf("read %#x, want %#x", buf, tt.want)
			}
			if m.Reason() != StopExit {
				t.Errorf("stopped for %v, want exit: the access stopped the loop", m.Reason())
			}
		})
	}
}

// resetRegs is the state of a vCPU just after reset or INIT: what KVM
// leaves on AMD before reporting a triple fault.
func resetRegs(v *fakeVCPU) {
	v.regs = kvm.Regs{RIP: resetRIP, RFLAGS: 2}
	v.sregs = kvm.Sregs{CS: kvm.Segment{Base: resetCSBase, Selector: 0xf000}, CR0: cr0ET}
}

// faultRegs is a long-mode vCPU somewhere in the kernel.
func faultRegs(v *fakeVCPU) {
	v.regs = kvm.Regs{RIP: 0xffffffff81000123, RSP: 0xffffc90000003f00}
	v.sregs = kvm.Sregs{CR0: cr0PE | cr0PG, CR3: 0x1000, CR4: cr4PAE, EFER: eferLME | eferLMA}
}

func TestFatalExits(t *testing.T) {
	errRun := errors.New("KVM_RUN vCPU 1: bad address")
	tests := []struct {
		name  string
		id    int
		run   fakeRun
		regs  func(*fakeVCPU)
		want  string // the whole error
		cause error  // errors.Is the error, if not nil
	}{
		{name: "hlt", run: exitOf(kvm.ExitHLT), regs: faultRegs,
			want: "vCPU 0: guest halted with interrupts off at RIP=0xffffffff81000123 RSP=0xffffc90000003f00 CR0=0x80000001 CR3=0x1000 CR4=0x20 EFER=0x500"},
		{name: "triple fault names the vCPU and where", id: 3, run: exitOf(kvm.ExitShutdown), regs: faultRegs,
			want: "vCPU 3: guest triple fault (KVM_EXIT_SHUTDOWN) at RIP=0xffffffff81000123 RSP=0xffffc90000003f00 CR0=0x80000001 CR3=0x1000 CR4=0x20 EFER=0x500"},
		{name: "triple fault after KVM reset the vCPU", run: exitOf(kvm.ExitShutdown), regs: resetRegs,
			want: "vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN) (registers lost: KVM resets the vCPU before reporting this on AMD)"},
		{name: "triple fault with unreadable registers", run: exitOf(kvm.ExitShutdown),
			regs: func(v *fakeVCPU) { v.regsErr = errors.New("KVM_GET_REGS: EIO") },
			want: "vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN)"},
		{name: "fail entry", run: fakeRun{e: exit{reason: kvm.ExitFailEntry, failEntry: 0x80000021}}, regs: faultRegs,
			want: "vCPU 0: KVM_EXIT_FAIL_ENTRY, hardware reason 0x80000021 at RIP=0xffffffff81000123 RSP=0xffffc90000003f00 CR0=0x80000001 CR3=0x1000 CR4=0x20 EFER=0x500"},
		{name: "internal error", run: fakeRun{e: exit{reason: kvm.ExitInternalError, internalSub: 1, internalData: []uint64{0x10, 0x7f}}},
			regs: func(v *fakeVCPU) { v.regsErr = errors.New("unreadable") },
			want: "vCPU 0: KVM_EXIT_INTERNAL_ERROR suberror 1 data [0x10 0x7f]"},
		{name: "crash event", run: fakeRun{e: exit{reason: kvm.ExitSystemEvent, event: kvm.SystemEventCrash}},
			regs: func(v *fakeVCPU) { v.regsErr = errors.New("unreadable") },
			want: "vCPU 0: guest crashed (system event 3)"},
		{name: "exit reason vmm does not handle", run: exitOf(kvm.ExitDebug),
			regs: func(v *fakeVCPU) { v.regsErr = errors.New("unreadable") },
			want: "vCPU 0: unexpected KVM_EXIT_DEBUG"},
		{name: "exit reason nobody knows", run: exitOf(kvm.ExitReason(99)),
			regs: func(v *fakeVCPU) { v.regsErr = errors.New("unreadable") },
			want: "vCPU 0: unexpected KVM_EXIT_99"},
		{name: "KVM_RUN fails", id: 1, run: fakeRun{err: errRun},
			want: errRun.Error(), cause: errRun},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newFakeVCPU(tt.id, ioOut(com1Port, 1, 'k'), tt.run, ioOut(com1Port, 1, '!'))
			if tt.regs != nil {
				tt.regs(v)
			}
			var console bytes.Buffer
			m, _ := newFakeMachine(t, Config{Console: &console}, v)
			err := runFake(t, m)
			checkContract(t, v)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Run: %v\nwant: %s", err, tt.want)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("Run: %v does not wrap %v", err, tt.cause)
			}
			if m.Reason() != StopError {
				t.Errorf("stopped for %v, want error", m.Reason())
			}
			if _, ok := m.ExitStatus(); ok {
				t.Error("ExitStatus reports a status the guest never wrote")
			}
			if got := console.String(); got != "k" {
				t.Errorf("console %q, want %q: the vCPU must run up to the fatal exit and no further", got, "k")
			}
		})
	}
}

func TestGuestStops(t *testing.T) {
	var s5 [2]byte // PM1 control: SLP_TYP = S5 and SLP_EN (ACPI 6.4 §4.8.3.2.1)
	s5[1] = pm.SleepTypeS5<<2 | 1<<5
	tests := []struct {
		name       string
		script     []fakeRun
		want       StopReason
		wantStatus int // -1 for none
	}{
		{"KVM shutdown event", []fakeRun{{e: exit{reason: kvm.ExitSystemEvent, event: kvm.SystemEventShutdown}}}, StopPoweroff, -1},
		{"KVM reset event", []fakeRun{{e: exit{reason: kvm.ExitSystemEvent, event: kvm.SystemEventReset}}}, StopReboot, -1},
		{"ACPI S5 through the PM device", []fakeRun{ioOut(pmPort+pm.PM1CntOffset, 2, s5[0], s5[1])}, StopPoweroff, -1},
		{"ACPI S5 a byte at a time", []fakeRun{ioOut(pmPort+pm.PM1CntOffset+1, 1, s5[1])}, StopPoweroff, -1},
		{"ACPI reset register", []fakeRun{ioOut(pmPort+pm.ResetRegOffset, 1, pm.ResetValue)}, StopReboot, -1},
		{"i8042 reset pulse", []fakeRun{ioOut(i8042Port+4, 1, 0xfe)}, StopReboot, -1},
		{"exit port outb", []fakeRun{exitWith(42)}, StopExit, 42},
		{"exit port outl counts its low byte", []fakeRun{ioOut(guestabi.ExitPort, 4, 7, 1, 0, 0)}, StopExit, 7},
		{"exit port rep outsw: the first status wins", []fakeRun{ioOut(guestabi.ExitPort, 2, 3, 0, 9, 0)}, StopExit, 3},
		{"exit status 0", []fakeRun{exitWith(0)}, StopExit, 0},
		{"interrupted runs (signals) do not stop the guest", []fakeRun{exitOf(kvm.ExitIntr), exitOf(kvm.ExitIntr), exitWith(5)}, StopExit, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// After the stop, the vCPU must not run on: a write to the
			// console would show it did.
			v := newFakeVCPU(0, append(tt.script, ioOut(com1Port, 1, '!'))...)
			var console bytes.Buffer
			m, _ := newFakeMachine(t, Config{Console: &console}, v)
			if err := runFake(t, m); err != nil {
				t.Fatalf("Run: %v, want nil", err)
			}
			checkContract(t, v)
			if m.Reason() != tt.want {
				t.Errorf("stopped for %v, want %v", m.Reason(), tt.want)
			}
			s, ok := m.ExitStatus()
			if tt.wantStatus < 0 && ok {
				t.Errorf("ExitStatus() = %d, true; the guest wrote none", s)
			}
			if tt.wantStatus >= 0 && (!ok || s != tt.wantStatus) {
				t.Errorf("ExitStatus() = %d, %v; want %d, true", s, ok, tt.wantStatus)
			}
			if console.Len() != 0 {
				t.Errorf("console %q: the vCPU ran after the stop", console.String())
			}
			if v.kicks.Load() != 1 {
				t.Errorf("vCPU kicked %d times, want once", v.kicks.Load())
			}
		})
	}
}

// TestRunVCPUPanic: a panic on a vCPU's thread (a bug in a device's
// emulation) stops the machine with an error naming it, and the other
// vCPUs with it, rather than crashing vmm.
func TestRunVCPUPanic(t *testing.T) {
	bad := newFakeVCPU(0)
	bad.onEnd = func() { panic("device bug") }
	other := newFakeVCPU(1)
	m, _ := newFakeMachine(t, Config{}, bad, other)
	err := runFake(t, m)
	if err == nil || err.Error() != "vCPU 0: internal error, a bug in vmm: device bug" {
		t.Fatalf("Run: %v, want the panic as an error of one line", err)
	}
	// The stack, for the report, where the panic was.
	if bug, ok := errors.AsType[*BugError](err); !ok || !strings.Contains(string(bug.Stack), "TestRunVCPUPanic") {
		t.Errorf("Run: %#v, want a BugError with the panic's stack", err)
	}
	if m.Reason() != StopError {
		t.Errorf("stopped for %v, want StopError", m.Reason())
	}
}

func TestRunCanceled(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"timeout", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
		{"canceled before Run", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Two vCPUs running the guest until stopped: one that had a
			// few exits first and one that never left the guest.
			busy := newFakeVCPU(0, ioOut(com1Port, 1, 'a'), exitOf(kvm.ExitIntr), ioOut(unclaimedPort, 1, 0))
			busy.regs = kvm.Regs{RIP: 0xffffffff81000010, RFLAGS: rflagsIF | 2}
			busy.mp.State = kvm.MPStateHalted
			idle := newFakeVCPU(1)
			idle.regs = kvm.Regs{RIP: 0x401000, RFLAGS: 2}
			idle.sregs.SS.DPL = 3
			m, _ := newFakeMachine(t, Config{}, busy, idle)
			ctx, cancel := tt.ctx()
			defer cancel()
			if err := runBounded(ctx, t, m); !errors.Is(err, tt.want) {
				t.Errorf("Run: %v, want %v", err, tt.want)
			}
			checkContract(t, busy, idle)
			if m.Reason() != StopCanceled {
				t.Errorf("stopped for %v, want canceled", m.Reason())
			}
			want := []VCPUPlace{
				{Known: true, RIP: 0xffffffff81000010, CPL: 0, Interrupts: true, Halted: true},
				{Known: true, RIP: 0x401000, CPL: 3, Interrupts: false},
			}
			if got := m.Places(); !slices.Equal(got, want) {
				t.Errorf("Places: %+v, want %+v", got, want)
			}
			for _, v := range []*fakeVCPU{busy, idle} {
				if v.kicks.Load() != 1 {
					t.Errorf("vCPU %d kicked %d times, want once", v.id, v.kicks.Load())
				}
			}
		})
	}
}

func TestAllVCPUsStopTogether(t *testing.T) {
	tests := []struct {
		name    string
		last    fakeRun // what vCPU 2 ends with
		want    StopReason
		wantErr string
	}{
		{"reboot", ioOut(pmPort+pm.ResetRegOffset, 1, pm.ResetValue), StopReboot, ""},
		{"exit status", exitWith(9), StopExit, ""},
		{"one vCPU's triple fault", exitOf(kvm.ExitShutdown), StopError, "vCPU 2: guest triple fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vs []*fakeVCPU
			for i := range 4 {
				var script []fakeRun
				if i == 2 {
					script = []fakeRun{ioOut(com1Port, 1, 'x'), exitOf(kvm.ExitIntr), tt.last}
				}
				v := newFakeVCPU(i, script...)
				v.regsErr = errors.New("unreadable")
				vs = append(vs, v)
			}
			m, _ := newFakeMachine(t, Config{}, vs...)
			err := runFake(t, m)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)) {
				t.Errorf("Run: %v, want %q", err, tt.wantErr)
			}
			if m.Reason() != tt.want {
				t.Errorf("stopped for %v, want %v", m.Reason(), tt.want)
			}
			if p := m.Places(); p != nil {
				t.Errorf("Places after a %v: %+v, want none", tt.want, p)
			}
			checkContract(t, vs...)
			for _, v := range vs {
				if v.kicks.Load() != 1 {
					t.Errorf("vCPU %d kicked %d times, want once", v.id, v.kicks.Load())
				}
			}
		})
	}
}

// TestFirstStopWins checks the stop protocol itself: the first reason
// sticks, whatever comes after, and each vCPU is kicked once.
func TestFirstStopWins(t *testing.T) {
	a, b := newFakeVCPU(0), newFakeVCPU(1)
	m, _ := newFakeMachine(t, Config{}, a, b)
	m.stop(StopPoweroff, nil)
	m.stop(StopError, errors.New("late failure"))
	m.stop(StopCanceled, context.Canceled)
	if err := runFake(t, m); err != nil {
		t.Errorf("Run after a poweroff: %v, want nil", err)
	}
	if m.Reason() != StopPoweroff {
		t.Errorf("stopped for %v, want poweroff", m.Reason())
	}
	for _, v := range []*fakeVCPU{a, b} {
		if v.kicks.Load() != 1 {
			t.Errorf("vCPU %d kicked %d times, want once", v.id, v.kicks.Load())
		}
		if v.runs > 1 {
			t.Errorf("vCPU %d entered the guest %d times after the stop", v.id, v.runs)
		}
	}
}

func TestBootTimerMarksRun(t *testing.T) {
	timer := boottimer.New(time.Now())
	boot := newFakeVCPU(0, ioOut(guestabi.BootTimerPort, 1, byte(guestabi.Ready)), ioOut(pmPort+pm.ResetRegOffset, 1, pm.ResetValue))
	ap := newFakeVCPU(1)
	m, _ := newFakeMachine(t, Config{BootTimer: timer}, boot, ap)
	if err := runFake(t, m); err != nil {
		t.Fatal(err)
	}
	var got []guestabi.Phase
	for _, s := range timer.Stamps() {
		got = append(got, s.Phase)
	}
	for _, p := range []guestabi.Phase{guestabi.FirstRun, guestabi.FirstExit, guestabi.Ready, guestabi.Poweroff} {
		if !slices.Contains(got, p) {
			t.Errorf("stamps %v lack %v", got, p)
		}
	}
}

// TestFirstExitIsTheGuests checks that a run interrupted before the guest
// ever exits (a kick, a signal) is not taken for the guest's first exit:
// kvmprobe and the boot benchmark read that stamp as "the kernel runs".
func TestFirstExitIsTheGuests(t *testing.T) {
	timer := boottimer.New(time.Now())
	boot := newFakeVCPU(0, exitOf(kvm.ExitIntr), exitOf(kvm.ExitIntr))
	m, _ := newFakeMachine(t, Config{BootTimer: timer}, boot)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := runBounded(ctx, t, m); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	for _, s := range timer.Stamps() {
		if s.Phase == guestabi.FirstExit {
			t.Fatalf("first exit stamped at %v though the guest only had interrupted runs", s.Since)
		}
	}
}

func TestSerialInterruptLines(t *testing.T) {
	// OUT2 gates a PC UART's interrupt; THRE interrupts then fire at
	// once, as the transmitter is idle.
	const mcrOUT2, ierTHRI = 0x08, 0x02
	tests := []struct {
		name string
		port uint16
		gsi  uint32
	}{
		{"COM1", com1Port, com1IRQ},
		{"COM2", com2Port, com2IRQ},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newFakeVCPU(0, ioOut(tt.port+4, 1, mcrOUT2), ioOut(tt.port+1, 1, ierTHRI), exitWith(0))
			m, w := newFakeMachine(t, Config{JobOutput: &bytes.Buffer{}}, v)
			if err := runFake(t, m); err != nil {
				t.Fatal(err)
			}
			if got := w.lineLevels(tt.gsi); !slices.Equal(got, []bool{true}) {
				t.Errorf("GSI %d levels %v, want [true]", tt.gsi, got)
			}
		})
	}
}

func TestVirtioWiringMMIO(t *testing.T) {
	cfg := Config{Transport: VirtioMMIO, Disks: []Disk{{Path: newDisk(t)}, {Path: newDisk(t), ReadOnly: true}}}
	m, w := newFakeMachine(t, cfg)
	for i := range cfg.Disks {
		if _, ok := w.irqfds[virtioGSIBase+uint32(i)]; !ok {
			t.Errorf("disk %d: no irqfd on GSI %d", i, virtioGSIBase+i)
		}
	}
	// virtio-blk has one queue: one ioeventfd per transport, matching
	// a 4-byte write of queue index 0 to QueueNotify.
	if len(w.ioevents) != len(cfg.Disks) {
		t.Fatalf("%d ioeventfds, want %d", len(w.ioevents), len(cfg.Disks))
	}
	for i, e := range w.ioevents {
		if want := virtioAddr(i) + virtio.MMIOQueueNotify; e.addr != want || e.n != 4 || e.datamatch != 0 || e.flags != kvm.IOEventFDDatamatch {
			t.Errorf("ioeventfd %d: %+v, want a 4-byte datamatch 0 at %#x", i, e, want)
		}
	}
	if len(m.virtio) != 2 || m.virtio[0].name != "virtio-blk0" || m.virtio[1].name != "virtio-blk1" {
		t.Errorf("devices %v, want the disks in order", m.virtio)
	}
}

func TestVirtioWiringFails(t *testing.T) {
	for _, tr := range []Transport{VirtioPCI, VirtioMMIO} {
		t.Run(tr.String(), func(t *testing.T) { testVirtioWiringFails(t, tr) })
	}
}

func testVirtioWiringFails(t *testing.T, tr Transport) {
	m := newMachine(Config{Transport: tr, Disks: []Disk{{Path: newDisk(t)}}})
	defer m.Close()
	if err := m.openVirtio(); err != nil {
		t.Fatal(err)
	}
	m.mem = lowMem(t, 1<<20)
	w := newFakeWiring()
	w.err = errors.New("KVM_IRQFD: no such GSI")
	err := m.addDevices(w)
	if err == nil || !strings.Contains(err.Error(), "virtio-blk0") || !errors.Is(err, w.err) {
		t.Errorf("addDevices: %v, want the device's name and the cause", err)
	}
}

// TestRunForwardsInput: a guest opens a port for input the way Linux
// does, OUT2, RTS and the received-data interrupt on, and until then
// input waits unseen. The job port also waits for OUT1, which vmm-init
// raises once ttyS1 is raw; the console never needs it, since a guest's
// own init knows nothing of it. RTS down (a throttled tty) holds input.
func TestRunForwardsInput(t *testing.T) {
	const mcrRTS, mcrOUT1, mcrOUT2, ierRDI, lsrDR = 0x02, 0x04, 0x08, 0x01, 0x01
	for _, tt := range []struct {
		name string
		port uint16
		mcr  byte
		want bool // the input reaches the guest
	}{
		{"console", com1Port, mcrOUT2 | mcrRTS, true},
		{"console with OUT1", com1Port, mcrOUT2 | mcrRTS | mcrOUT1, true},
		{"console throttled", com1Port, mcrOUT2, false},
		{"job port before OUT1", com2Port, mcrOUT2 | mcrRTS, false},
		{"job port with OUT1", com2Port, mcrOUT2 | mcrRTS | mcrOUT1, true},
		{"job port throttled", com2Port, mcrOUT2 | mcrOUT1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := newFakeVCPU(0, ioOut(tt.port+4, 1, tt.mcr), ioOut(tt.port+1, 1, ierRDI))
			m, _ := newFakeMachine(t, Config{ConsoleIn: strings.NewReader("c"), JobOutput: &bytes.Buffer{}, JobInput: strings.NewReader("j")}, v)
			u, want := m.uart, byte('c')
			if tt.port == com2Port {
				u, want = m.job, 'j'
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			// Held input cannot be told from input still on its way
			// but by waiting: a second is thousands of times what
			// forwarding a byte takes.
			wait := 10 * time.Second
			if !tt.want {
				wait = time.Second
			}
			deadline := time.Now().Add(wait)
			lsr := []byte{0}
			for u.Read(5, lsr); lsr[0]&lsrDR == 0 && time.Now().Before(deadline); u.Read(5, lsr) {
				time.Sleep(time.Millisecond)
			}
			if got := lsr[0]&lsrDR != 0; got != tt.want {
				t.Fatalf("input shown to the guest (LSR.DR) %v, want %v", got, tt.want)
			}
			if !tt.want {
				return
			}
			b := []byte{0}
			u.Read(0, b)
			if b[0] != want {
				t.Errorf("UART received %q, want %q", b[0], want)
			}
		})
	}
}

// endlessReader never runs dry, so forwardInput blocks in Receive once
// the UART's buffer is full.
type endlessReader struct{}

func (endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'y'
	}
	return len(p), nil
}

func TestForwardInputEnds(t *testing.T) {
	t.Run("at EOF", func(t *testing.T) {
		u := serial.New(nil, nil)
		u.Write(4, []byte{0x0a}) // MCR OUT2 and RTS and IER RDI: the port is open
		u.Write(1, []byte{0x01})
		forwardInput(strings.NewReader("hi"), u, true)
		b := []byte{0}
		msr := func() byte { m := []byte{0}; u.Read(6, m); return m[0] }
		u.Read(0, b)
		if b[0] != 'h' {
			t.Errorf("UART received %q, want 'h'", b[0])
		}
		if msr()&0x20 == 0 {
			t.Error("DSR off with input unread")
		}
		u.Read(0, b)
		// The job's input has ended and the guest has all of it: DSR
		// off (serial's EndInput).
		if m := msr(); m&0x20 != 0 || b[0] != 'i' {
			t.Errorf("after the last byte %q: MSR %#x, want DSR off", b[0], m)
		}
	})
	t.Run("the console's input at EOF", func(t *testing.T) {
		u := serial.New(nil, nil)
		forwardInput(strings.NewReader(""), u, false)
		m := []byte{0}
		u.Read(6, m)
		if m[0]&0x20 == 0 {
			t.Errorf("console MSR %#x after EOF: want DSR on", m[0])
		}
	})
	t.Run("when the UART closes", func(t *testing.T) {
		u := serial.New(nil, nil)
		done := make(chan struct{})
		go func() { forwardInput(endlessReader{}, u, true); close(done) }()
		time.Sleep(10 * time.Millisecond)
		u.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("forwardInput still running after Close")
		}
	})
}

func TestCloseReleasesVCPUs(t *testing.T) {
	v := newFakeVCPU(0, exitWith(0))
	m, _ := newFakeMachine(t, Config{}, v)
	if err := runFake(t, m); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !v.closed.Load() {
		t.Error("vCPU not closed")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStopReasonString(t *testing.T) {
	for r, want := range map[StopReason]string{
		StopNone: "running", StopPoweroff: "poweroff", StopReboot: "reboot", StopCanceled: "canceled",
		StopExit: "exit", StopError: "error", StopReason(42): "StopReason(42)", StopReason(-1): "StopReason(-1)",
	} {
		if got := r.String(); got != want {
			t.Errorf("StopReason(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}

// TestExitDispatchAllocatesNothing holds the hot path to its promise:
// serving the exits a running guest makes allocates nothing, neither
// one exit at a time nor through the whole vCPU loop.
func TestExitDispatchAllocatesNothing(t *testing.T) {
	inLSR, _ := ioIn(com1Port+5, 1, 1)
	inStr, _ := ioIn(com1Port+5, 1, 16)
	inNone, _ := ioIn(unclaimedPort, 4, 1)
	readNone, _ := mmioRead(0xe0000000, 8)
	readVirtio, _ := mmioRead(virtioMMIOBase+virtio.MMIOMagicValue, 4)
	exits := []fakeRun{
		inLSR, inStr, inNone, readNone, readVirtio,
		ioOut(com1Port, 1, 'x'), ioOut(com1Port, 1, 'a', 'b', 'c', 'd'), ioOut(unclaimedPort, 2, 1, 2),
		ioOut(guestabi.BootTimerPort, 1, byte(guestabi.Ready)),
		mmioWrite(0xe0000000, 1, 2, 3, 4), exitOf(kvm.ExitIntr),
	}
	v := newFakeVCPU(0, exits...)
	m, _ := newFakeMachine(t, Config{Disks: []Disk{{Path: newDisk(t)}}, BootTimer: boottimer.New(time.Now())}, v)
	for _, x := range exits {
		e := x.e
		if n := testing.AllocsPerRun(100, func() {
			if err := m.handleExit(v, &e); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v exit (%+v): %v allocations, want 0", e.reason, e.io, n)
		}
	}
	v.onEnd = func() { m.stopping.Store(true) }
	loop := func() {
		defer runtime.UnlockOSThread() // undoes runVCPU's lock: this is the test's goroutine
		v.next = 0
		m.stopping.Store(false)
		if err := m.runVCPU(v, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	loop() // the first run stamps the boot timer's first entry and exit
	if n := testing.AllocsPerRun(20, loop); n != 0 {
		t.Errorf("vCPU loop over %d exits: %v allocations, want 0", len(exits), n)
	}
}

// A panic in device work on a goroutine of its own (a bug in vmm, never
// the guest's doing) stops the machine as an error with its stack
// instead of crashing vmm.
func TestGoDevicePanic(t *testing.T) {
	m, _ := newFakeMachine(t, Config{})
	m.goDevice("test device", func() { panic("boom") })
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the machine did not stop")
	}
	m.mu.Lock()
	reason, err := m.reason, m.err
	m.mu.Unlock()
	if reason != StopError || err == nil || !strings.Contains(err.Error(), "test device: internal error, a bug in vmm: boom") {
		t.Fatalf("stopped for %v with %v", reason, err)
	}
}

func TestVCPUPlaceString(t *testing.T) {
	tests := []struct {
		p    VCPUPlace
		want string
	}{
		{VCPUPlace{}, "unknown"},
		{VCPUPlace{Known: true, RIP: 0xffffffff81a0b2c3, Interrupts: false}, "RIP=0xffffffff81a0b2c3 in the guest's kernel, running, interrupts off"},
		{VCPUPlace{Known: true, RIP: 0xffffffff81017a0b, Interrupts: true, Halted: true}, "RIP=0xffffffff81017a0b in the guest's kernel, halted, interrupts on"},
		{VCPUPlace{Known: true, RIP: 0x401000, CPL: 3, Interrupts: true}, "RIP=0x401000 in the guest's user space, running, interrupts on"},
		{VCPUPlace{Known: true, RIP: 0x10, CPL: 1, Interrupts: true}, "RIP=0x10 in the guest at privilege level 1, running, interrupts on"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}
