// Command vmm-bench compares vmm with QEMU (-accel kvm, its userspace
// virtio-blk-pci and virtio-net-pci, vhost=off) on the same guest kernel
// and initramfs: sequential read and write, 4 KiB random reads, and TCP
// throughput both ways over a TAP and over user-mode networking (vmm's
// -nic user against QEMU's slirp, guest to 10.0.2.2 and back through a
// port forward on 127.0.0.1, in the same boots as a second card); and a
// shared directory, vmm's virtio-fs against QEMU's 9p (-virtfs), with
// 10,000 small files created, stat'ed and read back and one 256 MiB
// sequential read, in boots of their own with Debian's generic kernel
// (the cloud kernel has no 9p).
// It prints a markdown table of medians over interleaved rounds and the
// vmm/QEMU ratios, and what each workload cost per MiB, request or file:
// the VM's exits by reason and interrupts injected (KVM's per-VM
// counters) and the VMM process's CPU time, sampled just before and just
// after each workload's command in the running guest (package kvmstats,
// through benchtool vmstat). A boot that fails (a guest the emulator
// killed) is retried and listed; only L1 failing ends the run.
//
// Without a usable /dev/kvm (and root, for the TAPs) both VMMs run inside
// one L1 guest under QEMU TCG with emulated AMD-V, like `make test`; only
// the ratios mean anything then, and the table says so.
//
//	go run ./cmd/vmm-bench [-rounds 3] [-json FILE]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/tools/bench"
	"github.com/vmm-dev/vmm/tools/internal/flagspell"
	"github.com/vmm-dev/vmm/tools/kvmprobe"
	"github.com/vmm-dev/vmm/tools/nested"
)

type options struct {
	params   bench.Params
	seqMiB   int
	tcpMiB   int
	diskMiB  int
	fsSeqMiB int
	// fsFilesAuto: -fs-files was not given, so a nested run takes
	// bench.NestedFSFiles.
	fsFilesAuto bool
	fsKernel    string
	fsInitrd    string
	mode        string
	vmm         string
	kernel      string
	initrd      string
	qemu        string
	qemuShare   string
	jsonOut     string
	workDir     string
	l1Memory    int
	only        []string
	smoke       bool
	console     bool
	timeout     time.Duration
	freezeTmo   time.Duration
}

