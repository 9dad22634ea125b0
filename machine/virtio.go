package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/acpi"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/rawsys"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/pci"
	"github.com/vmm-dev/vmm/tap"
	"github.com/vmm-dev/vmm/usernet/hostfwd"
	"github.com/vmm-dev/vmm/usernet/remote"
	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/blk"
	"github.com/vmm-dev/vmm/virtio/console"
	"github.com/vmm-dev/vmm/virtio/fs"
	"github.com/vmm-dev/vmm/virtio/fs/share"
	"github.com/vmm-dev/vmm/virtio/net"
)

// Disk is a virtio-blk disk backed by a raw image file or block device.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial is what the guest reads as the disk's ID (GET_ID); empty
	// means one derived from the file name.
	Serial string
}

// NIC is a virtio-net card attached to a host TAP interface or to a
// user-mode network in a helper process.
type NIC struct {
	// Tap is the host TAP interface's name; unused with User.
	Tap string
	// User attaches the card to its own user-mode network (package
	// usernet): DHCP, DNS, and the guest's connections made through
	// host sockets, with no privilege needed. It runs in the vmm-net
	// helper (package usernet/remote), started when the machine is
	// built and ended when it is closed.
	User bool
	// HostFwd are the user network's host ports forwarded into the
	// guest, bound when the machine is built.
	HostFwd []hostfwd.Forward
	// Helper is the vmm-net binary; empty means remote.FindHelper's.
	Helper string
	// NoSandbox runs the helper without its seccomp filter (vmm's
	// -sandbox=off).
	NoSandbox bool
	// MAC is the guest's address; the zero value means net.DefaultMAC
	// of the TAP's name, so a guest keeps its address across runs, or
	// for a user network QEMU's default, 52:54:00:12:34:56 with the
	// card's index added to the last byte.
	MAC [6]byte
}

// Share is a host directory the guest mounts over virtio-fs
// (`mount -t virtiofs TAG DIR`), served by vmm itself (package virtio/fs)
// and confined to Dir.
type Share struct {
	Dir string
	// Tag is the name the guest mounts it by; unique among a machine's
	// shares (Linux refuses a second device with a tag it already has).
	Tag string
	// ReadOnly refuses every change on the host side (EROFS), whatever
	// the guest mounts with.
	ReadOnly bool
	// Flag is how the user gave it (-share, -rootfs, -fs), for an error
	// opening it to name; "" names it by its tag.
	Flag string
}

// userMAC is QEMU's default MAC address of the i-th card.
func userMAC(i int) [6]byte { return [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, byte(0x56 + i)} }

// virtioDev is one virtio device with everything that serves it: the
// backend it owns, its transport (virtio-mmio on the bus, or virtio-pci
// behind a PCI function), one ioeventfd per queue and the irqfds of its
// line or of its MSI-X vectors.
type virtioDev struct {
	name    string
	dev     virtio.Device
	backend io.Closer
	mmio    *virtio.MMIO
	pci     *virtio.PCI
	fn      *pci.Endpoint
	hooks   *pciFunction // fn's Hooks: the BAR's mapping and ioeventfds
	kicks   []*eventFD
	irq     *eventFD
	vectors []*eventFD
}

func virtioAddr(i int) uint64 { return virtioMMIOBase + uint64(i)*virtioMMIOStride }
func virtioGSI(i int) uint32  { return virtioGSIBase + uint32(i) }

// virtioACPI is what the DSDT announces for n transports.
func virtioACPI(n int) []acpi.MMIODevice {
	var out []acpi.MMIODevice
	for i := 0; i < n; i++ {
		out = append(out, acpi.MMIODevice{Addr: uint32(virtioAddr(i)), Size: virtio.MMIOSize, GSI: virtioGSI(i)})
	}
	return out
}

