// Package machine assembles a KVM virtual machine that boots a Linux
// bzImage: guest RAM, vCPUs, the in-kernel interrupt controllers, the
// legacy PC devices a distro kernel probes, ACPI tables, and the exit loop
// that routes port and MMIO accesses to devices.
//
// It is the only package that ties kvm to the guest-facing packages
// (bootparam, acpi, serial, ...), which never import kvm themselves.
package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/bus"
	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/devices/exitport"
	"github.com/vmm-dev/vmm/devices/i8042"
	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/devices/rtc"
	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/kvm"
)

// Config is what a machine is built from.
type Config struct {
	Kernel  string // path of a bzImage
	Initrd  string // path of an initramfs; empty for none
	Cmdline string // the whole kernel command line
	MemSize uint64 // bytes of guest RAM
	CPUs    int
	// Console receives the guest's serial output; ConsoleIn, if not nil,
	// is forwarded to the guest's serial input until EOF.
	Console   io.Writer
	ConsoleIn io.Reader
	// Disks and NICs become virtio devices, disks first.
	Disks []Disk
	NICs  []NIC
	// Job, if its Output is not nil, is a second UART (COM2, the guest's
	// ttyS1) carrying a job's own input and output apart from the
	// console: `vmm run` connects it to stdin and stdout.
	JobOutput io.Writer
	JobInput  io.Reader
	// InitrdAppend is an uncompressed cpio archive loaded right after the
	// initrd (Linux unpacks concatenated archives in order, so its files
	// are added to or replace the initrd's); it works without an initrd
	// too. `vmm run` passes the job and shared files this way.
	InitrdAppend []byte
	// BootTimer, if not nil, is stamped at each phase of the boot vmm
	// sees and serves the guest's phase writes at guestabi.BootTimerPort.
	BootTimer *boottimer.Timer
	// Logf reports device trouble the guest caused (a malformed queue, a
	// failed disk write) without stopping the machine; nil discards it.
	Logf func(format string, args ...any)
}

// MinMemory is the least guest RAM New accepts; a real kernel also checks
// it needs more (its init_size above 16 MiB).
const MinMemory = 16 << 20

// Machine is a VM that is built and ready to Run.
type Machine struct {
	cfg    Config
	sys    *kvm.System
	vm     *kvm.VM
	mem    *guestmem.Memory
	vcpus  []*vcpu
	pio    bus.Bus
	mmio   bus.Bus
	uart   *serial.UART
	job    *serial.UART // COM2, only with Config.JobOutput
	virtio []*virtioDev
	layout bootLayout

	stopping   atomic.Bool
	exitStatus atomic.Int32 // -1 until the guest writes the exit port
	stopOnce   sync.Once
	done       chan struct{}
	mu         sync.Mutex
	reason     StopReason
	err        error
}

type vcpu struct {
	*kvm.VCPU
	tid atomic.Int32 // OS thread running it, for kicking it out of KVM_RUN
}

// StopReason says why a machine stopped.
type StopReason int

// Why a guest stopped.
const (
	StopNone     StopReason = iota
	StopPoweroff            // ACPI S5 or KVM_SYSTEM_EVENT_SHUTDOWN
	StopReboot              // i8042 reset, ACPI reset register or KVM reset event
	StopCanceled            // the context of Run was canceled
	StopExit                // the guest wrote a status to the exit port
	StopError               // the guest or vmm failed; Run returned an error
)

func (r StopReason) String() string {
	return [...]string{"running", "poweroff", "reboot", "canceled", "exit", "error"}[r]
}

