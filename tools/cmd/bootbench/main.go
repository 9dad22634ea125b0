// Command bootbench times the boot of one userland (vmm's guest
// initramfs, to its "vmm-guest: ready" marker) as a VM under vmm with
// Debian's cloud kernel and with the minimal kernel `make kernel` builds,
// under QEMU (-M pc and -M microvm, -accel kvm) and kvmtool when present,
// and as a container (namespaces, pivot_root, cgroup v2 limits: package
// container), and vmm restoring a snapshot of that guest (vmm-restore:
// `vmm run -snapshot` of a job printing the marker; the snapshot is made
// once, outside the rounds), with the cloud kernel from vmm's kernel
// cache, warm and cold (vmm-vmlinux, vmm-vmlinux-cold), and a Debian 12
// systemd boot from a virtio-blk root under vmm and QEMU (vmm-distro,
// qemu-distro; package distro). Every VM gets the same command line. It prints
// min/median/max per phase, each VM's cost per boot (KVM's exits by
// reason, the VMM's CPU time and its memory outside guest RAM), the
// ratios vmm/QEMU in time and cost, cold/restored and VM/container, the memory (PSS) of
// restored VMs running at once against a cold-booted one, and writes JSON
// and an SVG chart on request.
//
// On a host with /dev/kvm everything runs directly (as root, for the
// container's cgroup). Elsewhere it all runs inside one L1 guest under
// QEMU TCG with emulated AMD-V (package nested): absolute times there are
// emulated, only the ratios count, and the output says so.
//
//	go run ./cmd/bootbench [-runs 10] [-json FILE] [-svg FILE]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/tools/container"
	"github.com/vmm-dev/vmm/tools/distro"
	"github.com/vmm-dev/vmm/tools/internal/flagspell"
	"github.com/vmm-dev/vmm/tools/kvmprobe"
)

type options struct {
	runs, warmup int
	guest        Guest
	mode         string
	vmm          string
	kernel       string
	microKernel  string
	initrd       string
	qemu         string
	qemuCPU      string
	lkvm         string
	bootTimer    string
	systems      []string
	jsonOut      string
	svgOut       string
	workDir      string
	emit         bool
	timeout      time.Duration
	l1Memory     int
	memoryVMs    int
	distro       string
	distroDisk   string // the L1 side: the distro's disk as L1 sees it
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := pflag.NewFlagSet("bootbench", pflag.ContinueOnError)
	fs.IntVar(&o.runs, "runs", 10, "measured boots of each system, interleaved")
	fs.IntVar(&o.warmup, "warmup", 1, "unmeasured boots of each system first")
	fs.IntVar(&o.guest.MiB, "mem", 256, "guest RAM in MiB (and the container's memory.max)")
	fs.IntVar(&o.guest.CPUs, "smp", 1, "guest vCPUs (and the container's cpu.max in CPUs)")
	fs.StringVar(&o.mode, "mode", "auto", "auto, direct (this host's /dev/kvm) or nested (inside an L1 under QEMU TCG)")
	fs.StringVar(&o.vmm, "vmm", "", "static vmm binary (default: go build ./cmd/vmm)")
	fs.StringVar(&o.kernel, "kernel", "", "Debian cloud kernel bzImage (default: fetched into the vmm cache)")
	fs.StringVar(&o.microKernel, "micro-kernel", "", `minimal kernel bzImage; default: the one make kernel built, if any; "build" builds it first (about 40 minutes); "none" leaves vmm-microvm out`)
	fs.StringVar(&o.initrd, "initrd", "", "guest initramfs (default: built with the guest package)")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", `QEMU binary; "none" leaves QEMU out`)
	fs.StringVar(&o.qemuCPU, "qemu-cpu", "host", "QEMU's -cpu model")
	fs.StringVar(&o.lkvm, "lkvm", "lkvm", `kvmtool binary, used when found; "none" leaves it out`)
	fs.StringVar(&o.bootTimer, "boot-timer", "auto", "pass -boot-timer to vmm: auto (if its -help lists it), yes or no")
	fs.StringSliceVar(&o.systems, "systems", nil, "only these systems: "+strings.Join(systemOrder, ","))
	fs.StringVar(&o.jsonOut, "json", "", "write the report as JSON to this file")
	fs.StringVar(&o.svgOut, "svg", "", "write the chart as SVG to this file")
	fs.StringVar(&o.workDir, "work-dir", "", "build and container files go here (default: a temporary directory)")
	fs.BoolVar(&o.emit, "emit", false, "print raw samples only (what the L1 side of nested mode does)")
	fs.DurationVar(&o.timeout, "timeout", time.Hour, "give up after this long")
	fs.IntVar(&o.l1Memory, "l1-memory", 3072, "L1 memory in MiB (nested mode)")
	fs.StringVar(&o.distro, "distro", "", `Debian 12 image directory (vmlinuz, initrd.img, rootfs.ext4) for vmm-distro and qemu-distro; default: the one tools/distro cached, else built now if this machine can (root, debootstrap: minutes); "none" leaves them out`)
	fs.StringVar(&o.distroDisk, "distro-disk", "", "the distro's root disk, written by the boots (default: a copy of the image's rootfs.ext4 in the work directory)")
	fs.IntVar(&o.memoryVMs, "memory-vms", 10, "restored VMs run at once for the memory (PSS) figure, after the rounds; 0 leaves it out")
	if err := fs.Parse(flagspell.SingleDashLong(fs, args)); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.runs < 1:
		return o, errors.New("-runs: want at least 1")
	case o.warmup < 0:
		return o, errors.New("-warmup: want 0 or more")
	case o.guest.MiB < 64:
		return o, errors.New("-mem: want at least 64 MiB")
	case o.guest.CPUs < 1:
		return o, errors.New("-smp: want at least 1")
	case o.memoryVMs < 0:
		return o, errors.New("-memory-vms: want 0 or more")
	}
	switch o.mode {
	case "auto", "direct", "nested":
	default:
		return o, fmt.Errorf("-mode %q: want auto, direct or nested", o.mode)
	}
	switch o.bootTimer {
	case "auto", "yes", "no":
	default:
		return o, fmt.Errorf("-boot-timer %q: want auto, yes or no", o.bootTimer)
	}
	return o, nil
}

