package machine

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/devices/i8042"
	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/devices/rtc"
	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/internal/pack"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/snapshot"
	"github.com/vmm-dev/vmm/virtio"
)

// State is a whole machine as a snapshot's state blob carries it
// (encoded by package pack): every vCPU, the VM's in-kernel devices, and vmm's own devices. Guest
// RAM is apart, in the snapshot's memory file.
type State struct {
	VCPUs    []VCPUState
	IRQChips []kvm.IRQChip // PIC master, PIC slave, IOAPIC
	PIT      kvm.PITState2
	Clock    kvm.ClockData
	COM1     serial.State
	COM2     *serial.State
	RTC      rtc.State
	I8042    i8042.State
	PM       pm.State
	Virtio   []virtio.TransportState
	// VirtioPCI holds the devices instead of Virtio when they are on
	// PCI (Config.Transport).
	VirtioPCI []PCIFunctionState
	// PCIConfigAddress is the host bridge's latched CONFIG_ADDRESS.
	PCIConfigAddress uint32
}

// snapState is a machine's snapshot bookkeeping.
type snapState struct {
	// For SaveOnWait: each vCPU's CPUID as set up, KVM's MSR list, and
	// the states the vCPU threads saved.
	cpuids [][]kvm.CPUIDEntry
	msrs   []uint32
	mu     sync.Mutex
	saved  []VCPUState
	nsaved int // vCPUs whose state is in saved
	errs   []error
	// inGuest counts the vCPUs that may still enter the guest (Run
	// adds them all): each saves only once none can, so no IPI or
	// interrupt another vCPU's last instructions send lands in a LAPIC
	// already read.
	inGuest sync.WaitGroup
	// restore is the state New's restore path writes back.
	restore *State
	// waitValue is what the guest wrote to WaitPort (guestabi.WaitReady,
	// WaitInputPort); written before the stop that Snapshot follows.
	waitValue atomic.Uint32
}

// guestWaits is the WaitPort device: with SaveOnWait the machine stops
// for its snapshot; otherwise the write means nothing.
func (m *Machine) guestWaits(v uint8) {
	if m.cfg.SaveOnWait {
		m.snap.waitValue.Store(uint32(v))
		m.stop(StopSnapshot, nil)
	}
}

// stateVCPU is a vcpu whose state can be read: the KVM one.
type stateVCPU interface {
	stateIO() vcpuStateIO
}

func (v *kvmVCPU) stateIO() vcpuStateIO { return v.c }

// maxCompletionRuns bounds the KVM_RUNs saveVCPUOnThread makes to finish
// what the guest's last exits began.
const maxCompletionRuns = 64

// saveVCPUOnThread saves v's state on its own thread once the machine
// stopped for a snapshot. One more KVM_RUN comes first: KVM completes
// the port write that stopped the guest (its RIP still points at the
// OUT) only on the next entry, and immediate_exit, set by the kick,
// makes that entry return before any guest instruction runs
// (Documentation/virt/kvm/api.rst, KVM_RUN). That entry may still bring
// an exit instead (the next piece of a string I/O or of an MMIO access
// KVM split), which is served before KVM_RUN is made again: KVM holds
// such an access half done where no GET ioctl sees it. Once v is out
// of the guest for good (left), it waits for the other vCPUs to be too
// before it reads its state.
func (m *Machine) saveVCPUOnThread(v vcpu, left func()) error {
	var s VCPUState
	var err error
	sv, ok := v.(stateVCPU)
	if !ok {
		err = fmt.Errorf("vCPU %d: its state cannot be saved", v.ID())
	}
	for run := 0; err == nil; run++ {
		var e exit
		if e, err = v.Run(); err != nil {
			err = fmt.Errorf("vCPU %d: completing the last exit: %w", v.ID(), err)
			break
		}
		if e.reason == kvm.ExitIntr {
			break
		}
		if run == maxCompletionRuns {
			err = fmt.Errorf("vCPU %d: still exiting (%v) after %d runs to complete its last exit", v.ID(), e.reason, run)
			break
		}
		if err = m.drainCoalesced(); err == nil {
			err = m.handleExit(v, &e)
		}
	}
	left()
	m.snap.inGuest.Wait()
	if err == nil {
		var cpuid []kvm.CPUIDEntry
		if v.ID() < len(m.snap.cpuids) {
			cpuid = m.snap.cpuids[v.ID()]
		}
		s, err = saveVCPU(sv.stateIO(), cpuid, m.snap.msrs)
	}
	// Errors are kept for Snapshot to report: the machine has already
	// stopped, so a returned error would be dropped by stop's once.
	m.snap.mu.Lock()
	defer m.snap.mu.Unlock()
	if m.snap.saved == nil {
		m.snap.saved = make([]VCPUState, len(m.vcpus))
	}
	if err != nil {
		m.snap.errs = append(m.snap.errs, err)
		return nil
	}
	m.snap.saved[v.ID()] = s
	m.snap.nsaved++
	return nil
}

