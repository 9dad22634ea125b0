package machine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/kvm"
)

// fakeVCPU is a scripted vcpu: Run returns the script's exits in order,
// then behaves like a guest that keeps running, blocking until kicked.
// Like KVM's immediate_exit, a kick is sticky: every Run after it
// returns kvm.ExitIntr at once, so the script's remaining exits are
// never served.
type fakeVCPU struct {
	id     int
	script []fakeRun
	// onEnd, if not nil, replaces blocking once the script is done: it
	// is called and Run returns kvm.ExitIntr (the allocation test uses
	// it to end the loop without a kick).
	onEnd func()
	// pending are exits the runs after the kick return before they are
	// interrupted: what KVM's completion of a split access brings.
	pending []fakeRun
	// onLeave, if not nil, is called once, by the first run after the
	// kick that returns kvm.ExitIntr: the vCPU leaving the guest.
	onLeave func()
	// regs, sregs and regsErr are what Regs and Sregs report.
	regs    kvm.Regs
	sregs   kvm.Sregs
	regsErr error
	// mp is what MPState reports.
	mp kvm.MPState

	kicked   chan struct{}
	kickOnce sync.Once
	kicks    atomic.Int32
	closed   atomic.Bool

	// Owned by the vCPU's goroutine; read by the test after Run.
	next       int    // index of the next scripted exit
	runs       int    // Run calls
	kickedRuns int    // Run calls after the kick
	tid        int    // thread of bindThread, 0 before
	misuse     string // the first broken rule of the vcpu contract
}

type fakeRun struct {
	e   exit
	err error
}

func newFakeVCPU(id int, script ...fakeRun) *fakeVCPU {
	return &fakeVCPU{id: id, script: script, kicked: make(chan struct{})}
}

func (f *fakeVCPU) ID() int { return f.id }

func (f *fakeVCPU) bindThread() {
	if f.tid != 0 && f.misuse == "" {
		f.misuse = "bindThread called twice"
	}
	f.tid = unix.Gettid()
}

// Run checks the thread rule a real vCPU has (every KVM_RUN from the
// thread bound first) before serving the script.
func (f *fakeVCPU) Run() (exit, error) {
	if f.misuse == "" {
		if f.tid == 0 {
			f.misuse = "Run before bindThread"
		} else if tid := unix.Gettid(); tid != f.tid {
			f.misuse = fmt.Sprintf("Run on thread %d, bound to %d", tid, f.tid)
		}
	}
	f.runs++
	select {
	case <-f.kicked:
		return f.afterKick()
	default:
	}
	if f.next < len(f.script) {
		r := f.script[f.next]
		f.next++
		return r.e, r.err
	}
	if f.onEnd != nil {
		f.onEnd()
		return exit{reason: kvm.ExitIntr}, nil
	}
	<-f.kicked
	return f.afterKick()
}

// afterKick is a run after a kick: interrupted at once, as with
// immediate_exit. A loop that keeps running a kicked vCPU ignores the
// stop; the fake ends it with an error rather than spin for ever.
func (f *fakeVCPU) afterKick() (exit, error) {
	f.kickedRuns++
	if len(f.pending) > 0 {
		r := f.pending[0]
		f.pending = f.pending[1:]
		return r.e, r.err
	}
	if f.onLeave != nil {
		f.onLeave()
		f.onLeave = nil
	}
	if f.kickedRuns > 100 {
		if f.misuse == "" {
			f.misuse = "run 100 times after a kick: the loop ignores the stop"
		}
		return exit{}, errors.New(f.misuse)
	}
	return exit{reason: kvm.ExitIntr}, nil
}

func (f *fakeVCPU) kick() {
	f.kicks.Add(1)
	f.kickOnce.Do(func() { close(f.kicked) })
}

func (f *fakeVCPU) Regs() (kvm.Regs, error)       { return f.regs, f.regsErr }
func (f *fakeVCPU) Sregs() (kvm.Sregs, error)     { return f.sregs, f.regsErr }
func (f *fakeVCPU) MPState() (kvm.MPState, error) { return f.mp, f.regsErr }
func (f *fakeVCPU) Close() error                  { f.closed.Store(true); return nil }