func parseFlags(args []string) (options, error) {
	o := options{params: bench.DefaultParams()}
	fs := pflag.NewFlagSet("vmm-bench", pflag.ContinueOnError)
	fs.IntVar(&o.params.Rounds, "rounds", o.params.Rounds, "interleaved rounds; each boots every VMM once")
	fs.IntVar(&o.seqMiB, "seq-mib", int(o.params.SeqBytes>>20), "MiB per sequential read and write")
	fs.IntVar(&o.params.RandSeconds, "rand-seconds", o.params.RandSeconds, "seconds of 4 KiB random reads")
	fs.IntVar(&o.tcpMiB, "tcp-mib", int(o.params.TCPBytes>>20), "MiB per TCP direction")
	fs.IntVar(&o.diskMiB, "disk-mib", int(o.params.DiskBytes>>20), "size of the raw disk image (in RAM)")
	fs.IntVar(&o.params.GuestMiB, "guest-mib", o.params.GuestMiB, "guest RAM in MiB")
	fs.IntVar(&o.params.FSFiles, "fs-files", -1, fmt.Sprintf("small files the shared-directory workload (vmm's virtio-fs against QEMU's share, -qemu-share) creates, stats and reads back; 0 leaves the workload out (default %d, or %d nested, where each file costs a good part of a second)", o.params.FSFiles, bench.NestedFSFiles))
	fs.IntVar(&o.params.FSFileSize, "fs-file-size", o.params.FSFileSize, "bytes in each of those files")
	fs.IntVar(&o.fsSeqMiB, "fs-seq-mib", int(o.params.FSSeqBytes>>20), "MiB of the shared directory's sequential read")
	fs.StringVar(&o.fsKernel, "fs-kernel", "", "guest bzImage for the shared-directory workload, with virtio-fs and 9p (default: Debian's generic kernel from the vmm cache; the cloud kernel has no 9p)")
	fs.StringVar(&o.fsInitrd, "fs-initrd", "", "initramfs for -fs-kernel with its fuse, virtiofs, 9p and 9pnet_virtio modules and vmm-iotool (default: built with the guest package)")
	fs.StringVar(&o.mode, "mode", "auto", "auto, nested (inside an L1 under QEMU TCG) or direct (this host's /dev/kvm, as root)")
	fs.StringVar(&o.vmm, "vmm", "", "vmm binary, static (default: go build ./cmd/vmm)")
	fs.StringArrayVar(&o.params.VMMFlags, "vmm-flag", nil, "a flag added to every vmm command line, as one argument (e.g. --vmm-flag=-virtio-transport=mmio); repeatable")
	fs.StringVar(&o.kernel, "kernel", "", "guest bzImage (default: Debian's cloud kernel from the vmm cache)")
	fs.StringVar(&o.initrd, "initrd", "", "guest initramfs with vmm-iotool (default: built with the guest package)")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "QEMU binary to compare against (copied into L1 with its libraries)")
	fs.StringVar(&o.qemuShare, "qemu-share", "auto", "how QEMU shares the directory: virtiofsd (virtio-fs, as vmm, through the virtiofsd installed beside QEMU: Debian 12 ships QEMU's own in qemu-system-common), 9p (-virtfs, no daemon), or auto: virtiofsd when installed, else 9p")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.workDir, "work-dir", "", "keep built files and L1's kernel log here (default: a temporary directory)")
	fs.IntVar(&o.l1Memory, "l1-memory", 3072, "L1 memory in MiB (nested mode)")
	fs.StringSliceVar(&o.only, "systems", nil, "only these VMMs (vmm, QEMU), for debugging one of them")
	fs.BoolVar(&o.smoke, "smoke", false, "only boot each VMM once and check its guest sees /dev/vda, eth0 (TAP) and eth1 (user-mode network)")
	fs.BoolVar(&o.console, "console", false, "copy the guests' consoles to stderr")
	fs.DurationVar(&o.timeout, "timeout", 45*time.Minute, "give up after this long")
	fs.DurationVar(&o.freezeTmo, "freeze-timeout", 30*time.Second, "console and heartbeat silence that counts as a frozen L1")
	if err := fs.Parse(flagspell.SingleDashLong(fs, args)); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.params.SeqBytes = int64(o.seqMiB) << 20
	o.params.TCPBytes = int64(o.tcpMiB) << 20
	o.params.DiskBytes = int64(o.diskMiB) << 20
	o.params.FSSeqBytes = int64(o.fsSeqMiB) << 20
	fsFiles := o.params.FSFiles
	if fsFiles < 0 {
		o.params.FSFiles = bench.DefaultParams().FSFiles // checked; run picks the nested default
	}
	if err := o.params.Check(); err != nil {
		return o, err
	}
	o.fsFilesAuto = fsFiles < 0
	switch o.mode {
	case "auto", "nested", "direct":
	default:
		return o, fmt.Errorf("-mode %q: want auto, nested or direct", o.mode)
	}
	switch o.qemuShare {
	case "auto", "virtiofsd", "9p":
	default:
		return o, fmt.Errorf("-qemu-share %q: want auto, virtiofsd or 9p", o.qemuShare)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-bench: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-bench: %v\n", err)
		os.Exit(1)
	}
}

// directUsable reports whether this host can run both VMMs itself: root
// for the TAPs and a /dev/kvm that runs guests, as kvmprobe finds by
// booting its probe and, when given, the guest kernel to its first exit:
// a /dev/kvm that merely opens (a sandbox's paravirtual one) would hang
// the first boot instead of falling back to nested mode.
func directUsable(ctx context.Context, kernel string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root (TAPs need CAP_NET_ADMIN)")
	}
	return kvmprobe.Usable(ctx, kernel, kvmprobe.DefaultTimeout)
}

// files is everything built or fetched on the host.
type files struct {
	vmm, l1tool, benchtool string
	guestKernel            *guest.KernelFiles
	kernel, initrd         string
	// The shared-directory workload's guest, when it runs.
	fsKernel, fsInitrd string
	fsKernelName       string
}

// fsModules are what the shared-directory guest loads besides the usual
// ones: QEMU's 9p client (virtio-fs's are among guest.DefaultModules).
var fsModules = []string{"9p", "9pnet_virtio"}