// archMSRs are MSRs a restored guest needs that KVM_GET_MSR_INDEX_LIST
// leaves out, as QEMU and Firecracker know: the page attribute table
// (Intel SDM vol. 3A 11.12.2), which Linux reprograms at boot, and the
// MTRRs (11.11.2): the default type (vmm's boot sets it to write-back,
// enabled), the fixed-range ones and KVM's 8 variable pairs
// (KVM_NR_VAR_MTRR). A restored vCPU would otherwise have the PAT of a
// reset and MTRRs disabled.
func archMSRs() []uint32 {
	l := []uint32{msrPAT, msrMTRRDefType, msrMTRRFix64K00000, msrMTRRFix16K80000, msrMTRRFix16KA0000}
	for i := uint32(0); i < mtrrFix4KCount; i++ {
		l = append(l, msrMTRRFix4KC0000+i)
	}
	for i := uint32(0); i < 2*kvmNrVarMTRR; i++ {
		l = append(l, msrMTRRPhysBase0+i)
	}
	return l
}

// The MSRs archMSRs adds, by their names in Intel SDM vol. 4 table 2-2
// (arch/x86/include/asm/msr-index.h: MSR_IA32_CR_PAT, MSR_MTRRfix*,
// MSR_MTRRphysBase0); msrMTRRDefType is boot.go's.
const (
	msrPAT             = 0x277
	msrMTRRFix64K00000 = 0x250
	msrMTRRFix16K80000 = 0x258
	msrMTRRFix16KA0000 = 0x259
	// The eight 4 KiB fixed ranges, 0xC0000-0xFFFFF, are 0x268-0x26f.
	msrMTRRFix4KC0000 = 0x268
	mtrrFix4KCount    = 8
	// Variable ranges come in pairs from 0x200: PHYSBASEn at 0x200+2n,
	// PHYSMASKn at 0x201+2n.
	msrMTRRPhysBase0 = 0x200
	// kvmNrVarMTRR is KVM_NR_VAR_MTRR (arch/x86/include/asm/kvm_host.h):
	// the variable pairs KVM keeps for a vCPU.
	kvmNrVarMTRR = 8
)

// withArchMSRs is KVM's list with archMSRs it lacks added; saveVCPU
// leaves out any the vCPU cannot read.
func withArchMSRs(kvmList []uint32) []uint32 {
	out := slices.Clone(kvmList)
	for _, idx := range archMSRs() {
		if !slices.Contains(out, idx) {
			out = append(out, idx)
		}
	}
	return out
}

// afterVCPUs finishes createVM: a machine that may be saved learns KVM's
// MSR list; a restored one gets its VM-wide and device state back.
func (m *Machine) afterVCPUs() error {
	if m.cfg.SaveOnWait {
		msrs, err := m.sys.MSRIndexList()
		if err != nil {
			return err
		}
		m.snap.msrs = withArchMSRs(msrs)
	}
	if m.snap.restore == nil {
		return nil
	}
	return m.restoreDevices(m.snap.restore)
}