// New validates the configuration, reads the kernel and initrd, and builds
// the VM. User errors (missing files, a non-bzImage, too little memory)
// are reported before /dev/kvm is opened.
func New(cfg Config) (_ *Machine, err error) {
	if cfg.CPUs < 1 {
		return nil, fmt.Errorf("-smp %d: need at least one vCPU", cfg.CPUs)
	}
	if cfg.CPUs > maxCPUs {
		return nil, fmt.Errorf("-smp %d: vmm supports at most %d vCPUs", cfg.CPUs, maxCPUs)
	}
	if cfg.MemSize < MinMemory {
		return nil, fmt.Errorf("-m %d MiB: need at least %d MiB", cfg.MemSize>>20, MinMemory>>20)
	}
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	image, err := os.ReadFile(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	k, err := bootparam.ParseKernel(image)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", cfg.Kernel, err)
	}
	var initrd *os.File
	var initrdSize uint64
	if cfg.Initrd != "" {
		initrd, err = os.Open(cfg.Initrd)
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		defer initrd.Close()
		st, err := initrd.Stat()
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("initrd %s: not a regular file", cfg.Initrd)
		}
		initrdSize = uint64(st.Size())
		if initrdSize == 0 {
			return nil, fmt.Errorf("initrd %s: empty file", cfg.Initrd)
		}
	}

	m := &Machine{cfg: cfg, done: make(chan struct{})}
	m.exitStatus.Store(-1)
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err = m.openVirtio(); err != nil {
		return nil, err
	}
	// Guest memory first: layout errors (too small for the kernel or the
	// initrd) are the user's, and are reported before touching KVM.
	if m.mem, err = guestmem.New(ramRanges(cfg.MemSize)); err != nil {
		return nil, err
	}
	// The appended archive starts 4-byte aligned, as the kernel's
	// initramfs unpacker expects of each concatenated archive.
	appendAt := alignUp(initrdSize, cpioAlign)
	total := initrdSize
	if len(cfg.InitrdAppend) > 0 {
		total = appendAt + uint64(len(cfg.InitrdAppend))
	}
	if m.layout, err = setupMemory(m.mem, k, cfg.Cmdline, total, cfg.CPUs, len(m.virtio)); err != nil {
		return nil, err
	}
	if initrd != nil {
		dst, err := m.mem.Slice(m.layout.initrdAddr, initrdSize)
		if err != nil {
			return nil, fmt.Errorf("load initrd %s: %w", cfg.Initrd, err)
		}
		if _, err := io.ReadFull(initrd, dst); err != nil {
			return nil, fmt.Errorf("load initrd %s: %w", cfg.Initrd, err)
		}
	}
	if len(cfg.InitrdAppend) > 0 {
		if err := m.mem.WriteAt(cfg.InitrdAppend, m.layout.initrdAddr+appendAt); err != nil {
			return nil, fmt.Errorf("load appended initramfs: %w", err)
		}
	}

	if m.sys, err = kvm.Open(); err != nil {
		return nil, fmt.Errorf("%s: %w", kvm.DevicePath, explainOpen(err))
	}
	if err = m.checkCaps(); err != nil {
		return nil, err
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return nil, err
	}
	// Order matters (Documentation/virt/kvm/api.rst): the identity map and
	// TSS before any vCPU, the irqchip before vCPUs so each gets an
	// in-kernel local APIC, the PIT after the irqchip.
	if err = m.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return nil, err
	}
	if err = m.vm.SetTSSAddr(tssAddr); err != nil {
		return nil, err
	}
	if err = m.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err = m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, err
	}
	for i, r := range m.mem.Regions() {
		if err = m.vm.SetUserMemoryRegion(uint32(i), r.GPA, r.Mem); err != nil {
			return nil, err
		}
	}
	if err = m.addDevices(); err != nil {
		return nil, err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	var opt cpuidOptions
	if n, err := m.sys.CheckExtension(kvm.CapTSCDeadlineTimer); err == nil && n > 0 {
		opt.tscDeadline = true
	}
	for i := 0; i < cfg.CPUs; i++ {
		c, err := m.vm.CreateVCPU(i)
		if err != nil {
			return nil, err
		}
		v := &vcpu{VCPU: c}
		m.vcpus = append(m.vcpus, v)
		if err := m.setupVCPU(v, vcpuCPUID(supported, i, cfg.CPUs, opt)); err != nil {
			return nil, err
		}
	}
	m.mark(guestabi.MemoryReady)
	return m, nil
}

// maxCPUs is bounded by xAPIC: APIC IDs are 8 bits and 0xff is broadcast.
const maxCPUs = 254

// explainOpen turns the usual reasons /dev/kvm cannot be opened into
// advice.
func explainOpen(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: KVM is not available on this machine (no hardware virtualization, or the kvm-intel/kvm-amd module is not loaded); on a machine without KVM, run vmm nested with `make run` (see README)", err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: add your user to the group owning /dev/kvm (usually kvm) or run as root", err)
	}
	return err
}

