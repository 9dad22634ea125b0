package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/tools/container"
	"github.com/vmm-dev/vmm/tools/distro"
)

// Layout is where the files of a run are, on the machine that boots.
type Layout struct {
	VMM         string // static vmm
	BootTimer   bool   // vmm has -boot-timer
	CloudKernel string // Debian's cloud kernel
	MicroKernel string // `make kernel`'s; "" leaves vmm-microvm out
	Initrd      string
	QEMU        string // "" leaves QEMU out
	QEMUCPU     string // QEMU's -cpu
	LKVM        string // "" leaves kvmtool out
	WorkDir     string // the container's root and the snapshot go here
	// MemoryVMs is how many restored VMs run at once for the memory
	// figure (MemoryReport); 0 leaves it out.
	MemoryVMs int
	// NoLimits starts the container without cgroup limits, on hosts
	// where cgroup v2 cannot apply them (the report says so).
	NoLimits bool
	// Distro, if not nil, is the Debian 12 system vmm-distro and
	// qemu-distro boot.
	Distro *DistroLayout
}

// DistroLayout is a real distribution's files (package tools/distro):
// Debian 12 with systemd, its initramfs-tools initrd, an ext4 root on a
// virtio disk. Disk is written by the boots (a copy of the image's).
type DistroLayout struct {
	Kernel, Initrd, Disk string
}

// The distro systems' size and command line, the same for vmm and QEMU
// (QEMU's also starts with vmmDefaultCmdline): what TestDistroBoot boots
// (systemd's early services on two vCPUs), root mounted read-only first as
// Debian's fstab expects, quiet.
const (
	distroMiB     = 768
	distroCPUs    = 2
	distroCmdline = "root=/dev/vda ro quiet"
)

// Guest is what every system gets: the VM's size and the container's
// limits alike.
type Guest struct {
	MiB  int `json:"mib"`
	CPUs int `json:"cpus"`
}

// vmmDefaultCmdline is what vmm puts on the kernel command line before
// -append: every peer is given the same, so each VM boots the same
// kernel with the same line.
const vmmDefaultCmdline = machine.DefaultCmdline

// cmdline is the kernel command line for every VM: vmm's default (the
// serial console; the crypto self-tests skipped) and a quiet boot (each
// byte of a verbose boot is an exit, and nested two). vmm is given only
// the part after its default, with -append.
const (
	cmdlineAppend = "quiet"
	cmdline       = vmmDefaultCmdline + " " + cmdlineAppend
)

// systemOrder names everything the benchmark can boot, in the order
// reports list them.
var systemOrder = []string{"vmm-cloud", "vmm-vmlinux", "vmm-vmlinux-cold", "vmm-restore", "vmm-microvm", "qemu-pc", "qemu-microvm", "lkvm", "container", "vmm-distro", "qemu-distro"}

