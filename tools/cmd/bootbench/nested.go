package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/tools/bench"
	"github.com/vmm-dev/vmm/tools/distro"
	"github.com/vmm-dev/vmm/tools/nested"
)

// prepare builds or finds every file the run needs, on the host.
func prepare(ctx context.Context, o options, dir, mode string) (*hostFiles, error) {
	root, err := guest.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	f := &hostFiles{vmm: o.vmm, cloud: o.kernel, initrd: o.initrd, qemuCPU: o.qemuCPU}
	if f.vmm == "" {
		f.vmm = filepath.Join(dir, "vmm")
		if err := nested.BuildVMM(ctx, root, f.vmm); err != nil {
			return nil, err
		}
	}
	f.vmm = absPath(f.vmm)
	switch o.bootTimer {
	case "yes":
		f.bootTimer = true
	case "auto":
		f.bootTimer = vmmHasBootTimer(ctx, f.vmm)
		if !f.bootTimer {
			f.notes = append(f.notes, "This vmm has no -boot-timer: its bars show the whole boot only.")
		}
	}
	// The cloud kernel is the guests' and, nested, L1's, which needs
	// its modules (kvm-amd).
	cloud, err := guest.FetchKernel(ctx, guest.FlavorCloud, "")
	if err != nil {
		return nil, err
	}
	f.cloudMods = cloud.ModulesDir
	if f.cloud == "" {
		f.cloud = cloud.BzImage
	}
	switch o.microKernel {
	case "none":
		f.notes = append(f.notes, "vmm-microvm left out: -micro-kernel none.")
	case "", "build":
		// Building the minimal kernel takes about 40 minutes on a 2-core
		// machine, so by default only a kernel already built is used:
		// the question the benchmark is for should not wait behind it.
		script := filepath.Join(root, "tools", "kernel", "build.sh")
		args := []string{"--cached"}
		if o.microKernel == "build" {
			fmt.Fprintln(os.Stderr, "bootbench: building (or finding) the minimal kernel with tools/kernel/build.sh")
			args = nil
		}
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		switch {
		case err == nil:
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			f.micro = lines[len(lines)-1]
		case o.microKernel == "build":
			return nil, fmt.Errorf("tools/kernel/build.sh: %w", err)
		default:
			f.notes = append(f.notes, "vmm-microvm left out: the minimal kernel is not built yet (make kernel, or -micro-kernel build).")
		}
	default:
		f.micro = absPath(o.microKernel)
	}
	if f.initrd == "" {
		f.initrd = filepath.Join(dir, "initrd.cpio")
		fmt.Fprintln(os.Stderr, "bootbench: building the guest initramfs")
		if err := guest.BuildInitramfs(ctx, guest.InitramfsOptions{Out: f.initrd, Kernel: cloud, TempDir: filepath.Join(dir, "initramfs-tmp")}); err != nil {
			return nil, err
		}
	}
	f.initrd = absPath(f.initrd)
	if o.qemu != "none" {
		if mode == "nested" {
			bin, files, err := bench.QEMUFiles(ctx, o.qemu)
			if err == nil {
				err = addMicrovmFirmware(ctx, bin, files)
			}
			if err != nil {
				f.notes = append(f.notes, fmt.Sprintf("QEMU left out: %v.", err))
			} else {
				f.qemu, f.qemuFiles = bin, files
			}
		} else if p, err := exec.LookPath(o.qemu); err == nil {
			f.qemu = p
		} else {
			f.notes = append(f.notes, fmt.Sprintf("QEMU left out: %v.", err))
		}
	}
	if o.lkvm != "none" {
		p, err := exec.LookPath(o.lkvm)
		switch {
		case err != nil:
			f.notes = append(f.notes, "kvmtool (lkvm) is not installed (Debian 12 has no kvmtool package), so it is left out.")
		case mode == "nested" && !isStatic(p):
			f.notes = append(f.notes, fmt.Sprintf("%s is dynamically linked; only a static lkvm is copied into L1, so it is left out.", p))
		default:
			f.lkvm = p
		}
	}
	if err := prepareDistro(ctx, o, dir, f); err != nil {
		return nil, err
	}
	if mode == "nested" {
		if f.self, err = staticSelf(ctx, root, dir); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// prepareDistro finds the Debian 12 image for vmm-distro and qemu-distro
// (building it when this machine can and none is cached: debootstrap
// takes minutes) and copies its disk, which the boots write, into dir.
func prepareDistro(ctx context.Context, o options, dir string, f *hostFiles) error {
	asked := slices.ContainsFunc(o.systems, func(s string) bool { return strings.HasSuffix(s, "-distro") })
	if o.distro == "none" || (len(o.systems) > 0 && !asked) {
		return nil
	}
	var img *distro.Image
	if o.distro != "" {
		img = distro.ImageIn(absPath(o.distro))
		if err := img.Check(); err != nil {
			return fmt.Errorf("-distro: %w", err)
		}
	} else {
		fmt.Fprintln(os.Stderr, "bootbench: finding (or building, minutes) the Debian 12 image for vmm-distro and qemu-distro; -distro none leaves them out")
		var err error
		img, err = distro.Debian12(ctx, "", os.Stderr)
		// Unless asked for by name, a distro that cannot be had (no
		// root, no debootstrap, no mirror) costs the run only these
		// two systems.
		if err != nil && (errors.Is(err, distro.ErrUnavailable) || !asked) && ctx.Err() == nil {
			f.notes = append(f.notes, fmt.Sprintf("vmm-distro and qemu-distro left out: %s.", strings.ReplaceAll(err.Error(), "\n", " | ")))
			return nil
		}
		if err != nil {
			return err
		}
	}
	f.distro = img
	if o.distroDisk != "" {
		f.distroDisk = absPath(o.distroDisk)
		return nil
	}
	f.distroDisk = filepath.Join(dir, "distro-rootfs.ext4")
	f.copyDistroDisk = true
	return img.CopyDisk(ctx, f.distroDisk)
}

// microvmFirmware is what -M microvm loads beyond what bench.QEMUFiles
// ships for -M pc: qboot, its default BIOS.
var microvmFirmware = []string{"bios-microvm.bin"}

func addMicrovmFirmware(ctx context.Context, bin string, files map[string]string) error {
	out, err := exec.CommandContext(ctx, bin, "-L", "help").Output()
	if err != nil {
		return fmt.Errorf("%s -L help: %w", bin, err)
	}
	for _, name := range microvmFirmware {
		found := false
		for _, d := range strings.Fields(string(out)) {
			p := filepath.Join(d, name)
			if fileExists(p) {
				files[p] = p
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("QEMU firmware %s not found", name)
		}
	}
	return nil
}

func isStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// staticSelf returns this program as a static binary for L1, whose
// initramfs has no libc: itself if it is one, else a fresh build.
func staticSelf(ctx context.Context, root, dir string) (string, error) {
	if exe, err := os.Executable(); err == nil && isStatic(exe) {
		return exe, nil
	}
	out := filepath.Join(dir, "bootbench")
	return out, goBuild(ctx, root, out, "./tools/cmd/bootbench")
}

func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// L1 paths of the files runNested copies in.
const (
	l1Self   = "/bin/bootbench"
	l1VMM    = "/vmm"
	l1Cloud  = "/guest/cloud"
	l1Micro  = "/guest/microvm"
	l1Initrd = "/guest/initrd.cpio"
	l1LKVM   = "/bin/lkvm"
	l1Distro = "/distro"
	l1Disk   = "/dev/vda" // nested.DiskPath(0), as a constant
	l1Work   = "/tmp/bootbench"
)

// maxL1Boots bounds the L1s one run may use: QEMU TCG's nested SVM freezes
// L1 now and then (about once in 20-40 guest boots), and a run boots a
// few dozen guests.
const maxL1Boots = 3

// lineRE matches what the L1 side prints: a sample, the snapshot's time
// or the memory figure (emitLine), the end, or why it failed.
var lineRE = regexp.MustCompile(`bootbench-(?:(sample|snapshot|memory|failure) (\{[^\r\n]*\})|(done)|error: ([^\r\n]*))\r?\n`)

// l1Output is what one L1 boot's run printed.
type l1Output struct {
	samples    []Sample
	snapshotMS []float64
	memory     *MemoryReport
	failures   []Failure
	done       bool
}

// parseLine adds the line lineRE found at the end of out to o. An
// error line from L1 is returned as an error.
func (o *l1Output) parseLine(out string) error {
	m := lineRE.FindStringSubmatch(out)
	switch {
	case m == nil:
		return fmt.Errorf("bootbench in L1: unparsable output %q", lastLines(out, 3))
	case m[3] != "":
		o.done = true
		return nil
	case m[1] == "":
		return fmt.Errorf("bootbench in L1: %s", strings.ReplaceAll(m[4], " | ", "\n"))
	}
	var err error
	switch m[1] {
	case "sample":
		var s Sample
		if err = json.Unmarshal([]byte(m[2]), &s); err == nil {
			o.samples = append(o.samples, s)
		}
	case "snapshot":
		var s snapshotLine
		if err = json.Unmarshal([]byte(m[2]), &s); err == nil {
			o.snapshotMS = append(o.snapshotMS, s.MS)
		}
	case "failure":
		var f Failure
		if err = json.Unmarshal([]byte(m[2]), &f); err == nil {
			o.failures = append(o.failures, f)
		}
	case "memory":
		var mem MemoryReport
		if err = json.Unmarshal([]byte(m[2]), &mem); err == nil {
			o.memory = &mem
		}
	}
	if err != nil {
		return fmt.Errorf("bootbench in L1: %s %q: %w", m[1], m[2], err)
	}
	return nil
}

// runNested runs the benchmark inside L1 guests. All rounds run in one
// L1 boot unless it freezes; then the rounds completed so far are kept,
// the partial round is dropped, and the rest run in a fresh L1, which the
// report notes.
func runNested(ctx context.Context, o options, f *hostFiles, rep *Report) error {
	files := map[string]string{l1Self: f.self, l1VMM: f.vmm, l1Cloud: f.cloud, l1Initrd: f.initrd}
	if f.micro != "" {
		files[l1Micro] = f.micro
	}
	maps.Copy(files, f.qemuFiles)
	// vmm's helpers: the cold kernel cache's boots need vmm-unpack. A
	// -vmm given without them boots those the bzImage's way, as vmm
	// says on its console.
	for l1, host := range nested.Helpers(f.vmm) {
		if _, err := os.Stat(host); err == nil {
			files[l1] = host
		}
	}
	if f.lkvm != "" {
		files[l1LKVM] = f.lkvm
	}
	cfg := nested.Config{
		Kernel: f.cloud, ModulesDir: f.cloudMods, Files: files, MemoryMiB: o.l1Memory,
		FreezeTimeout: 30 * time.Second, Log: os.Stderr,
	}
	if f.distro != nil {
		in := distro.ImageIn(l1Distro)
		files[in.Kernel] = f.distro.Kernel
		files[in.Initrd] = f.distro.Initrd
		// L1 sees the copy as its first disk; vmm and QEMU both boot
		// from that block device.
		cfg.Disks = []nested.Disk{{Path: f.distroDisk}}
		// A systemd boot keeps the console quiet for long stretches.
		cfg.FreezeTimeout = 90 * time.Second
	}
	sys, err := systems(f.layout(l1Work), o.guest, o.systems)
	if err != nil {
		return err
	}
	done := 0
	for boot := 1; done < o.runs; boot++ {
		if boot > maxL1Boots {
			return fmt.Errorf("L1 froze %d times; giving up with %d of %d rounds done", maxL1Boots, done, o.runs)
		}
		if boot > 1 && f.copyDistroDisk {
			// The frozen L1 may have left the distro's disk mid-write.
			if err := f.distro.CopyDisk(ctx, f.distroDisk); err != nil {
				return err
			}
		}
		rep.L1Boots = boot
		res, err := runInL1(ctx, cfg, o, f, o.runs-done)
		rep.SnapshotMS = append(rep.SnapshotMS, res.snapshotMS...)
		for _, f := range res.failures {
			if f.Round >= 0 {
				f.Round += done
			}
			rep.Failures = append(rep.Failures, f)
		}
		if res.memory != nil {
			rep.Memory = res.memory
		}
		// Keep whole rounds only: a partial one would favour whoever
		// came first in it.
		complete := completeRounds(res.samples, len(sys))
		for _, s := range res.samples {
			if s.Round < complete {
				s.Round += done
				s.L1Boot = boot
				rep.Samples = append(rep.Samples, s)
			}
		}
		done += complete
		if err == nil {
			if done < o.runs {
				return fmt.Errorf("L1 run ended after %d of %d rounds", done, o.runs)
			}
			break
		}
		if !freshL1(err) {
			return err
		}
		fmt.Fprintf(os.Stderr, "bootbench: L1 froze after %d complete rounds (a QEMU TCG flaw); the remaining rounds run in a fresh L1\n", done)
	}
	if o.memoryVMs > 0 && rep.Memory == nil && slices.ContainsFunc(sys, func(s System) bool { return s.Kind == KindJob }) {
		rep.Note += " The memory figure is missing: L1 froze while it was taken."
	}
	if rep.L1Boots > 1 {
		rep.Note += fmt.Sprintf(" L1 froze during the run, so the rounds come from %d L1 boots; each boot's rounds are complete and interleaved.", rep.L1Boots)
	}
	return nil
}

// freshL1 says whether the rounds an L1 left undone are worth a fresh
// L1: when it froze while running (nested.ErrFrozen) or while booting,
// its agent never having said hello (nested.ErrNotReady). nested.Judge
// takes both for the emulator's doing, as the e2e tests' retries do; a
// run that ended otherwise is reported as it ended.
func freshL1(err error) bool {
	return nested.Judge(err, nested.Evidence{}).Cause == nested.CauseFrozen
}

// completeRounds counts the leading rounds that have a sample of every
// one of n systems.
func completeRounds(ss []Sample, n int) int {
	count := map[int]int{}
	for _, s := range ss {
		count[s.Round]++
	}
	r := 0
	for n > 0 && count[r] == n {
		r++
	}
	return r
}

// runInL1 boots one L1, runs `rounds` rounds in it and returns what it
// printed, even when it fails part way.
func runInL1(ctx context.Context, cfg nested.Config, o options, f *hostFiles, rounds int) (l1Output, error) {
	var res l1Output
	l, err := nested.Start(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer l.Close()
	// Job waits take no context: closing L1 is what ends them on ^C.
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	args := []string{l1Self, "--emit", "--mode", "direct", "--work-dir", l1Work,
		"--runs", strconv.Itoa(rounds), "--warmup", strconv.Itoa(o.warmup),
		"--mem", strconv.Itoa(o.guest.MiB), "--smp", strconv.Itoa(o.guest.CPUs),
		"--vmm", l1VMM, "--kernel", l1Cloud, "--initrd", l1Initrd,
		"--boot-timer", map[bool]string{true: "yes", false: "no"}[f.bootTimer],
		"--micro-kernel", "none", "--qemu", "none", "--lkvm", "none",
		"--memory-vms", strconv.Itoa(o.memoryVMs)}
	if f.micro != "" {
		args = append(args, "--micro-kernel", l1Micro)
	}
	if f.qemu != "" {
		args = append(args, "--qemu", f.qemu, "--qemu-cpu", f.qemuCPU)
	}
	if f.lkvm != "" {
		args = append(args, "--lkvm", l1LKVM)
	}
	if f.distro != nil {
		args = append(args, "--distro", l1Distro, "--distro-disk", l1Disk)
	} else {
		args = append(args, "--distro", "none")
	}
	if len(o.systems) > 0 {
		args = append(args, "--systems", strings.Join(o.systems, ","))
	}
	j, err := l.Run(ctx, args, nested.StdinNull)
	if err != nil {
		return res, err
	}
	// A generous bound per line: one boot each, but the warm-up boots
	// every system before the first sample, the snapshot comes first,
	// and the memory figure boots 11 VMs.
	wait := time.Duration(1+o.warmup) * bootTimeout * time.Duration(len(systemOrder)+o.memoryVMs)
	for {
		out, err := j.Expect(lineRE, wait)
		if err != nil {
			return res, err
		}
		n := len(res.samples)
		if err := res.parseLine(out); err != nil {
			return res, err
		}
		if res.done {
			_, err := j.Wait(exitTimeout)
			return res, err
		}
		if len(res.samples) > n {
			s := res.samples[n]
			fmt.Fprintf(os.Stderr, "bootbench: round %d/%d %s: ready in %s\n", s.Round+1, rounds, s.System, fmtMS(s.ReadyMS))
		}
	}
}