func prepare(ctx context.Context, o options, dir string) (*files, error) {
	root, err := guest.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	f := &files{vmm: o.vmm, kernel: o.kernel, initrd: o.initrd,
		l1tool: filepath.Join(dir, "l1tool"), benchtool: filepath.Join(dir, "benchtool")}
	if f.vmm == "" {
		f.vmm = filepath.Join(dir, "vmm")
		if err := nested.BuildVMM(ctx, root, f.vmm); err != nil {
			return nil, err
		}
	}
	if err := nested.BuildInit(ctx, f.l1tool); err != nil {
		return nil, err
	}
	if err := goBuild(ctx, root, f.benchtool, "./tools/bench/cmd/benchtool"); err != nil {
		return nil, err
	}
	// The cloud kernel is both L1's and the guest's; L1 needs its modules.
	if f.guestKernel, err = guest.FetchKernel(ctx, guest.FlavorCloud, ""); err != nil {
		return nil, err
	}
	if f.kernel == "" {
		f.kernel = f.guestKernel.BzImage
	}
	if f.initrd == "" {
		f.initrd = filepath.Join(dir, "initrd.cpio")
		fmt.Fprintf(os.Stderr, "vmm-bench: building the guest initramfs\n")
		if err := buildWithIotool(ctx, guest.InitramfsOptions{Out: f.initrd, Kernel: f.guestKernel, TempDir: filepath.Join(dir, "initramfs-tmp")}); err != nil {
			return nil, err
		}
	}
	if o.params.FSFiles > 0 {
		if err := prepareFS(ctx, o, dir, f); err != nil {
			return nil, err
		}
	}
	if !o.smoke {
		need := []string{f.initrd}
		if o.params.FSFiles > 0 {
			need = append(need, f.fsInitrd)
		}
		for _, p := range need {
			ok, err := bench.InitrdHas(p, guest.IotoolPath)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%s has no /bin/vmm-iotool: give the image with it (make guest writes build/guest-cloud/initrd-iotool.cpio; the initrd.cpio beside it, the image vmm run jobs boot, has none)", p)
			}
		}
	}
	return f, nil
}

// prepareFS finds or builds the shared-directory workload's kernel and
// initramfs: Debian's generic kernel, which has 9p (for QEMU's share)
// as well as virtio-fs, and an initramfs with both clients' modules.
func prepareFS(ctx context.Context, o options, dir string, f *files) error {
	f.fsKernel, f.fsInitrd, f.fsKernelName = o.fsKernel, o.fsInitrd, o.fsKernel
	if f.fsKernel != "" && f.fsInitrd != "" {
		return nil
	}
	generic, err := guest.FetchKernel(ctx, guest.FlavorGeneric, "")
	if err != nil {
		return err
	}
	if f.fsKernel == "" {
		f.fsKernel, f.fsKernelName = generic.BzImage, generic.Version
	}
	if f.fsInitrd == "" {
		f.fsInitrd = filepath.Join(dir, "initrd-fs.cpio")
		fmt.Fprintf(os.Stderr, "vmm-bench: building the shared-directory guest's initramfs (%s)\n", generic.Version)
		mods := append(guest.DefaultModules(), fsModules...)
		if err := buildWithIotool(ctx, guest.InitramfsOptions{Out: f.fsInitrd, Kernel: generic, Modules: mods, TempDir: filepath.Join(dir, "initramfs-fs-tmp")}); err != nil {
			return err
		}
	}
	return nil
}

// buildWithIotool builds the guest's initramfs as o says, with vmm-iotool
// added (guest.AddIotool): the image users boot has none.
func buildWithIotool(ctx context.Context, o guest.InitramfsOptions) error {
	out := o.Out
	o.Out = out + ".lean"
	if err := guest.BuildInitramfs(ctx, o); err != nil {
		return err
	}
	defer os.Remove(o.Out)
	return guest.AddIotool(ctx, o.Out, out)
}

// kernelName names the guest kernel for the report: its release when it
// is the cached cloud kernel (make bench passes mkguest's copy of it).
func (f *files) kernelName() string {
	if f.kernel == f.guestKernel.BzImage || sameContent(f.kernel, f.guestKernel.BzImage) {
		return f.guestKernel.Version
	}
	return f.kernel
}