func main() {
	container.Init() // the container's setup stage, when we are it
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		if o.emit {
			fmt.Printf("bootbench-error: %s\n", strings.ReplaceAll(err.Error(), "\n", " | "))
		}
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		os.Exit(1)
	}
}

// kvmUsable reports whether this host can boot the benchmark's VMs
// itself: whether its /dev/kvm runs the cloud kernel (package kvmprobe),
// not only whether the device opens.
func kvmUsable(ctx context.Context, o options) error {
	kernel := o.kernel
	if kernel == "" {
		k, err := guest.FetchKernel(ctx, guest.FlavorCloud, "")
		if err != nil {
			return err
		}
		kernel = k.BzImage
	}
	return kvmprobe.Usable(ctx, kernel, kvmprobe.DefaultTimeout)
}

func run(ctx context.Context, o options) error {
	mode := o.mode
	if mode == "auto" {
		mode = "direct"
		if err := kvmUsable(ctx, o); err != nil {
			mode = "nested"
			fmt.Fprintf(os.Stderr, "bootbench: no usable /dev/kvm (%v): running everything inside one nested L1 guest (QEMU TCG, emulated AMD-V)\n", err)
		}
	}
	dir := o.workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "bootbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if o.emit {
		return runEmit(ctx, o, dir)
	}
	rep := &Report{Mode: mode, Emulated: mode == "nested", Rounds: o.runs, Warmup: o.warmup, Guest: o.guest, Cmdline: cmdline}
	f, err := prepare(ctx, o, dir, mode)
	if err != nil {
		return err
	}
	rep.Note = strings.Join(f.notes, " ")
	if mode == "nested" {
		rep.Note = "Nested: every boot ran inside one L1 guest under QEMU TCG with emulated AMD-V, so absolute times are emulated and only the ratios count. " + rep.Note
		if err := runNested(ctx, o, f, rep); err != nil {
			return err
		}
	} else {
		l := f.layout(dir)
		if err := container.CgroupUsable(containerLimits(o.guest)); err != nil {
			l.NoLimits = true
			rep.Note += fmt.Sprintf(" The container ran without cgroup limits here: %v.", err)
		}
		sys, err := systems(l, o.guest, o.systems)
		if err != nil {
			return err
		}
		l.MemoryVMs = o.memoryVMs
		err = runLocal(ctx, l, o.guest, sys, o.warmup, o.runs, os.Stderr, results{
			sample: func(s Sample) {
				fmt.Fprintf(os.Stderr, "bootbench: round %d/%d %s: ready in %s\n", s.Round+1, o.runs, s.System, fmtMS(s.ReadyMS))
				rep.Samples = append(rep.Samples, s)
			},
			snapshot: func(d time.Duration) { rep.SnapshotMS = append(rep.SnapshotMS, ms(d)) },
			memory:   func(m MemoryReport) { rep.Memory = &m },
			failure:  func(f Failure) { rep.Failures = append(rep.Failures, f) },
		})
		if err != nil {
			return err
		}
	}
	rep.Note = strings.TrimSpace(rep.Note)
	rep.summarize()
	rep.WriteTable(os.Stdout)
	if o.jsonOut != "" {
		if err := rep.WriteJSON(o.jsonOut); err != nil {
			return err
		}
	}
	if o.svgOut != "" {
		out, err := os.Create(o.svgOut)
		if err != nil {
			return err
		}
		if err := rep.WriteSVG(out); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bootbench: chart written to %s\n", o.svgOut)
	}
	return nil
}