// systems builds the systems the layout allows, restricted to only if set.
func systems(l Layout, g Guest, only []string) ([]System, error) {
	mem, cpus := strconv.Itoa(g.MiB), strconv.Itoa(g.CPUs)
	vmm := func(name, kernel string) System {
		return System{Name: name, Kind: KindVMM, RAMMiB: g.MiB, Args: append([]string{l.VMM}, vmmGuestArgs(l, kernel, g)...)}
	}
	qemu := func(name, machine string) System {
		return System{Name: name, Kind: KindPeer, RAMMiB: g.MiB, Args: []string{l.QEMU, "-accel", "kvm", "-M", machine, "-cpu", l.QEMUCPU,
			"-m", mem, "-smp", cpus, "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
			"-kernel", l.CloudKernel, "-initrd", l.Initrd, "-append", cmdline}}
	}
	// The cloud kernel booted from vmm's kernel cache (-kernel-cache
	// DIR): decompressed on the host once, then loaded as a vmlinux and
	// entered at its 64-bit entry. Warm, the cache holds it already
	// (runLocal fills it before the rounds); cold, each boot starts
	// from an empty cache and pays the host's decompression.
	cached := func(name, dir string, cold bool) System {
		s := vmm(name, l.CloudKernel)
		s.Args = append(s.Args, "-kernel-cache", dir)
		if cold {
			s.EmptyDir = dir
		} else {
			s.FillsDir = dir
		}
		return s
	}
	var all []System
	all = append(all, vmm("vmm-cloud", l.CloudKernel))
	all = append(all, cached("vmm-vmlinux", filepath.Join(l.WorkDir, "kernel-cache-warm"), false))
	all = append(all, cached("vmm-vmlinux-cold", filepath.Join(l.WorkDir, "kernel-cache-cold"), true))
	all = append(all, System{Name: "vmm-restore", Kind: KindJob, Args: restoreArgs(l, g, restoreJob...)})
	if l.MicroKernel != "" {
		all = append(all, vmm("vmm-microvm", l.MicroKernel))
	}
	if l.QEMU != "" {
		// -M pc with no option ROMs or VGA; microvm with its RTC on, or
		// the kernel spends seconds probing for one (shared/NOTES.md).
		all = append(all, qemu("qemu-pc", "pc"), qemu("qemu-microvm", "microvm,rtc=on"))
	}
	if l.LKVM != "" {
		all = append(all, System{Name: "lkvm", Kind: KindPeer, RAMMiB: g.MiB, Args: []string{l.LKVM, "run", "--kernel", l.CloudKernel,
			"--initrd", l.Initrd, "--mem", mem, "--cpus", cpus, "--params", cmdline, "--console", "serial"}})
	}
	ct := System{Name: "container", Kind: KindContainer, Config: container.Config{
		Root: filepath.Join(l.WorkDir, "rootfs"),
		Args: []string{"/init"},
		Env:  []string{"PATH=/bbin:/bin", "TERM=vt100"},
	}}
	if !l.NoLimits {
		ct.Config.Limits = containerLimits(g)
	}
	all = append(all, ct)
	if d := l.Distro; d != nil {
		// Booted to the image's marker (multi-user.target reached); the
		// guest then powers itself off, and the harness waits for that
		// so the disk is clean for the next boot.
		root := distroCmdline
		all = append(all, System{Name: "vmm-distro", Kind: KindPeer, RAMMiB: distroMiB, Marker: distro.Marker, ExitLine: distro.PowerOffLine,
			Args: []string{l.VMM, "-kernel", d.Kernel, "-initrd", d.Initrd, "-append", root, "-disk", d.Disk,
				"-m", strconv.Itoa(distroMiB), "-smp", strconv.Itoa(distroCPUs)}})
		if l.QEMU != "" {
			all = append(all, System{Name: "qemu-distro", Kind: KindPeer, RAMMiB: distroMiB, Marker: distro.Marker, ExitLine: distro.PowerOffLine,
				Args: []string{l.QEMU, "-accel", "kvm", "-M", "pc", "-cpu", l.QEMUCPU,
					"-m", strconv.Itoa(distroMiB), "-smp", strconv.Itoa(distroCPUs), "-nodefaults", "-no-user-config",
					"-display", "none", "-serial", "stdio", "-no-reboot",
					"-kernel", d.Kernel, "-initrd", d.Initrd, "-append", vmmDefaultCmdline + " " + root,
					"-drive", "file=" + d.Disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0"}})
		}
	}
	if len(only) == 0 {
		return all, nil
	}
	var out []System
	for _, n := range only {
		i := slices.IndexFunc(all, func(s System) bool { return s.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("system %q: not one of %v (or not available here)", n, systemOrder)
		}
		out = append(out, all[i])
	}
	return out, nil
}

// containerLimits are the VM's size as cgroup limits.
func containerLimits(g Guest) container.Limits {
	return container.Limits{MemoryBytes: int64(g.MiB) << 20, CPUs: g.CPUs}
}

// prepareContainer unpacks the initramfs once into the container's root:
// the unpacking is image preparation, like pulling an image, and is not
// timed.
func prepareContainer(l Layout) error {
	root := filepath.Join(l.WorkDir, "rootfs")
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	f, err := os.Open(l.Initrd)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = container.Unpack(f, root)
	return err
}

// linePrefix starts the lines the L1 side prints in nested mode, where
// L1's console carries them to the host: "bootbench-KIND {json}".
const linePrefix = "bootbench-"

// snapshotLine is the "snapshot" line: how long vmm snapshot took.
type snapshotLine struct {
	MS float64 `json:"ms"`
}

// Failure is a boot that failed and was tried again: nested, the
// emulator now and then kills a guest (vmm's and QEMU's alike), which
// costs a round its sample, not the run.
type Failure struct {
	System  string `json:"system"`
	Round   int    `json:"round"` // -1 for a warm-up or cache-filling boot
	Attempt int    `json:"attempt"`
	Error   string `json:"error"` // the first line of the boot's error
}

// bootAttempts bounds the tries of one system in one round: a system
// that fails them all fails the run, as a broken one should.
const bootAttempts = 3

// bootRetried boots s until it succeeds, at most bootAttempts times,
// reporting each failure; a cancelled run is not retried.
func bootRetried(ctx context.Context, s System, round int, log io.Writer, failed func(Failure)) (Sample, error) {
	for attempt := 1; ; attempt++ {
		smp, err := boot(ctx, s)
		if err == nil || ctx.Err() != nil || attempt == bootAttempts {
			return smp, err
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		fmt.Fprintf(log, "bootbench: %s failed (attempt %d of %d), trying again: %s\n", s.Name, attempt, bootAttempts, first)
		failed(Failure{System: s.Name, Round: round, Attempt: attempt, Error: first})
	}
}

// results receives what runLocal measures, as it is measured.
type results struct {
	failure  func(Failure) // a boot that is tried again
	sample   func(Sample)
	snapshot func(time.Duration) // vmm snapshot, once, before the rounds
	memory   func(MemoryReport)  // after the rounds
}

// runLocal boots every system warmup times unrecorded, then rounds times,
// alternating the order between rounds so that a drift in the machine's
// speed favours no system. Each sample goes to out as it is taken. With
// vmm-restore among the systems, the snapshot is made first (untimed
// by the rounds, its own time reported) and the memory of restored VMs
// is measured last.
func runLocal(ctx context.Context, l Layout, g Guest, sys []System, warmup, rounds int, log io.Writer, out results) error {
	restore := false
	for _, s := range sys {
		switch s.Kind {
		case KindContainer:
			if err := prepareContainer(l); err != nil {
				return fmt.Errorf("container root: %w", err)
			}
		case KindJob:
			restore = true
			fmt.Fprintln(log, "bootbench: vmm snapshot (once, outside the rounds)")
			d, err := makeSnapshot(ctx, l, g)
			if err != nil {
				return err
			}
			fmt.Fprintf(log, "bootbench: snapshot made in %s\n", fmtMS(ms(d)))
			out.snapshot(d)
		}
	}
	for _, s := range sys {
		// A warm kernel cache is filled by a warm-up boot, or by one
		// here when there is none.
		if s.FillsDir == "" || warmup > 0 {
			continue
		}
		fmt.Fprintf(log, "bootbench: %s: filling its kernel cache (one boot, outside the rounds)\n", s.Name)
		if _, err := bootRetried(ctx, s, -1, log, out.failure); err != nil {
			return fmt.Errorf("filling the kernel cache: %w", err)
		}
	}
	for w := 0; w < warmup; w++ {
		for _, s := range sys {
			smp, err := bootRetried(ctx, s, -1, log, out.failure)
			if err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			fmt.Fprintf(log, "bootbench: warm-up %s: ready in %.1f ms\n", s.Name, smp.ReadyMS)
		}
	}
	for r := 0; r < rounds; r++ {
		order := slices.Clone(sys)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			smp, err := bootRetried(ctx, s, r, log, out.failure)
			if err != nil {
				return fmt.Errorf("round %d: %w", r+1, err)
			}
			smp.Round = r
			out.sample(smp)
		}
	}
	if restore && l.MemoryVMs > 0 {
		fmt.Fprintf(log, "bootbench: memory of %d restored VMs at once and of one cold-booted VM\n", l.MemoryVMs)
		out.memory(measureMemory(ctx, l, g, l.MemoryVMs))
	}
	return nil
}

// emitLine prints v as one JSON line of the given kind (sample,
// snapshot or memory) for the host to read.
func emitLine(w io.Writer, kind string, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s%s %s\n", linePrefix, kind, b)
}