// jobDevices says how many of cfg's devices vmm run or vmm snapshot
// added of its own (the -out disk, the share slots), which the user did
// not name and so would not count; "" for none.
func jobDevices(cfg Config) string {
	n := 0
	for _, d := range cfg.Disks {
		if d.Serial == guestabi.OutSerial {
			n++
		}
	}
	for _, sh := range cfg.Shares {
		if sh.Tag == guestabi.JobShareTag || sh.Tag == guestabi.JobRootTag {
			n++
		}
	}
	if cfg.JobOutput != nil {
		n++
		if cfg.JobInputPort {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of them vmm's own for the job: the output and input ports, the -out disk or the -share and -rootfs slots)", n)
}

// readier is a backend that comes up in the background (a user
// network's helper process): awaitBackends waits for it.
type readier interface{ Ready() error }

// awaitBackends waits until every backend that started in the
// background is up, so that its start overlaps loading the guest and a
// failure (a forwarded port already taken) is still reported before the
// guest runs.
func (m *Machine) awaitBackends() error {
	for _, v := range m.virtio {
		if r, ok := v.backend.(readier); ok {
			if err := r.Ready(); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
	}
	return nil
}

// openVirtio opens every backend (files, TAPs, user networks' helpers)
// before /dev/kvm, so a missing image or a TAP that cannot be created is
// reported first; a user network's forwarded port in use is reported
// once its helper answers (awaitBackends), still before the guest runs.
// Disks come first so the guest names them vda, vdb, ... in -disk order.
func (m *Machine) openVirtio() error {
	if n := virtioCount(m.cfg); n > maxVirtioDevices {
		return fmt.Errorf("%d virtio devices (disks, network cards, shares)%s: vmm supports at most %d in all", n, jobDevices(m.cfg), maxVirtioDevices)
	}
	tags := map[string]bool{}
	for _, sh := range m.cfg.Shares {
		if tags[sh.Tag] {
			return fmt.Errorf("virtio-fs tag %q: used by two shares", sh.Tag)
		}
		tags[sh.Tag] = true
	}
	for i, d := range m.cfg.Disks {
		name := fmt.Sprintf("virtio-blk%d", i)
		dev, err := blk.Open(blk.Options{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial, Logf: m.prefixLogf(name)})
		if err != nil {
			return err
		}
		m.virtio = append(m.virtio, &virtioDev{name: name, dev: dev, backend: dev})
	}
	for i, n := range m.cfg.NICs {
		name := fmt.Sprintf("virtio-net%d", i)
		o := net.Options{MAC: n.MAC, Logf: m.prefixLogf(name)}
		var b interface {
			net.Backend
			io.Closer
		}
		if n.User {
			helper := n.Helper
			if helper == "" {
				var err error
				if helper, err = remote.FindHelper(); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			u, err := remote.Start(remote.Config{Helper: helper, Forwards: n.HostFwd, NoSandbox: n.NoSandbox, Logf: o.Logf})
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			b = u
			if o.MAC == ([6]byte{}) {
				o.MAC = userMAC(i)
			}
		} else {
			t, err := tap.Open(n.Tap)
			if err != nil {
				return err
			}
			b = t
			if o.MAC == ([6]byte{}) {
				o.MAC = net.DefaultMAC(n.Tap)
			}
		}
		m.virtio = append(m.virtio, &virtioDev{name: name, dev: net.New(b, o), backend: b})
	}
	// One descriptor budget for all shares: a guest may not take, share
	// by share, every descriptor vmm has.
	budget := share.NewBudget()
	for i, sh := range m.cfg.Shares {
		name := fmt.Sprintf("virtio-fs%d", i)
		dev, err := fs.New(fs.Config{Tag: sh.Tag, Dir: sh.Dir, ReadOnly: sh.ReadOnly, Logf: m.prefixLogf(name), Budget: budget})
		var de *share.DirError
		if errors.As(err, &de) && sh.Flag != "" {
			// In the user's words: "-share DIR: permission denied",
			// not the device's tag, which vmm run chose.
			return fmt.Errorf("%s %s: %w", sh.Flag, sh.Dir, de.Err)
		}
		if err != nil {
			return err
		}
		m.virtio = append(m.virtio, &virtioDev{name: name, dev: dev, backend: dev})
	}
	if m.cfg.JobOutput != nil {
		dev, err := console.New(guestabi.JobOutputPort, m.cfg.JobOutput)
		if err != nil {
			return err
		}
		m.jobPort = dev
		m.virtio = append(m.virtio, &virtioDev{name: "virtio-console", dev: dev})
		if m.cfg.JobInputPort {
			// Its own device rather than a second port of the
			// output's: each stays a one-port device, and the
			// output port a snapshot holds is unchanged.
			in, err := console.New(guestabi.JobInputPort, io.Discard)
			if err != nil {
				return err
			}
			m.jobInPort = in
			m.virtio = append(m.virtio, &virtioDev{name: "virtio-console-in", dev: in})
		}
	}
	return nil
}

// JobInputPortFits reports whether the job's input port fits beside the
// virtio devices cfg makes and more still to be added: it is a speed-up,
// not a device the user asked for, so where it would not fit the input
// takes the UART instead.
func JobInputPortFits(cfg Config, more int) bool {
	cfg.JobInputPort = true
	return virtioCount(cfg)+more <= maxVirtioDevices
}

// virtioCount is how many virtio devices cfg makes: its disks, network
// cards and shares, and the job's output and input ports with a job.
func virtioCount(cfg Config) int {
	n := len(cfg.Disks) + len(cfg.NICs) + len(cfg.Shares)
	if cfg.JobOutput != nil {
		n++
		if cfg.JobInputPort {
			n++
		}
	}
	return n
}

// flushJobOutput hands the job's output still in the guest's RAM (its
// port's transmit queue) to JobOutput, once the vCPUs have stopped.
func (m *Machine) flushJobOutput(ctx context.Context) error {
	if m.jobPort == nil {
		return nil
	}
	if err := m.jobPort.Flush(ctx); err != nil {
		return fmt.Errorf("writing the job's output: %w", err)
	}
	return nil
}

// addVirtio wires each device to KVM: guest kicks of queue q (a 4-byte
// write of q to QueueNotify) signal that queue's eventfd inside KVM
// without a trip through vmm's vCPU loop, and the device raises its line
// by writing its irqfd, so device goroutines never touch a vCPU.
func (m *Machine) addVirtio(vm irqWiring) error {
	if err := m.addHostBridge(vm); err != nil {
		return err
	}
	if m.cfg.Transport == VirtioPCI {
		return m.addVirtioPCI(vm)
	}
	for i, d := range m.virtio {
		base := virtioAddr(i)
		var err error
		if d.irq, err = newEventFD(); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := vm.IRQFD(d.irq.fd, virtioGSI(i)); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		notifiers, err := d.newKicks()
		if err != nil {
			return err
		}
		for q, k := range d.kicks {
			if err := vm.IOEventFD(k.fd, base+virtio.MMIOQueueNotify, 4, uint64(q), kvm.IOEventFDDatamatch); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
		}
		if d.mmio, err = virtio.NewMMIO(d.dev, m.mem, d.irq, notifiers, m.prefixLogf(d.name)); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := m.mmio.Insert(d.name, base, virtio.MMIOSize, d.mmio); err != nil {
			return err
		}
	}
	return nil
}

// newKicks makes the eventfd of each of d's queues, which carries its
// notifications to the device (d.kicks), and returns them as the
// transport's notifiers.
func (d *virtioDev) newKicks() ([]virtio.Notifier, error) {
	notifiers := make([]virtio.Notifier, len(d.dev.QueueMax()))
	for q := range notifiers {
		k, err := newEventFD()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.name, err)
		}
		d.kicks = append(d.kicks, k)
		notifiers[q] = k
	}
	return notifiers, nil
}

// prefixLogf is m.logf with the device's name in front.
func (m *Machine) prefixLogf(name string) func(string, ...any) {
	return func(format string, args ...any) { m.logf(name+": "+format, args...) }
}

// closeVirtio stops the devices' workers before their backends and
// eventfds go away, so no worker touches a closed file or guest RAM
// that is about to be unmapped.
func (m *Machine) closeVirtio() {
	for _, d := range m.virtio {
		switch {
		case d.mmio != nil:
			d.mmio.Close()
		case d.pci != nil:
			d.pci.Close()
		case d.dev != nil:
			d.dev.Reset()
		}
		if d.backend != nil {
			d.backend.Close()
		}
		for _, k := range d.kicks {
			k.Close()
		}
		if d.irq != nil {
			d.irq.Close()
		}
		for _, v := range d.vectors {
			v.Close()
		}
	}
	m.virtio = nil
}

// eventFD is a Linux eventfd, the handle KVM's ioeventfd and irqfd work
// on. It is non-blocking and wrapped in an *os.File, so a device worker
// waiting for a kick is parked in Go's netpoller instead of holding a
// thread, and Close wakes it with an error.
//
// Its reads and writes are made without telling Go's scheduler (package
// rawsys): a device answers each kick with a few calls, and the first
// scheduled call after the program sat idle wakes the runtime's monitor
// thread, once per request. rawsys.File keeps what os.File gives: a read
// that would block parks the goroutine in the netpoller, and Close waits
// for a call in progress, so a signal never writes to a descriptor
// number reused since. Wait has one caller at a time; Signal may have
// several (every queue's worker signals the device's interrupt).
type eventFD struct {
	f   *os.File
	fd  int // for KVM registration only; I/O goes through x
	x   *rawsys.File
	buf [8]byte
	one [8]byte
}

func newEventFD() (*eventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	e := &eventFD{f: os.NewFile(uintptr(fd), "eventfd"), fd: fd}
	e.one[0] = 1 // the counter is a native-endian uint64; amd64 is little-endian
	if e.x, err = rawsys.NewFile(e.f); err != nil {
		e.f.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return e, nil
}

// Wait consumes every signal since the last Wait (an eventfd read returns
// and clears the counter), so kicks coalesce.
func (e *eventFD) Wait() error {
	_, err := e.x.Read(e.buf[:])
	return err
}

// Signal adds one to the counter. The write cannot block: it would only
// if the counter neared 2^64.
func (e *eventFD) Signal() { _, _ = e.x.Write(e.one[:]) }

// Trigger makes the eventfd an irqfd's edge.
func (e *eventFD) Trigger() { e.Signal() }

func (e *eventFD) Close() error {
	err := e.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