// runEmit is the L1 side of nested mode: the paths are L1's, given by
// the host, and samples go to stdout (the job console) one per line.
func runEmit(ctx context.Context, o options, dir string) error {
	l := Layout{VMM: o.vmm, BootTimer: o.bootTimer == "yes", CloudKernel: o.kernel, Initrd: o.initrd, WorkDir: dir, MemoryVMs: o.memoryVMs}
	if err := container.CgroupUsable(containerLimits(o.guest)); err != nil {
		return fmt.Errorf("container limits in L1: %w", err)
	}
	if o.microKernel != "none" {
		l.MicroKernel = o.microKernel
	}
	if o.qemu != "none" {
		l.QEMU, l.QEMUCPU = o.qemu, o.qemuCPU
	}
	if o.lkvm != "none" {
		if p, err := exec.LookPath(o.lkvm); err == nil {
			l.LKVM = p
		}
	}
	if o.distro != "none" && o.distro != "" {
		if o.distroDisk == "" {
			return errors.New("-distro needs -distro-disk on the L1 side")
		}
		img := distro.ImageIn(o.distro)
		l.Distro = &DistroLayout{Kernel: img.Kernel, Initrd: img.Initrd, Disk: o.distroDisk}
	}
	sys, err := systems(l, o.guest, o.systems)
	if err != nil {
		return err
	}
	err = runLocal(ctx, l, o.guest, sys, o.warmup, o.runs, os.Stdout, results{
		sample:   func(s Sample) { emitLine(os.Stdout, "sample", s) },
		snapshot: func(d time.Duration) { emitLine(os.Stdout, "snapshot", snapshotLine{MS: ms(d)}) },
		memory:   func(m MemoryReport) { emitLine(os.Stdout, "memory", m) },
		failure:  func(f Failure) { emitLine(os.Stdout, "failure", f) },
	})
	if err != nil {
		return err
	}
	fmt.Println("bootbench-done")
	return nil
}

// hostFiles is everything prepared on the host.
type hostFiles struct {
	self       string // this program, static, for L1
	vmm        string
	bootTimer  bool
	cloud      string
	cloudMods  string        // the cloud kernel's modules (L1 needs kvm-amd)
	distro     *distro.Image // nil without
	distroDisk string        // a copy of distro.Disk, which the boots write
	// copyDistroDisk: distroDisk is this run's copy, made again for
	// each L1 boot; false when -distro-disk named one.
	copyDistroDisk bool
	micro          string // "" without
	initrd         string
	qemu           string // "" without
	qemuCPU        string
	qemuFiles      map[string]string
	lkvm           string
	notes          []string
	kernelBuild    string
}

func (f *hostFiles) layout(dir string) Layout {
	l := Layout{VMM: f.vmm, BootTimer: f.bootTimer, CloudKernel: f.cloud, MicroKernel: f.micro,
		Initrd: f.initrd, QEMU: f.qemu, QEMUCPU: f.qemuCPU, LKVM: f.lkvm, WorkDir: dir}
	if f.distro != nil {
		l.Distro = &DistroLayout{Kernel: f.distro.Kernel, Initrd: f.distro.Initrd, Disk: f.distroDisk}
	}
	return l
}

// vmmHasBootTimer asks vmm's usage text whether it knows -boot-timer.
func vmmHasBootTimer(ctx context.Context, vmm string) bool {
	out, _ := exec.CommandContext(ctx, vmm, "-help").CombinedOutput()
	return strings.Contains(string(out), "boot-timer")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