func (m *Machine) checkCaps() error {
	for _, c := range []struct {
		cap  kvm.Cap
		name string
	}{
		{kvm.CapIRQChip, "KVM_CAP_IRQCHIP"}, {kvm.CapUserMemory, "KVM_CAP_USER_MEMORY"},
		{kvm.CapSetTSSAddr, "KVM_CAP_SET_TSS_ADDR"}, {kvm.CapExtCPUID, "KVM_CAP_EXT_CPUID"},
		{kvm.CapPIT2, "KVM_CAP_PIT2"}, {kvm.CapImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"},
		{kvm.CapSetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
	} {
		n, err := m.sys.CheckExtension(c.cap)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: this kernel's KVM lacks %s", kvm.DevicePath, c.name)
		}
	}
	n, err := m.sys.CheckExtension(kvm.CapMaxVCPUs)
	if err != nil {
		return err
	}
	if n == 0 { // older kernels: KVM_CAP_NR_VCPUS is the limit
		if n, err = m.sys.CheckExtension(kvm.CapNrVCPUs); err != nil {
			return err
		}
	}
	if n > 0 && m.cfg.CPUs > n {
		return fmt.Errorf("-smp %d: this host's KVM allows at most %d vCPUs", m.cfg.CPUs, n)
	}
	return nil
}

// irqLine drives one GSI of the in-kernel irqchip for a device.
type irqLine struct {
	vm  *kvm.VM
	gsi uint32
}

// SetLevel ignores errors: KVM_IRQ_LINE only fails for a GSI that does not
// exist, which the layout rules out, and a device has nobody to tell.
func (l irqLine) SetLevel(high bool) { _ = l.vm.IRQLine(l.gsi, high) }

func (m *Machine) addDevices() error {
	m.uart = serial.New(irqLine{m.vm, com1IRQ}, m.cfg.Console)
	if m.cfg.JobOutput != nil {
		m.job = serial.New(irqLine{m.vm, com2IRQ}, m.cfg.JobOutput)
		if err := m.pio.Insert("com2", com2Port, com2Size, m.job); err != nil {
			return err
		}
	}
	if err := m.pio.Insert("exit", guestabi.ExitPort, guestabi.ExitPortSize, exitport.New(m.guestExit)); err != nil {
		return err
	}
	if m.cfg.BootTimer != nil {
		if err := m.pio.Insert("boot-timer", guestabi.BootTimerPort, guestabi.BootTimerPortSize, m.cfg.BootTimer); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        bus.Device
	}{
		{"com1", com1Port, com1Size, m.uart},
		{"rtc", rtcPort, rtcSize, rtc.New(time.Now)},
		{"i8042", i8042Port, i8042Size, i8042.New(func() { m.stop(StopReboot, nil) })},
		{"acpi-pm", pmPort, pm.Size, pm.New(func() { m.stop(StopPoweroff, nil) }, func() { m.stop(StopReboot, nil) })},
	} {
		if err := m.pio.Insert(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
	}
	return m.addVirtio()
}

// guestExit ends the run with the status the guest wrote to the exit
// port.
func (m *Machine) guestExit(status uint8) {
	m.exitStatus.Store(int32(status))
	m.stop(StopExit, nil)
}

// ExitStatus is the status the guest wrote to the exit port
// (guestabi.ExitPort), if it wrote one.
func (m *Machine) ExitStatus() (status int, ok bool) {
	s := m.exitStatus.Load()
	if s < 0 {
		return 0, false
	}
	return int(s), true
}

// mark stamps a boot phase if the boot timer is on.
func (m *Machine) mark(p guestabi.Phase) {
	if m.cfg.BootTimer != nil {
		m.cfg.BootTimer.Mark(p)
	}
}

func (m *Machine) logf(format string, args ...any) {
	if m.cfg.Logf != nil {
		m.cfg.Logf(format, args...)
	}
}

// setupVCPU gives every vCPU its CPUID, MSRs and LAPIC wiring; only the
// boot CPU gets entry registers. The others wait in the in-kernel LAPIC
// for the INIT/SIPI the kernel sends them.
func (m *Machine) setupVCPU(v *vcpu, cpuid []kvm.CPUIDEntry) error {
	if err := v.SetCPUID2(cpuid); err != nil {
		return err
	}
	if err := v.SetMSRs(bootMSRs()); err != nil {
		return err
	}
	l, err := v.LAPIC()
	if err != nil {
		return err
	}
	if err := v.SetLAPIC(bootLAPIC(l)); err != nil {
		return err
	}
	if err := v.SetFPU(bootFPU()); err != nil {
		return err
	}
	if v.ID() != 0 {
		return nil
	}
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	if err := v.SetSregs(bootSregs(s, m.layout.long)); err != nil {
		return err
	}
	return v.SetRegs(bootRegs(m.layout.long))
}

// Run boots the guest and blocks until it powers off or reboots (nil),
// fails (an error saying why, with the vCPU's registers where they
// help), or ctx is canceled (ctx's error).
func (m *Machine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.runVCPU(v); err != nil {
				m.stop(StopError, err)
			}
		}()
	}
	if m.job != nil && m.cfg.JobInput != nil {
		go forwardInput(m.cfg.JobInput, m.job)
	}
	if m.cfg.ConsoleIn != nil {
		// This goroutine may stay blocked in Read after Run returns when
		// the reader cannot be interrupted (a terminal); it holds nothing
		// but the UART, which Close unblocks.
		go forwardInput(m.cfg.ConsoleIn, m.uart)
	}
	select {
	case <-m.done:
	case <-ctx.Done():
		m.stop(StopCanceled, ctx.Err())
	}
	wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reason == StopPoweroff || m.reason == StopReboot || m.reason == StopExit {
		return nil
	}
	return m.err
}