// The exits a test scripts. Each builds a consistent exit the way
// kvm.VCPU's decoders would (Data is Size*Count bytes); the returned
// buffers are what the exit's Data aliases, for the test to read what
// the devices filled in.

func ioOut(port uint16, size uint8, data ...byte) fakeRun {
	return fakeRun{e: exit{reason: kvm.ExitIO, io: kvm.IOExit{
		Direction: kvm.IOOut, Size: size, Port: port, Count: uint32(len(data) / int(size)), Data: data,
	}}}
}

func ioIn(port uint16, size uint8, count uint32) (fakeRun, []byte) {
	buf := make([]byte, int(size)*int(count))
	for i := range buf {
		buf[i] = 0x5a // neither all ones nor zero: shows whether a device wrote it
	}
	return fakeRun{e: exit{reason: kvm.ExitIO, io: kvm.IOExit{
		Direction: kvm.IOIn, Size: size, Port: port, Count: count, Data: buf,
	}}}, buf
}

func mmioWrite(addr uint64, data ...byte) fakeRun {
	return fakeRun{e: exit{reason: kvm.ExitMMIO, mmio: kvm.MMIOExit{Addr: addr, Data: data, IsWrite: true}}}
}

func mmioRead(addr uint64, n int) (fakeRun, []byte) {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = 0x5a
	}
	return fakeRun{e: exit{reason: kvm.ExitMMIO, mmio: kvm.MMIOExit{Addr: addr, Data: buf}}}, buf
}

func exitOf(reason kvm.ExitReason) fakeRun { return fakeRun{e: exit{reason: reason}} }

// fakeWiring records what devices ask of the VM's interrupt wiring.
type fakeWiring struct {
	mu       sync.Mutex
	levels   map[uint32][]bool // every IRQLine call, per GSI
	irqfds   map[uint32]int    // GSI -> eventfd
	ioevents []fakeIOEvent
	routes   []kvm.IRQRoute // the last SetGSIRouting
	err      error          // returned by IRQFD and IOEventFD
}

type fakeIOEvent struct {
	fd        int
	addr      uint64
	n         uint32
	datamatch uint64
	flags     uint32
}

func newFakeWiring() *fakeWiring {
	return &fakeWiring{levels: map[uint32][]bool{}, irqfds: map[uint32]int{}}
}

func (w *fakeWiring) IRQLine(gsi uint32, high bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.levels[gsi] = append(w.levels[gsi], high)
	return nil
}

func (w *fakeWiring) IRQFD(efd int, gsi uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.irqfds[gsi] = efd
	return nil
}

func (w *fakeWiring) IOEventFD(efd int, addr uint64, n uint32, datamatch uint64, flags uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.ioevents = append(w.ioevents, fakeIOEvent{fd: efd, addr: addr, n: n, datamatch: datamatch, flags: flags})
	return nil
}

func (w *fakeWiring) SetGSIRouting(routes []kvm.IRQRoute) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.routes = append([]kvm.IRQRoute(nil), routes...)
	return nil
}

func (w *fakeWiring) lineLevels(gsi uint32) []bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]bool(nil), w.levels[gsi]...)
}

// newFakeMachine builds a machine the way New does after KVM is open,
// minus KVM: the real devices at their layout addresses, wired to a
// fake irqchip, and the given scripted vCPUs.
func newFakeMachine(t *testing.T, cfg Config, vcpus ...*fakeVCPU) (*Machine, *fakeWiring) {
	t.Helper()
	m := newMachine(cfg)
	t.Cleanup(func() { m.Close() })
	if err := m.openVirtio(); err != nil {
		t.Fatal(err)
	}
	m.mem = lowMem(t, 1<<20)
	w := newFakeWiring()
	if err := m.addDevices(w); err != nil {
		t.Fatal(err)
	}
	for _, v := range vcpus {
		m.vcpus = append(m.vcpus, v)
	}
	return m, w
}