// fsEnv names the shared-directory guest's kernel for the report.
func (f *files) fsEnv() string {
	if f.fsKernel == "" {
		return ""
	}
	return fmt.Sprintf(" (shared directory: %s, both VMMs)", f.fsKernelName)
}

func sameContent(a, b string) bool {
	x, err := os.ReadFile(a)
	if err != nil {
		return false
	}
	y, err := os.ReadFile(b)
	return err == nil && bytes.Equal(x, y)
}

func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	nestedMode := true
	switch o.mode {
	case "direct":
		if err := directUsable(ctx, o.kernel); err != nil {
			return fmt.Errorf("-mode direct: %w", err)
		}
		nestedMode = false
	case "auto":
		if err := directUsable(ctx, o.kernel); err == nil {
			nestedMode = false
		} else {
			fmt.Fprintf(os.Stderr, "vmm-bench: no direct KVM here (%v): running nested inside an L1 guest under QEMU TCG with emulated AMD-V\n", err)
		}
	}

	dir := o.workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "vmm-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if nestedMode && o.fsFilesAuto {
		o.params.FSFiles = bench.NestedFSFiles
	}
	f, err := prepare(ctx, o, dir)
	if err != nil {
		return err
	}
	rep := &bench.Report{Date: time.Now(), Nested: nestedMode}
	loadStart := loadAvg()
	var console io.Writer
	if o.console {
		console = os.Stderr
	}
	runner := &bench.Runner{Params: o.params, Log: os.Stderr, Only: o.only}
	do := func() error {
		if o.smoke {
			return runner.Smoke(ctx)
		}
		return runner.Run(ctx, rep)
	}

	var runErr error
	if nestedMode {
		runErr = runNested(ctx, o, f, dir, runner, rep, do)
	} else {
		runner.Layout = bench.Layout{VMM: f.vmm, QEMU: mustLook(o.qemu), Kernel: f.kernel, Initrd: f.initrd,
			Disk: filepath.Join(dir, "disk.img"), L1Tool: f.l1tool, BenchTool: f.benchtool,
			FSKernel: f.fsKernel, FSInitrd: f.fsInitrd, FSDir: filepath.Join(dir, "fsbench")}
		if f.fsKernel != "" {
			if runner.Layout.VirtioFSD, _, err = qemuVirtioFSD(ctx, o, runner.Layout.QEMU, runner.Layout.FSDir); err != nil {
				return err
			}
		}
		rep.QEMUShare = bench.QEMUShare(runner.Layout, o.params, virtiofsdVersion(ctx, runner.Layout.VirtioFSD))
		runner.Host = &bench.DirectHost{Console: console}
		rep.Env = fmt.Sprintf("Host: %d CPUs; guest kernel %s%s; %s", numCPU(), f.kernelName(), f.fsEnv(), firstOutputLine(ctx, o.qemu, "--version"))
		runErr = do()
	}
	if runErr != nil {
		// Every round failed: the failed attempts are the report.
		if len(rep.Failures) > 0 {
			rep.Duration = time.Since(start)
			rep.WriteMarkdown(os.Stdout)
		}
		return runErr
	}
	// Other work on the machine is the main source of noise; say how
	// busy it was.
	rep.Env += fmt.Sprintf("; host load average %s at the start, %s at the end", loadStart, loadAvg())
	if o.smoke {
		fmt.Fprintf(os.Stderr, "vmm-bench: smoke test passed in %s\n", time.Since(start).Round(time.Second))
		return nil
	}
	rep.Duration = time.Since(start)
	if err := rep.WriteMarkdown(os.Stdout); err != nil {
		return err
	}
	if o.jsonOut != "" {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runNested runs do in a fresh L1 holding vmm, QEMU with its libraries
// and firmware, the guest, and the tools; WithL1 retries once in a new L1
// if this one froze (the whole run: only ratios within one L1 count).
func runNested(ctx context.Context, o options, f *files, dir string, runner *bench.Runner, rep *bench.Report, do func() error) error {
	qemuBin, qfiles, err := bench.QEMUFiles(ctx, o.qemu)
	if err != nil {
		return err
	}
	l1Files := map[string]string{
		"/vmm":               f.vmm,
		"/bin/l1tool":        f.l1tool,
		"/bin/benchtool":     f.benchtool,
		"/guest/bzImage":     f.kernel,
		"/guest/initrd.cpio": f.initrd,
	}
	// vmm's helpers, those built beside it: a -vmm given without
	// vmm-net fails only the user-network figures, saying why.
	for l1, host := range nested.Helpers(f.vmm) {
		if _, err := os.Stat(host); err == nil {
			l1Files[l1] = host
		}
	}
	maps.Copy(l1Files, qfiles)
	runner.Layout = bench.Layout{VMM: "/vmm", QEMU: qemuBin, Kernel: "/guest/bzImage", Initrd: "/guest/initrd.cpio",
		Disk: "/tmp/disk.img", L1Tool: "/bin/l1tool", BenchTool: "/bin/benchtool", LoopbackDown: true}
	if f.fsKernel != "" {
		l1Files["/guest/fs-bzImage"] = f.fsKernel
		l1Files["/guest/initrd-fs.cpio"] = f.fsInitrd
		runner.Layout.FSKernel, runner.Layout.FSInitrd, runner.Layout.FSDir = "/guest/fs-bzImage", "/guest/initrd-fs.cpio", "/tmp/fsbench"
		vfsd, vfiles, err := qemuVirtioFSD(ctx, o, qemuBin, runner.Layout.FSDir)
		if err != nil {
			return err
		}
		runner.Layout.VirtioFSD = vfsd // at its host path in L1, like QEMU
		maps.Copy(l1Files, vfiles)
	}
	rep.QEMUShare = bench.QEMUShare(runner.Layout, o.params, virtiofsdVersion(ctx, runner.Layout.VirtioFSD))
	var console io.Writer
	if o.console {
		console = os.Stderr
	}
	cfg := nested.Config{
		Kernel:     f.guestKernel.BzImage,
		ModulesDir: f.guestKernel.ModulesDir,
		// tun for the TAPs both VMMs attach to.
		Modules:       []string{"kvm-amd", "tun"},
		Init:          f.l1tool,
		Files:         l1Files,
		MemoryMiB:     o.l1Memory,
		WorkDir:       dir,
		Log:           os.Stderr,
		ConsoleOut:    console,
		FreezeTimeout: o.freezeTmo,
	}
	rep.Env = fmt.Sprintf("L1: 2 vCPUs (TCG, EPYC+svm), %d MiB, kernel %s; guest kernel %s%s; %s (the host's binary, run in L1); host: %d CPUs",
		o.l1Memory, f.guestKernel.Version, f.kernelName(), f.fsEnv(), firstOutputLine(ctx, qemuBin, "--version"), numCPU())
	return nested.WithL1(ctx, cfg, func(l *nested.L1) error {
		rep.Samples = nil
		runner.Host = &bench.NestedHost{L1: l, L1Tool: "/bin/l1tool"}
		err := do()
		if out, _, merr := l.Exec(ctx, "/bin/benchtool", "meminfo"); merr == nil {
			fmt.Fprintf(os.Stderr, "vmm-bench: L1 memory after the run: %s\n", strings.TrimSpace(out))
		}
		return err
	})
}

// qemuVirtioFSD is the virtiofsd QEMU shares fsDir with, and its files
// for L1, as -qemu-share asks: "" for 9p, or for auto when none is
// installed or fsDir does not suit it (said on stderr, and the report
// names the share).
func qemuVirtioFSD(ctx context.Context, o options, qemuBin, fsDir string) (string, map[string]string, error) {
	if o.qemuShare == "9p" {
		return "", nil, nil
	}
	err := bench.CheckVirtioFSDShare(fsDir)
	var p string
	var files map[string]string
	if err == nil {
		p, files, err = bench.VirtioFSDFiles(ctx, qemuBin)
	}
	if err != nil && o.qemuShare == "auto" {
		fmt.Fprintf(os.Stderr, "vmm-bench: QEMU shares the directory over 9p: %v\n", err)
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("-qemu-share %s: %w", o.qemuShare, err)
	}
	return p, files, nil
}

// virtiofsdVersion is path's --version line, for the report ("" for no
// virtiofsd).
func virtiofsdVersion(ctx context.Context, path string) string {
	if path == "" {
		return ""
	}
	return firstOutputLine(ctx, path, "--version")
}

func mustLook(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return name
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

func firstOutputLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return name
	}
	l, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(l)
}

// loadAvg is the 1-minute load average of the host.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func numCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}