// Reason reports why the machine stopped.
func (m *Machine) Reason() StopReason {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason
}

func forwardInput(r io.Reader, u *serial.UART) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := u.Receive(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF on a pipe or /dev/null: the guest keeps running
		}
	}
}

// stop records the first reason the machine stops and kicks every vCPU
// out of KVM_RUN: immediate_exit catches a vCPU about to enter, the
// signal one already inside. SIGURG is the Go runtime's own preemption
// signal, so delivering it to a Go thread is harmless.
func (m *Machine) stop(reason StopReason, err error) {
	m.stopOnce.Do(func() {
		if reason == StopPoweroff || reason == StopReboot {
			m.mark(guestabi.Poweroff)
		}
		m.mu.Lock()
		m.reason, m.err = reason, err
		m.mu.Unlock()
		m.stopping.Store(true)
		pid := unix.Getpid()
		for _, v := range m.vcpus {
			v.SetImmediateExit(true)
			if tid := v.tid.Load(); tid != 0 {
				_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
			}
		}
		close(m.done)
	})
}

// runVCPU is one vCPU's thread: KVM requires a vCPU's ioctls from the
// thread that runs it, so the goroutine is locked to its OS thread for
// good (the thread is discarded when the goroutine ends).
func (m *Machine) runVCPU(v *vcpu) error {
	runtime.LockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	// The boot CPU stamps its first entry and first exit; a local flag
	// keeps that off every later exit.
	first := v.ID() == 0
	if first {
		m.mark(guestabi.FirstRun)
	}
	for !m.stopping.Load() {
		reason, err := v.Run()
		if err != nil {
			return err
		}
		if first {
			m.mark(guestabi.FirstExit)
			first = false
		}
		switch reason {
		case kvm.ExitIO:
			if err := m.handleIO(v); err != nil {
				return err
			}
		case kvm.ExitMMIO:
			if err := m.handleMMIO(v); err != nil {
				return err
			}
		case kvm.ExitIntr:
			// A signal or a stop request: the loop condition decides.
		case kvm.ExitSystemEvent:
			switch v.SystemEvent() {
			case kvm.SystemEventShutdown:
				m.stop(StopPoweroff, nil)
			case kvm.SystemEventReset:
				m.stop(StopReboot, nil)
			default:
				return m.guestError(v, fmt.Sprintf("guest crashed (system event %d)", v.SystemEvent()))
			}
		case kvm.ExitShutdown:
			return m.guestError(v, "guest triple fault (KVM_EXIT_SHUTDOWN)")
		case kvm.ExitHLT:
			return m.guestError(v, "guest halted with interrupts off")
		case kvm.ExitFailEntry:
			return m.guestError(v, fmt.Sprintf("KVM_EXIT_FAIL_ENTRY, hardware reason %#x", v.FailEntry()))
		case kvm.ExitInternalError:
			sub, data := v.InternalError()
			return m.guestError(v, fmt.Sprintf("KVM_EXIT_INTERNAL_ERROR suberror %d data %#x", sub, data))
		default:
			return m.guestError(v, fmt.Sprintf("unexpected %v", reason))
		}
	}
	return nil
}

