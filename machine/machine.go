// Package machine assembles a KVM virtual machine that boots a Linux
// bzImage (or its vmlinux, decompressed on the host): guest RAM, vCPUs, the in-kernel interrupt controllers, the
// legacy PC devices a distro kernel probes, ACPI tables, and the exit loop
// that routes port and MMIO accesses to devices.
//
// It is the only package that ties kvm to the guest-facing packages
// (bootparam, acpi, serial, ...), which never import kvm themselves.
//
// Building and running are apart because they fail differently and are
// tested differently. Building (build.go, with load.go, boot.go,
// cpuid.go and virtio.go) is a one-shot sequence of ioctls in an order
// KVM dictates, whose user errors must come out before /dev/kvm is
// touched. Running (run.go) is the hot, concurrent part: one locked
// thread per vCPU dispatching exits to the devices, and a stop protocol
// that must reach every vCPU wherever it is. The run loop sees KVM only
// through the small vcpu interface (vcpu.go), so all of it, fault reports
// and stops included, is tested with scripted vCPUs and no /dev/kvm.
package machine

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/vmm-dev/vmm/bus"
	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/devices/i8042"
	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/devices/rtc"
	"github.com/vmm-dev/vmm/devices/serial"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/virtio/console"
)

// Config is what a machine is built from.
type Config struct {
	Kernel  string // path of a bzImage or a vmlinux ELF
	Initrd  string // path of an initramfs; empty for none
	Cmdline string // the whole kernel command line
	MemSize uint64 // bytes of guest RAM
	CPUs    int
	// Console receives the guest's serial output; ConsoleIn, if not nil,
	// is forwarded to the guest's serial input until EOF.
	Console   io.Writer
	ConsoleIn io.Reader
	// Disks, NICs and Shares become virtio devices, in that order.
	Disks  []Disk
	NICs   []NIC
	Shares []Share
	// Job, if its Output is not nil, is a second UART (COM2, the guest's
	// ttyS1) carrying a job's own input and output apart from the
	// console, and a virtio-console device, after the other virtio
	// devices (only the job's input port, JobInputPort, comes after it),
	// whose port guestabi.JobOutputPort carries the job's output too, a
	// page per notification where the UART takes an exit per byte (the
	// guest's init picks one; package virtio/console): `vmm run`
	// connects them to stdin and stdout. A JobOutput that is a
	// console.Paced writer makes both wait for its room.
	JobOutput io.Writer
	JobInput  io.Reader
	// JobInputPort adds, with JobOutput, a second virtio-console device,
	// last, whose port guestabi.JobInputPort carries the job's input to
	// the guest a page per buffer, where the UART takes two exits per
	// byte. Without JobPortInput, JobInput goes to whichever of the two
	// the guest's init opens first (it opens one).
	JobInputPort bool
	// JobPortInput, with JobInputPort, goes to the input port once the
	// guest opens it, and JobInput to the UART alone: a restored job's
	// message on the UART, where the restored init, whose UART is open
	// from before the snapshot, reads it, and its stdin on the port,
	// which the message tells the init to open.
	JobPortInput io.Reader
	// InitrdAppend is an uncompressed cpio archive loaded right after the
	// initrd (Linux unpacks concatenated archives in order, so its files
	// are added to or replace the initrd's); it works without an initrd
	// too. `vmm run` passes the job and shared files this way.
	InitrdAppend []byte
	// BootTimer, if not nil, is stamped at each phase of the boot vmm
	// sees and serves the guest's phase writes at guestabi.BootTimerPort.
	BootTimer *boottimer.Timer
	// KernelCache, if not empty, is a directory where a bzImage's
	// compressed vmlinux is kept decompressed (package kernelcache): the
	// first boot decompresses it on the host, later ones load the cached
	// vmlinux and enter it at startup_64, sparing the guest the second or
	// so it spends decompressing itself at every boot. Empty boots the
	// bzImage as it is.
	KernelCache string
	// UnpackHelper is the vmm-unpack binary, which decompresses a
	// kernel the cache lacks; empty means kernelcache.Helper's (next to
	// vmm, else in $PATH).
	UnpackHelper string
	// Transport is how the guest reaches the virtio devices: VirtioPCI
	// (the zero value) or VirtioMMIO.
	Transport Transport
	// SaveOnWait stops the machine for a snapshot when the guest's init
	// writes guestabi.WaitPort (it waits for a job): Run returns nil with
	// Reason StopSnapshot, and Snapshot saves the machine.
	SaveOnWait bool
	// Logf reports trouble that does not stop the machine: device
	// trouble the guest caused (a malformed queue, a failed disk write),
	// or a kernel cache that could not be used; nil discards it.
	Logf func(format string, args ...any)
}

// Transport is a virtio transport (package virtio).
type Transport int

const (
	// VirtioPCI puts the virtio devices on a PCI bus as virtio-pci
	// functions with MSI-X. It is the default because it is cheaper
	// per operation: an interrupt is an MSI the driver need not ask
	// about, where virtio-mmio's costs a trapped InterruptStatus read
	// and InterruptACK write (measured nested with make bench: see
	// README). The guest kernel needs CONFIG_PCI, CONFIG_PCI_MSI and the
	// virtio_pci driver, as distro kernels have.
	VirtioPCI Transport = iota
	// VirtioMMIO describes each device in the DSDT as a virtio-mmio
	// window and an interrupt line: for kernels without PCI (a
	// Firecracker-style minimal kernel, or a test kernel that drives
	// the registers itself).
	VirtioMMIO
)

// String is the transport's -virtio-transport spelling.
func (t Transport) String() string {
	if t == VirtioMMIO {
		return "mmio"
	}
	return "pci"
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
	vcpus  []vcpu
	pio    bus.Bus
	mmio   bus.Bus
	uart   *serial.UART
	job    *serial.UART // COM2, only with Config.JobOutput
	virtio []*virtioDev
	pci    *pciBus // bus 0, on every machine; functions only with VirtioPCI
	// jobPort is the job's output port, only with Config.JobOutput;
	// jobInPort its input port, only with Config.JobInputPort too.
	jobPort   *console.Device
	jobInPort *console.Device
	// kvmNote explains guest failures on a /dev/kvm without hardware
	// virtualization (softwareKVMNote); "" on a real KVM.
	kvmNote string
	layout  bootLayout
	rtc     *rtc.CMOS
	kbd     *i8042.Controller
	pm      *pm.PM
	snap    snapState // SaveOnWait and restore bookkeeping (snapshot.go)
	// coalesced holds the index-port writes KVM records instead of
	// exiting (coalesced.go).
	coalesced coalescing

	// places is where each vCPU was when a cancel stopped it (Places),
	// each written by its own vCPU's goroutine before Run returns.
	places []VCPUPlace

	stopping   atomic.Bool
	exitStatus atomic.Int32 // -1 until the guest writes the exit port
	stopOnce   sync.Once
	done       chan struct{}
	mu         sync.Mutex
	reason     StopReason
	err        error
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
	StopSnapshot            // the guest waits for a job and Config.SaveOnWait is set
)

func (r StopReason) String() string {
	names := [...]string{"running", "poweroff", "reboot", "canceled", "exit", "error", "snapshot"}
	if r < 0 || int(r) >= len(names) {
		return fmt.Sprintf("StopReason(%d)", int(r))
	}
	return names[r]
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
