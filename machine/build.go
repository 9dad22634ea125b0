package machine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmm-dev/vmm/bus"
	"github.com/vmm-dev/vmm/devices/exitport"
	"github.com/vmm-dev/vmm/devices/i8042"
	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/devices/rtc"
	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/internal/inputfile"
	"github.com/vmm-dev/vmm/kvm"
)

// New validates the configuration, reads the kernel and initrd, and builds
// the VM. User errors (missing files, a non-bzImage, too little memory)
// are reported before /dev/kvm is opened.
func New(cfg Config) (*Machine, error) {
	m, err := load(cfg)
	if err != nil {
		return nil, err
	}
	if err := m.createVM(); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.awaitBackends(); err != nil {
		m.Close()
		return nil, err
	}
	m.mark(guestabi.MemoryReady)
	return m, nil
}

// load is the part of New that needs no KVM, and so holds every error
// that is the user's: it checks the configuration, opens the disk and
// network backends, and lays out guest memory with the kernel, command
// line, ACPI tables and initrd in place.
func load(cfg Config) (_ *Machine, err error) {
	if cfg.CPUs < 1 {
		return nil, fmt.Errorf("-smp %d: need at least one vCPU", cfg.CPUs)
	}
	if cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("-smp %d: vmm supports at most %d vCPUs", cfg.CPUs, MaxCPUs)
	}
	if cfg.MemSize < MinMemory {
		return nil, fmt.Errorf("-m %d MiB: need at least %d MiB", cfg.MemSize>>20, MinMemory>>20)
	}
	if cfg.MemSize%ramGranule != 0 {
		return nil, fmt.Errorf("-m %d KiB: guest memory must be a whole number of 4 KiB pages", cfg.MemSize>>10)
	}
	k, err := readKernel(cfg)
	if err != nil {
		return nil, err
	}
	defer k.Close() // loaded by setupMemory below, or not needed
	var initrd *os.File
	var initrdSize uint64
	if cfg.Initrd != "" {
		initrd, err = inputfile.Open(cfg.Initrd, inputfile.Regular)
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		defer initrd.Close()
		st, err := initrd.Stat()
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		initrdSize = uint64(st.Size())
		if initrdSize == 0 {
			return nil, fmt.Errorf("initrd %s: empty file", cfg.Initrd)
		}
	}

	m := newMachine(cfg)
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
	if m.layout, err = setupMemory(m.mem, k, cfg.Cmdline, total, cfg.CPUs, len(m.virtio), cfg.Transport == VirtioPCI); err != nil {
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
		// The archive is in guest memory now: the machine's copy of the
		// configuration must not keep it on the heap while the guest
		// runs (issue 12).
		m.cfg.InitrdAppend = nil
	}
	return m, nil
}

// createVM is the part of New that talks to KVM: the VM, its irqchip and
// memory slots, the devices' interrupt wiring, and the vCPUs with their
// boot state. On error the caller closes m, which releases whatever was
// created.
func (m *Machine) createVM() (err error) {
	if m.sys, err = kvm.Open(); err != nil {
		return fmt.Errorf("%s: %w", kvm.DevicePath, explainOpen(err))
	}
	if err = m.checkCaps(); err != nil {
		return err
	}
	if m.kvmNote = hostKVMNote(); m.kvmNote != "" {
		// Said now, not only when the guest fails: a distro kernel may
		// sit on such a KVM without a byte of output until -timeout,
		// and an interactive user would see a blank console.
		m.logf("warning: %s", m.kvmNote)
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	// Order matters (Documentation/virt/kvm/api.rst): the identity map and
	// TSS before any vCPU, the irqchip before vCPUs so each gets an
	// in-kernel local APIC, the PIT after the irqchip.
	if err = m.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return err
	}
	if err = m.vm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	if err = m.vm.CreateIRQChip(); err != nil {
		return err
	}
	if err = m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return err
	}
	for i, r := range m.mem.Regions() {
		if err = m.vm.SetUserMemoryRegion(uint32(i), r.GPA, r.Mem); err != nil {
			return err
		}
	}
	if err = m.addDevices(m.vm); err != nil {
		return err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	opt := cpuidOptions{brand: hostBrand()}
	if n, err := m.sys.CheckExtension(kvm.CapTSCDeadlineTimer); err == nil && n > 0 {
		opt.tscDeadline = true
	}
	if m.snap.restore != nil {
		// Before any vCPU: KVM_SET_CPUID2 with a feature the host lacks
		// would fail with a less helpful error, or not at all.
		if err := missingCPUFeatures(m.snap.restore.VCPUs[0].CPUID, supported); err != nil {
			return err
		}
	}
	for i := 0; i < m.cfg.CPUs; i++ {
		c, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, &kvmVCPU{c: c})
		if m.snap.restore != nil {
			if err := restoreVCPU(c, m.snap.restore.VCPUs[i]); err != nil {
				return err
			}
			continue
		}
		cpuid := vcpuCPUID(supported, i, m.cfg.CPUs, opt)
		if err := m.setupVCPU(c, cpuid); err != nil {
			return err
		}
		if m.cfg.SaveOnWait {
			m.snap.cpuids = append(m.snap.cpuids, cpuid)
		}
	}
	if err := m.coalescePorts(); err != nil {
		return err
	}
	return m.afterVCPUs()
}