// guestError describes a fatal exit with the state that explains it.
func (m *Machine) guestError(v *vcpu, what string) error {
	r, err := v.Regs()
	if err != nil {
		return fmt.Errorf("vCPU %d: %s", v.ID(), what)
	}
	s, _ := v.Sregs()
	return fmt.Errorf("vCPU %d: %s", v.ID(), describeFault(what, r, s))
}

// resetRIP and resetCSBase are where a reset or INIT leaves a vCPU (Intel
// SDM vol. 3A §9.1.4 "First Instruction Executed"): real mode at
// 0xFFFF0.
const (
	resetRIP    = 0xfff0
	resetCSBase = 0xffff0000
)

// describeFault adds the registers that locate a fatal exit. On AMD, KVM
// reinitializes the vCPU before it reports KVM_EXIT_SHUTDOWN (the VMCB
// is undefined after a shutdown intercept), so the registers are those of
// a reset vCPU and would send whoever reads them to the reset vector:
// then it says the state is lost instead. vmm never runs a vCPU in real
// mode, so a real-mode vCPU at the reset vector is that case.
func describeFault(what string, r kvm.Regs, s kvm.Sregs) string {
	if r.RIP == resetRIP && s.CS.Base == resetCSBase && s.CR0&cr0PE == 0 {
		return what + " (registers lost: KVM resets the vCPU before reporting this on AMD)"
	}
	return fmt.Sprintf("%s at RIP=%#x RSP=%#x CR0=%#x CR3=%#x CR4=%#x EFER=%#x",
		what, r.RIP, r.RSP, s.CR0, s.CR3, s.CR4, s.EFER)
}

// handleIO serves a port access. String I/O (count > 1) is count
// accesses of size bytes each. Ports nobody claims read as all ones and
// ignore writes, like an empty ISA bus.
func (m *Machine) handleIO(v *vcpu) error {
	e, err := v.IO()
	if err != nil {
		return err
	}
	size := int(e.Size)
	for i := 0; i < int(e.Count); i++ {
		d := e.Data[i*size : (i+1)*size]
		if e.Direction == kvm.IOOut {
			m.pio.Write(uint64(e.Port), d)
		} else if !m.pio.Read(uint64(e.Port), d) {
			fillOnes(d)
		}
	}
	return nil
}

// handleMMIO serves an MMIO access outside RAM and the in-kernel APICs.
func (m *Machine) handleMMIO(v *vcpu) error {
	e, err := v.MMIO()
	if err != nil {
		return err
	}
	if e.IsWrite {
		m.mmio.Write(e.Addr, e.Data)
	} else if !m.mmio.Read(e.Addr, e.Data) {
		fillOnes(e.Data)
	}
	return nil
}

func fillOnes(d []byte) {
	for i := range d {
		d[i] = 0xff
	}
}

// Close releases the VM. It is safe on a partly built machine and when
// called again.
func (m *Machine) Close() error {
	m.closeVirtio()
	if m.uart != nil {
		m.uart.Close()
		m.uart = nil
	}
	if m.job != nil {
		m.job.Close()
		m.job = nil
	}
	for _, v := range m.vcpus {
		v.Close()
	}
	m.vcpus = nil
	if m.vm != nil {
		m.vm.Close()
		m.vm = nil
	}
	if m.sys != nil {
		m.sys.Close()
		m.sys = nil
	}
	if m.mem != nil {
		m.mem.Close()
		m.mem = nil
	}
	return nil
}