// restoreDevices writes the VM's and the devices' state back; the
// kvmclock goes last, just before the vCPUs run.
func (m *Machine) restoreDevices(st *State) error {
	if err := m.vm.SetPIT2(st.PIT); err != nil {
		return err
	}
	for _, c := range st.IRQChips {
		if err := m.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	if err := m.uart.Restore(st.COM1); err != nil {
		return err
	}
	if m.job != nil && st.COM2 != nil {
		if err := m.job.Restore(*st.COM2); err != nil {
			return err
		}
	}
	if err := m.rtc.Restore(st.RTC); err != nil {
		return err
	}
	if err := m.kbd.Restore(st.I8042); err != nil {
		return err
	}
	m.pm.Restore(st.PM)
	if err := m.restoreVirtio(st); err != nil {
		return err
	}
	if err := m.vm.SetClock(kvm.ClockData{Clock: st.Clock.Clock}); err != nil {
		return err
	}
	for _, v := range m.vcpus {
		if kv, ok := v.(*kvmVCPU); ok {
			// EINVAL: the guest never set up kvmclock; nothing to tell.
			if err := kv.c.KVMClockCtrl(); err != nil && !errors.Is(err, unix.EINVAL) {
				return err
			}
		}
	}
	return nil
}

// restoreVirtio gives the virtio devices their saved state: the host
// bridge's latch (every machine has the bridge, whatever the transport),
// then on PCI each function's configuration space (which maps its BAR and
// enables MSI-X as the guest had them) before its transport, which may
// send an interrupt as it restarts the device.
func (m *Machine) restoreVirtio(st *State) error {
	if m.pci != nil {
		m.pci.bridge.SetConfigAddress(st.PCIConfigAddress)
	}
	// Every BAR off first: a function restored to where another still
	// decodes from the build would be refused the window. With
	// VirtioMMIO there are no functions (d.fn is nil).
	for _, d := range m.virtio {
		if d.fn != nil {
			d.fn.SetMemoryDecoding(false)
		}
	}
	for i, d := range m.virtio {
		var err error
		if d.pci != nil {
			if err = d.fn.Restore(st.VirtioPCI[i].Function); err == nil {
				err = d.pci.Restore(st.VirtioPCI[i].Transport)
			}
		} else {
			err = d.mmio.Restore(st.Virtio[i])
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}

// Snapshot saves a machine that Run stopped with StopSnapshot into dir,
// with man saying what it was made from (the caller fills in the vmm
// version, kernel and initrd; memory, vCPUs, devices and the command
// line are filled in here). The machine cannot run again afterwards.
func (m *Machine) Snapshot(dir string, man snapshot.Manifest) error {
	if r := m.Reason(); r != StopSnapshot {
		return fmt.Errorf("snapshot: the machine stopped for %v, not because its guest waits for a job", r)
	}
	m.snap.mu.Lock()
	saved, nsaved, errs := m.snap.saved, m.snap.nsaved, m.snap.errs
	m.snap.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("snapshot: %w", errors.Join(errs...))
	}
	if nsaved != len(m.vcpus) {
		// A vCPU whose run failed as the machine stopped saved nothing.
		return fmt.Errorf("snapshot: %d of %d vCPUs saved", nsaved, len(m.vcpus))
	}
	// An index write KVM coalesced after the last exit is device
	// state too.
	if err := m.drainCoalesced(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	st := State{VCPUs: saved}
	for _, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c, err := m.vm.IRQChip(id)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		st.IRQChips = append(st.IRQChips, c)
	}
	var err error
	if st.PIT, err = m.vm.PIT2(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if st.Clock, err = m.vm.Clock(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	st.COM1 = m.uart.State()
	if m.job != nil {
		s := m.job.State()
		st.COM2 = &s
	}
	st.RTC, st.I8042, st.PM = m.rtc.State(), m.kbd.State(), m.pm.State()
	m.saveVirtio(&st)
	blob, err := pack.Marshal(st)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	man.Cmdline, man.MemSize, man.CPUs = m.cfg.Cmdline, m.cfg.MemSize, m.cfg.CPUs
	if man.Devices, err = manifestDevices(m.cfg); err != nil {
		return err
	}
	// An init that found the job's input port says so (an older one, or
	// a kernel without virtio_console, does not): only then may a
	// restored job's input be sent there.
	man.JobInputPort = m.jobInPort != nil && m.snap.waitValue.Load()&guestabi.WaitInputPort != 0
	if len(saved) > 0 {
		man.HostCPU = describeCPU(saved[0].CPUID)
	}
	var regions [][]byte
	for _, r := range m.mem.Regions() {
		regions = append(regions, r.Mem)
	}
	return snapshot.Write(dir, man, blob, regions)
}

// saveVirtio pauses the virtio devices and records their state in st.
func (m *Machine) saveVirtio(st *State) {
	if m.pci != nil {
		st.PCIConfigAddress = m.pci.bridge.ConfigAddress()
	}
	for _, d := range m.virtio {
		if d.pci != nil {
			d.pci.Pause()
			st.VirtioPCI = append(st.VirtioPCI, PCIFunctionState{Function: d.fn.State(), Transport: d.pci.State()})
			continue
		}
		d.mmio.Pause()
		st.Virtio = append(st.Virtio, d.mmio.State())
	}
}

// diskSize is the size of a disk's image as the guest sees its
// capacity: a regular file's length, or a block device's, which stat
// reports as 0 (the device's end, as virtio/blk finds it).
func diskSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return st.Size(), nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// manifestDevices lists cfg's virtio devices as a manifest records them.
func manifestDevices(cfg Config) ([]snapshot.Device, error) {
	var out []snapshot.Device
	for _, d := range cfg.Disks {
		size, err := diskSize(d.Path)
		if err != nil {
			return nil, fmt.Errorf("-disk: %w", err)
		}
		out = append(out, snapshot.Device{Kind: "blk", Serial: d.Serial, ReadOnly: d.ReadOnly, Capacity: size})
	}
	for _, n := range cfg.NICs {
		dev := snapshot.Device{Kind: "net"}
		if n.MAC != ([6]byte{}) {
			dev.MAC = hex.EncodeToString(n.MAC[:])
		}
		out = append(out, dev)
	}
	// A share's directory is not recorded: a restored guest that has
	// not mounted it yet may be given another (vmm run -share). Nor is
	// whether it is read-only, which only the host side enforces (the
	// server refuses changes; the guest's device is the same), so a
	// run may serve a slot it does not use read-only.
	for _, sh := range cfg.Shares {
		out = append(out, snapshot.Device{Kind: "fs", Tag: sh.Tag})
	}
	if cfg.JobOutput != nil {
		out = append(out, snapshot.Device{Kind: "console", Tag: guestabi.JobOutputPort})
		if cfg.JobInputPort {
			out = append(out, snapshot.Device{Kind: "console", Tag: guestabi.JobInputPort})
		}
	}
	return out, nil
}

// describeCPU is the vendor string of CPUID leaf 0, for the manifest.
func describeCPU(cpuid []kvm.CPUIDEntry) string {
	for _, e := range cpuid {
		if e.Function == 0 {
			var b []byte
			for _, r := range []uint32{e.EBX, e.EDX, e.ECX} {
				b = append(b, byte(r), byte(r>>8), byte(r>>16), byte(r>>24))
			}
			return string(bytes.TrimRight(b, "\x00"))
		}
	}
	return ""
}

// ErrSnapshotMismatch wraps the refusals of a snapshot made for another
// machine than the one asked for.
var ErrSnapshotMismatch = errors.New("snapshot was made for another machine")

// CheckSnapshot compares what the command line asks for with what the
// snapshot was made from: memory, vCPUs and the virtio devices (kind,
// order, a disk's read-only and size, MAC, share tag).
func CheckSnapshot(cfg Config, man snapshot.Manifest) error {
	if cfg.MemSize != man.MemSize {
		return fmt.Errorf("%w: -m %d MiB, snapshot has %d MiB", ErrSnapshotMismatch, cfg.MemSize>>20, man.MemSize>>20)
	}
	if cfg.CPUs != man.CPUs {
		return fmt.Errorf("%w: -smp %d, snapshot has %d vCPUs", ErrSnapshotMismatch, cfg.CPUs, man.CPUs)
	}
	want, err := manifestDevices(cfg)
	if err != nil {
		return err
	}
	if len(want) != len(man.Devices) {
		return fmt.Errorf("%w: %d virtio devices asked for, snapshot has %d (%s)", ErrSnapshotMismatch, len(want), len(man.Devices), deviceList(man.Devices))
	}
	for i := range want {
		if want[i] != man.Devices[i] {
			return fmt.Errorf("%w: device %d is %+v, snapshot has %+v", ErrSnapshotMismatch, i, want[i], man.Devices[i])
		}
	}
	return nil
}

func deviceList(ds []snapshot.Device) string {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(d.Kind)
		if d.Serial != "" {
			b.WriteString(" " + d.Serial)
		}
		if d.Tag != "" {
			b.WriteString(" " + d.Tag)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// decodeState parses a snapshot's state blob and checks it fits cfg.
func decodeState(b []byte, cfg Config) (*State, error) {
	var st State
	if err := pack.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: machine state: %v", snapshot.ErrCorrupt, err)
	}
	switch {
	case len(st.VCPUs) != cfg.CPUs:
		return nil, fmt.Errorf("%w: machine state has %d vCPUs for %d", snapshot.ErrCorrupt, len(st.VCPUs), cfg.CPUs)
	case len(st.IRQChips) != 3:
		return nil, fmt.Errorf("%w: machine state has %d interrupt controllers", snapshot.ErrCorrupt, len(st.IRQChips))
	case (len(st.VirtioPCI) > 0 && cfg.Transport != VirtioPCI) || (len(st.Virtio) > 0 && cfg.Transport != VirtioMMIO):
		return nil, fmt.Errorf("%w: the snapshot's virtio devices are on another transport than this run's -virtio-transport %v", ErrSnapshotMismatch, cfg.Transport)
	case len(st.Virtio)+len(st.VirtioPCI) != virtioCount(cfg):
		return nil, fmt.Errorf("%w: machine state has %d virtio devices", snapshot.ErrCorrupt, len(st.Virtio)+len(st.VirtioPCI))
	case (st.COM2 != nil) != (cfg.JobOutput != nil):
		return nil, fmt.Errorf("%w: the snapshot's job port and this run's differ", ErrSnapshotMismatch)
	}
	for i, v := range st.VCPUs {
		if len(v.CPUID) == 0 {
			return nil, fmt.Errorf("%w: vCPU %d has no CPUID", snapshot.ErrCorrupt, i)
		}
	}
	// Each controller once, in the order saved: three of one would
	// leave the others at their reset state, unnoticed.
	for i, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		if st.IRQChips[i].ChipID != id {
			return nil, fmt.Errorf("%w: interrupt controller %d is chip %d, want %d", snapshot.ErrCorrupt, i, st.IRQChips[i].ChipID, id)
		}
	}
	return &st, nil
}

// Restore builds a machine from a snapshot, ready to Run from where the
// snapshot's guest waited: cfg gives this run's devices, console and job
// port, which must match what the snapshot was made with (CheckSnapshot);
// guest RAM is mapped copy-on-write from the snapshot's memory file, and
// the kernel and initrd are not read.
func Restore(cfg Config, s *snapshot.Snapshot) (_ *Machine, err error) {
	if err := CheckSnapshot(cfg, s.Manifest); err != nil {
		return nil, err
	}
	st, err := decodeState(s.State, cfg)
	if err != nil {
		return nil, err
	}
	cfg.SaveOnWait = false
	m := newMachine(cfg)
	m.snap.restore = st
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err = m.openVirtio(); err != nil {
		return nil, err
	}
	if m.mem, err = guestmem.NewFromFile(ramRanges(cfg.MemSize), s.Memory); err != nil {
		return nil, err
	}
	if err = m.createVM(); err != nil {
		return nil, err
	}
	if err = m.awaitBackends(); err != nil {
		return nil, err
	}
	return m, nil
}