// MaxCPUs is the most vCPUs a machine has. It is bounded by xAPIC: APIC
// IDs are 8 bits and 0xff is broadcast.
const MaxCPUs = 254

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

// newMachine is a machine with nothing built yet: what New starts from,
// and what tests wire devices and fake vCPUs into.
func newMachine(cfg Config) *Machine {
	if cfg.Console == nil {
		cfg.Console = io.Discard
	}
	m := &Machine{cfg: cfg, done: make(chan struct{})}
	m.exitStatus.Store(-1)
	return m
}

// irqWiring is what devices need of the VM once it exists: interrupt
// lines, and the eventfds that carry virtio kicks and interrupts past
// userspace. *kvm.VM is the real one; tests wire the real devices to a
// fake, so the run loop's tests dispatch to the devices a guest sees.
type irqWiring interface {
	IRQLine(gsi uint32, high bool) error
	IRQFD(efd int, gsi uint32) error
	IOEventFD(efd int, addr uint64, n uint32, datamatch uint64, flags uint32) error
	SetGSIRouting(routes []kvm.IRQRoute) error
}

// irqLine drives one GSI of the in-kernel irqchip for a device.
type irqLine struct {
	vm  irqWiring
	gsi uint32
}

// SetLevel ignores errors: KVM_IRQ_LINE only fails for a GSI that does not
// exist, which the layout rules out, and a device has nobody to tell.
func (l irqLine) SetLevel(high bool) { _ = l.vm.IRQLine(l.gsi, high) }

// addDevices puts the legacy devices on the port bus, each at its layout
// address (layout.go) and with its interrupt line, then the virtio
// transports on the MMIO bus.
func (m *Machine) addDevices(vm irqWiring) error {
	m.uart = serial.New(irqLine{vm, com1IRQ}, m.cfg.Console)
	if m.cfg.JobOutput != nil {
		m.job = serial.New(irqLine{vm, com2IRQ}, m.cfg.JobOutput)
		// The job port's reader is vmm-init, which raises OUT1 once it
		// has made ttyS1 raw: input that came in earlier would meet
		// the cooked line discipline of the open (echo, ICRNL). Only
		// this port has the handshake; the console has none.
		m.job.ReceiveOnOUT1()
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
	if err := m.pio.Insert("wait", guestabi.WaitPort, guestabi.WaitPortSize, exitport.New(m.guestWaits)); err != nil {
		return err
	}
	m.rtc = rtc.New(time.Now)
	m.kbd = i8042.New(func() { m.stop(StopReboot, nil) })
	m.pm = pm.New(func() { m.stop(StopPoweroff, nil) }, func() { m.stop(StopReboot, nil) })
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        bus.Device
	}{
		{"com1", com1Port, com1Size, m.uart},
		{"rtc", rtcPort, rtcSize, m.rtc},
		{"i8042", i8042Port, i8042Size, m.kbd},
		{"acpi-pm", pmPort, pm.Size, m.pm},
	} {
		if err := m.pio.Insert(d.name, d.base, d.size, d.dev); err != nil {
			return err
		}
	}
	return m.addVirtio(vm)
}

// setupVCPU gives every vCPU its CPUID, MSRs and LAPIC wiring; only the
// boot CPU gets entry registers. The others wait in the in-kernel LAPIC
// for the INIT/SIPI the kernel sends them.
func (m *Machine) setupVCPU(v *kvm.VCPU, cpuid []kvm.CPUIDEntry) error {
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
	return v.SetRegs(bootRegs(m.layout.entry))
}
