// Package bench measures vmm against QEMU on the same virtio workloads:
// sequential and random block I/O, TCP both ways over a TAP and over
// user-mode networking (vmm's usernet against QEMU's slirp). Both VMMs
// boot the same guest kernel and initramfs, whose vmm-iotool does the
// measuring, and are driven through their serial consoles.
//
// Where the machine has no /dev/kvm (this project's usual case) both run
// inside one L1 guest under QEMU TCG with an emulated AMD-V (package
// nested); that makes absolute numbers meaningless, so the report is about
// ratios of medians over interleaved rounds in a single L1 boot, and
// about what each workload costs per unit of work (exits by reason,
// interrupts injected, VMM CPU time; see Cost), counts a slower host does
// not change.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/tools/iotool"
	"github.com/vmm-dev/vmm/tools/kvmstats"
	"github.com/vmm-dev/vmm/tools/nested"
)

// Console is a running VMM's serial console.
type Console interface {
	// Send types s on the console.
	Send(s string) error
	// Expect waits for re in the output since the previous match and
	// returns that output up to the end of the match.
	Expect(re *regexp.Regexp, timeout time.Duration) (string, error)
	// Wait returns the VMM's exit status.
	Wait(timeout time.Duration) (int, error)
	// Kill stops the VMM now (after a failure); Wait still reports it.
	Kill() error
}

// Host is where the VMMs and the host side of the network tests run: an
// L1 guest (NestedHost) or this machine (DirectHost).
type Host interface {
	// Start runs a VMM with its console on the returned Console. One at
	// a time.
	Start(ctx context.Context, args []string) (Console, error)
	// Exec runs a command to completion and returns its combined output
	// and exit status. It may run while a VMM runs.
	Exec(ctx context.Context, args ...string) (string, int, error)
	// Tails is recent console and kernel log output, for failures.
	Tails() string
}

// Layout is where the benchmark's files are on the Host.
type Layout struct {
	VMM       string // vmm binary
	QEMU      string // qemu-system-x86_64
	Kernel    string // guest bzImage
	Initrd    string // guest initramfs with vmm-iotool
	Disk      string // raw disk image, created by the benchmark
	L1Tool    string // l1init binary, for `io` and `signal`
	BenchTool string // tools/bench/cmd/benchtool binary, for mkdisk

	// The shared-directory workload's guest: a kernel with both
	// virtio-fs and 9p (Debian's generic one: the cloud kernel has no
	// 9p) and an initramfs with their modules and vmm-iotool. FSDir is
	// the directory both VMMs share, created by the benchmark.
	FSKernel string
	FSInitrd string
	FSDir    string
	// VirtioFSD, if set, is QEMU's virtiofsd: QEMU then shares FSDir
	// over virtio-fs as vmm does (vhost-user-fs-pci, the daemon
	// started through benchtool's daemon-exec), the same protocol and
	// guest driver, so the figures compare the VMMs and not two
	// protocols. Empty: QEMU's own 9p server (-virtfs), what QEMU
	// offers without a daemon.
	VirtioFSD string

	// LoopbackDown says the host's lo is down (L1's init leaves it
	// so): the runner brings it up with 127.0.0.1/8, where the
	// user-mode networks reach the host and their port forwards listen.
	LoopbackDown bool
}

// System is one VMM under test with its network.
type System struct {
	Name    string
	Args    []string
	Tap     string
	HostIP  string // on the TAP, /24
	GuestIP string // on the guest's eth0, /24
	// UserHostPort is the host port on 127.0.0.1 that the user-mode
	// network forwards to userGuestPort in the guest (eth1).
	UserHostPort string

	// FSArgs boots the shared-directory guest with Layout.FSDir shared
	// as fsTag, which FSMount (a guest shell command) mounts at fsMnt.
	FSArgs  []string
	FSMount string
	// FSLog, if set, is the log of the daemon FSArgs start (QEMU's
	// virtiofsd), whose end a failed shared-directory boot reports.
	FSLog string
}

// The shared directory as the guests see it.
const (
	fsTag = "bench"
	fsMnt = "/mnt/fs"
	// fsSeqFile is the file both guests read sequentially, made in
	// Layout.FSDir by the benchmark; fsFilesDir is where the guest
	// creates its small files, removed after each boot.
	fsSeqFile  = "seq.img"
	fsFilesDir = "files"
	// ninePMount are the 9p options QEMU's documentation and most
	// guides give: the 9P2000.L dialect and the largest message the
	// virtio transport takes (Linux caps msize at 512 KiB there); the
	// cache mode is the default (none). vmm's virtio-fs mounts with no
	// options, then raises its readahead as vmm-init does for a -share
	// (virtiofsReadAhead).
	ninePMount = "trans=virtio,version=9p2000.L,msize=512000"
	// virtiofsReadAhead gives the share at fsMnt the readahead vmm-init
	// gives its shares (guest/cmd/vmm-init's shareReadAheadKiB: the 1
	// MiB a READ of vmm's server carries, where Linux starts a FUSE
	// mount at 128 KiB). The backing device is named after the mount's
	// major:minor, the third field of /proc/self/mountinfo. The stat of
	// the mount's root comes first: it waits for the FUSE INIT reply,
	// which sets the readahead to the smaller of the kernel's and the
	// server's and would otherwise undo a value written before it.
	virtiofsReadAhead = `[ -d ` + fsMnt + `/. ] && ra=/sys/class/bdi/$(while read -r id parent majmin rest; do case "$rest" in "/ ` + fsMnt + ` "*) echo $majmin;; esac; done < /proc/self/mountinfo)/read_ahead_kb && echo 1024 > $ra && [ "$(cat $ra)" = 1024 ]`
)

// guestCmdline is the whole kernel command line for both VMMs (vmm starts
// from console=ttyS0 and appends; QEMU takes it as is). vmm.dhcp=off:
// the guest's init would otherwise ask for a lease on every card and wait
// its full 20 s for the TAP, which has no DHCP server; the runner
// configures both cards itself.
const guestCmdline = "console=ttyS0 quiet vmm.dhcp=off"

// The user-mode network as both VMMs set it up (QEMU's slirp addresses,
// which vmm's usernet copies): the guest's second card, eth1, gets
// userGuestIP (the address both would hand out by DHCP), and
// userGatewayIP stands for the host's 127.0.0.1. The host reaches the
// guest's userGuestPort through a port forward on 127.0.0.1
// (System.UserHostPort). userMAC tells the card from the TAP's in the
// guest.
const (
	userGuestIP   = "10.0.2.15"
	userGatewayIP = "10.0.2.2"
	userGuestPort = "5300"
	userMAC       = "52:54:00:be:9c:01"
	userIf        = "eth1"
)

// tapIf is the guest's TAP card (both VMMs give it first).
const tapIf = "eth0"

// userHostfwd is the forward rule of a user-mode network, in the
// spelling vmm's -nic user and QEMU's -netdev user share.
func userHostfwd(hostPort string) string {
	return "hostfwd=tcp:127.0.0.1:" + hostPort + "-:" + userGuestPort
}

// Systems returns vmm and QEMU set up alike: same kernel, initramfs,
// command line, memory, one vCPU, the same image file as the only disk and
// a TAP each (separate link-local subnets, so neither sees stale neighbour
// entries of the other) as eth0, and a user-mode network each as eth1
// (vmm's usernet, QEMU's slirp: both 10.0.2.0/24, a subnet apart from the
// TAPs', so the guest routes each workload to its card) with a port
// forward on its own host port. QEMU uses its userspace virtio backends
// (vhost=off), KVM, a plain PC machine and no option ROM for the NICs.
func Systems(l Layout, p Params) []System {
	mem := strconv.Itoa(p.GuestMiB)
	vmm := System{
		Name: SysVMM, Tap: "tapv", HostIP: "169.254.100.1", GuestIP: "169.254.100.2", UserHostPort: "5150",
		Args: []string{l.VMM, "-kernel", l.Kernel, "-initrd", l.Initrd, "-append", strings.TrimPrefix(guestCmdline, "console=ttyS0 "),
			"-m", mem, "-smp", "1", "-disk", l.Disk, "-tap", "tapv",
			"-nic", "user," + userHostfwd("5150") + ",mac=" + userMAC},
	}
	qemu := System{
		Name: SysQEMU, Tap: "tapq", HostIP: "169.254.101.1", GuestIP: "169.254.101.2", UserHostPort: "5151",
		Args: []string{l.QEMU, "-accel", "kvm", "-M", "pc", "-cpu", "host", "-m", mem, "-smp", "1",
			"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-serial", "stdio",
			// kvmvapic patches TPR accesses of guests without x2APIC
			// (old Windows); this Linux guest uses x2APIC, so turning
			// it off changes no figure. With it on, nested under TCG,
			// vmm-init's boot-timer outb dies with a general
			// protection fault although ioperm granted the port (seen
			// every time; plain TCG and vmm are fine), most likely
			// because the register state QEMU writes back for it
			// leaves L2's task register without a usable I/O bitmap.
			"-global", "kvm-apic.vapic=false",
			// A guest reset ends QEMU, as it ends vmm, instead of
			// rebooting the guest: a guest the emulator killed is
			// then a failed attempt at once, not a command that
			// times out minutes later in a freshly booted guest.
			"-no-reboot",
			"-kernel", l.Kernel, "-initrd", l.Initrd, "-append", guestCmdline,
			"-drive", "file=" + qemuOptValue(l.Disk) + ",if=none,id=d0,format=raw",
			"-device", "virtio-blk-pci,drive=d0",
			"-netdev", "tap,id=n0,ifname=tapq,script=no,downscript=no,vhost=off",
			"-device", "virtio-net-pci,netdev=n0,romfile=",
			// slirp; its default network is 10.0.2.0/24 with the
			// host's loopback at 10.0.2.2, as vmm's.
			"-netdev", "user,id=n1," + userHostfwd("5151"),
			"-device", "virtio-net-pci,netdev=n1,romfile=,mac=" + userMAC},
	}
	vmm.Args = append(vmm.Args, p.VMMFlags...)
	if p.fs() {
		vmm.FSArgs = []string{l.VMM, "-kernel", l.FSKernel, "-initrd", l.FSInitrd, "-append", strings.TrimPrefix(guestCmdline, "console=ttyS0 "),
			"-m", mem, "-smp", "1", "-fs", l.FSDir + ",tag=" + fsTag}
		vmm.FSArgs = append(vmm.FSArgs, p.VMMFlags...)
		vmm.FSMount = "mkdir -p " + fsMnt + " && mount -t virtiofs " + fsTag + " " + fsMnt + " && " + virtiofsReadAhead
		machine := "pc"
		if l.VirtioFSD != "" {
			machine += ",memory-backend=mem" // below
		}
		qemuFS := []string{l.QEMU, "-accel", "kvm", "-M", machine, "-cpu", "host", "-m", mem, "-smp", "1",
			"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-serial", "stdio",
			"-global", "kvm-apic.vapic=false", "-no-reboot",
			"-kernel", l.FSKernel, "-initrd", l.FSInitrd, "-append", guestCmdline}
		if l.VirtioFSD != "" {
			// vhost-user needs the guest's RAM in shared memory the
			// daemon maps; the device's options are those of
			// QEMU's virtio-fs documentation (queue-size=1024,
			// where vmm's request queue takes 512). The daemon
			// keeps its defaults (cache=auto: the guest's page
			// cache, as with vmm's server) but for the sandbox:
			// chroot, since pivot_root refuses L1's initramfs
			// root. FSDir must hold no comma (the daemon's -o;
			// CheckVirtioFSDShare).
			sock, log := virtiofsdPaths(l.FSDir)
			qemuFS = append(qemuFS, "-object", "memory-backend-memfd,id=mem,size="+mem+"M,share=on",
				"-chardev", "socket,id=vfs,path="+qemuOptValue(sock),
				"-device", "vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag="+fsTag)
			qemu.FSArgs = append([]string{l.BenchTool, "daemon-exec", sock, log,
				l.VirtioFSD, "--socket-path=" + sock, "-o", "source=" + l.FSDir, "-o", "sandbox=chroot", "--"}, qemuFS...)
			qemu.FSMount = vmm.FSMount
			qemu.FSLog = log
		} else {
			// QEMU's own 9p server (-virtfs is virtio-9p-pci with
			// the local backend); security_model=none keeps the
			// host's owners and modes as they are, as vmm's share
			// does.
			qemu.FSArgs = append(qemuFS, "-virtfs", "local,path="+qemuOptValue(l.FSDir)+",mount_tag="+fsTag+",security_model=none")
			qemu.FSMount = "mkdir -p " + fsMnt + " && mount -t 9p -o " + ninePMount + " " + fsTag + " " + fsMnt
		}
	}
	return []System{vmm, qemu}
}

// ShareNine is Report.QEMUShare for QEMU's own 9p server.
const ShareNine = "QEMU's 9p (-virtfs, no cache)"

// QEMUShare is Report.QEMUShare for a run with Layout l and Params p;
// version is the virtiofsd's --version line, if it has one.
func QEMUShare(l Layout, p Params, version string) string {
	switch {
	case !p.fs():
		return ""
	case l.VirtioFSD != "":
		s := "virtio-fs through " + l.VirtioFSD
		if version != "" {
			s += " (" + version + ")"
		}
		return s + " on vhost-user-fs-pci"
	default:
		return ShareNine
	}
}

// virtiofsdPaths are QEMU's virtiofsd socket and log beside the shared
// directory fsDir.
func virtiofsdPaths(fsDir string) (sock, log string) {
	return fsDir + "-virtiofsd.sock", fsDir + "-virtiofsd.log"
}

// vmmComm is the command name (commName) of the VMM that args runs:
// args[0]'s, or for benchtool's daemon-exec the VMM's after its "--".
func vmmComm(args []string) string {
	if len(args) > 2 && commName(args[0]) == "benchtool" && args[1] == "daemon-exec" {
		if i := slices.Index(args, "--"); i >= 0 && i+1 < len(args) {
			return commName(args[i+1])
		}
	}
	return commName(args[0])
}

// qemuOptValue escapes a value for QEMU's "key=value,..." syntax.
func qemuOptValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Deadlines. Nested guests run under TCG, so they are generous; the L1
// watchdog catches a frozen L1 much sooner.
const (
	bootTimeout   = 3 * time.Minute
	cmdTimeout    = time.Minute
	figureTimeout = 3 * time.Minute
	exitTimeout   = 2 * time.Minute
	setupTimeout  = 2 * time.Minute
)

// readyRE is printed by the guest's init (guest/cmd/vmm-init) once its
// devices' drivers are loaded; the shell follows.
var readyRE = regexp.MustCompile(`vmm-guest: ready`)

// Runner runs the benchmark on a Host.
type Runner struct {
	Host   Host
	Layout Layout
	Params Params
	Log    io.Writer // progress; nil: discarded
	// Only, if set, restricts the run to the systems named (for
	// debugging one VMM; ratios then read n/a).
	Only []string

	port int // next TCP port, so a stuck listener never collides
	// counted holds the sets of processes sample has logged, per system.
	counted map[string]bool
	// cmdWait is how long a guest command, its prompt or a short host
	// command may take; 0 means cmdTimeout. Tests shorten it, so that a
	// harness that waits for the wrong thing fails in seconds, not after
	// a minute per attempt.
	cmdWait time.Duration
}

// cmdDeadline is how long a guest command, its prompt or a short host
// command may take (cmdWait).
func (r *Runner) cmdDeadline() time.Duration {
	if r.cmdWait > 0 {
		return r.cmdWait
	}
	return cmdTimeout
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, "bench: "+format+"\n", args...)
	}
}

// maxAttempts bounds the boots of one system in one round: a guest the
// emulator kills (nested SVM under TCG kills a guest now and then, vmm's
// and QEMU's alike) costs an attempt, not the run.
const maxAttempts = 3

// Run prepares the disk and TAPs, then runs Params.Rounds rounds; each
// boots every system once and measures all figures and their costs in
// it. The order of the systems alternates between rounds so that a drift
// in the machine's speed does not favour either.
//
// A failed boot (the guest died, a command failed or timed out) is
// recorded in rep.Failures and retried in a fresh boot, up to
// maxAttempts per system and round; a round in which a system fails
// every attempt is left out whole (rep.Abandoned), since its ratios would
// pair unlike rounds, and the run goes on. Run fails when no round
// completes, and at once when L1 itself froze or died (nested.WithL1
// judges that) or ctx ends.
func (r *Runner) Run(ctx context.Context, rep *Report) error {
	if err := r.Params.Check(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	rep.Rounds = r.Params.Rounds
	rep.Params = r.Params
	rep.Samples, rep.Costs, rep.Failures, rep.Abandoned = nil, nil, nil, nil
	if err := r.setup(ctx, false); err != nil {
		return err
	}
	defer r.teardown(ctx)
	systems := r.systems()
	var firstErr error
	completed := 0
	for round := 0; round < r.Params.Rounds; round++ {
		order := systems
		if round%2 == 1 {
			order = slices.Clone(systems)
			slices.Reverse(order)
		}
		type result struct {
			vals  map[string]float64
			costs map[string]*Cost
		}
		results := map[string]result{}
		abandoned := false
		for _, s := range order {
			vals, costs, err := r.attempts(ctx, rep, round, s)
			if err != nil {
				if fatal(ctx, err) {
					return err
				}
				if firstErr == nil {
					firstErr = err
				}
				abandoned = true
				break
			}
			results[s.Name] = result{vals, costs}
		}
		if abandoned {
			rep.Abandoned = append(rep.Abandoned, round+1)
			r.logf("round %d/%d left out: a system failed %d attempts", round+1, r.Params.Rounds, maxAttempts)
			continue
		}
		completed++
		for _, s := range order {
			res := results[s.Name]
			for _, f := range Figures {
				if v, ok := res.vals[f.Key]; ok {
					rep.Add(s.Name, f.Key, v)
				}
			}
			for _, w := range Workloads {
				if c, ok := res.costs[w.Key]; ok {
					rep.AddCost(s.Name, w.Key, c)
				}
			}
		}
	}
	if completed == 0 {
		return fmt.Errorf("bench: no round completed (%d failed attempts), the first failure: %w", len(rep.Failures), firstErr)
	}
	return nil
}

// attempts boots s up to maxAttempts times until one boot measures
// everything, and returns its figures and costs.
func (r *Runner) attempts(ctx context.Context, rep *Report, round int, s System) (map[string]float64, map[string]*Cost, error) {
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		vals, costs, err := r.measureSystem(ctx, s)
		if err == nil {
			var parts []string
			for _, f := range Figures {
				if v, ok := vals[f.Key]; ok {
					parts = append(parts, fmt.Sprintf("%s=%s", f.Key, formatValue(v)))
				}
			}
			for _, w := range Workloads {
				if c, ok := costs[w.Key]; ok && c != nil {
					parts = append(parts, fmt.Sprintf("%s:exits/%s=%s,cpu_ms/%s=%s", w.Key, w.Unit, FormatCost(perUnit(c, metricByKey(metricExits))), w.Unit, FormatCost(perUnit(c, metricByKey(metricCPU)))))
				}
			}
			r.logf("round %d/%d %s (%s): %s", round+1, r.Params.Rounds, s.Name, time.Since(t0).Round(100*time.Millisecond), strings.Join(parts, " "))
			return vals, costs, nil
		}
		if fatal(ctx, err) {
			return nil, nil, fmt.Errorf("bench: round %d, %s: %w", round+1, s.Name, err)
		}
		rep.Failures = append(rep.Failures, Failure{Round: round + 1, System: s.Name, Attempt: attempt, Error: strings.TrimSpace(firstLine(err))})
		if attempt >= maxAttempts {
			r.logf("round %d/%d %s: attempt %d failed, the last: %v", round+1, r.Params.Rounds, s.Name, attempt, err)
			return nil, nil, fmt.Errorf("bench: round %d, %s: %w", round+1, s.Name, err)
		}
		r.logf("RETRY round %d/%d %s: attempt %d failed (%s); booting it again: %v", round+1, r.Params.Rounds, s.Name, attempt, time.Since(t0).Round(100*time.Millisecond), err)
	}
}

// fatal says err ends the run rather than one attempt: L1 froze, died or
// was closed (a fresh boot in it cannot work; nested.WithL1 decides about
// a fresh L1), or the run was cancelled.
func fatal(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, nested.ErrFrozen) || errors.Is(err, nested.ErrL1Exited) || errors.Is(err, nested.ErrClosed)
}

// measureSystem boots s's guest, and its shared-directory guest when
// that workload runs, and measures every figure and its cost once.
func (r *Runner) measureSystem(ctx context.Context, s System) (map[string]float64, map[string]*Cost, error) {
	costs := map[string]*Cost{}
	vals, err := r.runGuest(ctx, s, costs)
	if err != nil {
		return nil, nil, err
	}
	if r.Params.fs() {
		fsVals, err := r.fsGuest(ctx, s, costs)
		if err != nil && s.FSLog != "" && !fatal(ctx, err) {
			// The daemon's view: QEMU's own says only that the
			// connection broke.
			log, lerr := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "tail", s.FSLog)
			if lerr != nil {
				log = lerr.Error()
			}
			err = fmt.Errorf("%w\n--- %s (tail) ---\n%s", err, s.FSLog, strings.TrimSpace(log))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("shared directory: %w", err)
		}
		maps.Copy(vals, fsVals)
	}
	return vals, costs, nil
}

func (r *Runner) systems() []System {
	all := Systems(r.Layout, r.Params)
	if len(r.Only) == 0 {
		return all
	}
	var out []System
	for _, s := range all {
		if slices.ContainsFunc(r.Only, func(n string) bool { return strings.EqualFold(n, s.Name) }) {
			out = append(out, s)
		}
	}
	return out
}

// setup creates the disk image (filled, so that neither VMM reads holes)
// and one persistent TAP per system with the host's address on it. A
// smoke test only warns about TAPs: both VMMs create a missing one.
func (r *Runner) setup(ctx context.Context, smoke bool) error {
	if len(r.systems()) == 0 {
		return fmt.Errorf("bench: no systems selected from %v", r.Only)
	}
	out, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "mkdisk", r.Layout.Disk, strconv.FormatInt(r.Params.DiskBytes, 10))
	if err != nil {
		return fmt.Errorf("bench: create disk image: %w", err)
	}
	r.logf("%s", strings.TrimSpace(out))
	if r.Params.fs() {
		// Filled like the disk, so neither server reads holes.
		seq := path.Join(r.Layout.FSDir, fsSeqFile)
		if _, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "mkdisk", seq, strconv.FormatInt(r.Params.FSSeqBytes, 10)); err != nil {
			return fmt.Errorf("bench: create %s: %w", seq, err)
		}
	}
	for _, s := range r.systems() {
		if _, err := r.exec(ctx, setupTimeout, r.Layout.L1Tool, "io", "netup", "-dev", s.Tap, "-addr", s.HostIP+"/24"); err != nil {
			if !smoke {
				return fmt.Errorf("bench: TAP %s for %s: %w", s.Tap, s.Name, err)
			}
			r.logf("smoke: no TAP %s (%v); the VMM will create it", s.Tap, firstLine(err))
		}
	}
	if r.Layout.LoopbackDown {
		if _, err := r.exec(ctx, setupTimeout, r.Layout.L1Tool, "io", "netup", "-dev", "lo", "-addr", "127.0.0.1/8"); err != nil {
			return fmt.Errorf("bench: loopback for the user-mode networks: %w", err)
		}
	}
	return nil
}

// teardown removes the TAPs, which outlive the run on a direct host (an
// L1 is thrown away anyway), and the disk image.
func (r *Runner) teardown(ctx context.Context) {
	for _, s := range r.systems() {
		if _, err := r.exec(ctx, setupTimeout, r.Layout.L1Tool, "io", "netdown", "-dev", s.Tap); err != nil {
			r.logf("warning: removing TAP %s: %v", s.Tap, firstLine(err))
		}
	}
	if _, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "rm", r.Layout.Disk); err != nil {
		r.logf("warning: removing %s: %v", r.Layout.Disk, firstLine(err))
	}
	if r.Params.fs() {
		if _, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "rm", r.Layout.FSDir); err != nil {
			r.logf("warning: removing %s: %v", r.Layout.FSDir, firstLine(err))
		}
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// Smoke boots each system once and checks that the guest has its disk
// and network cards, without vmm-iotool: the quick way to see that both
// VMMs and the files they need are in place.
func (r *Runner) Smoke(ctx context.Context) error {
	if err := r.setup(ctx, true); err != nil {
		return err
	}
	defer r.teardown(ctx)
	for _, s := range r.systems() {
		t0 := time.Now()
		if err := r.smokeGuest(ctx, s); err != nil {
			return fmt.Errorf("bench: smoke %s: %w", s.Name, err)
		}
		r.logf("smoke %s: booted, /dev/vda, eth0 and eth1 present, powered off (%s)", s.Name, time.Since(t0).Round(100*time.Millisecond))
		if r.Params.fs() {
			t0 = time.Now()
			if err := r.smokeFS(ctx, s); err != nil {
				return fmt.Errorf("bench: smoke %s shared directory: %w", s.Name, err)
			}
			r.logf("smoke %s: shared directory mounted and listed, powered off (%s)", s.Name, time.Since(t0).Round(100*time.Millisecond))
		}
	}
	return nil
}

// smokeFS boots s's shared-directory guest, mounts the share and looks
// for the sequential file in it.
func (r *Runner) smokeFS(ctx context.Context, s System) (err error) {
	g, err := r.boot(ctx, s, s.FSArgs)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = r.withTails(errors.Join(err, stop(g.con, s.Name)))
		}
	}()
	if _, err := g.run(s.FSMount+" && ls -l "+path.Join(fsMnt, fsSeqFile), r.cmdDeadline()); err != nil {
		return err
	}
	return g.poweroff(r)
}

func (r *Runner) smokeGuest(ctx context.Context, s System) (err error) {
	t0 := time.Now()
	con, err := r.Host.Start(ctx, s.Args)
	if err != nil {
		return err
	}
	g := &guest{con: con, sys: s, wait: r.cmdDeadline()}
	defer func() {
		if err != nil {
			err = r.withTails(errors.Join(err, stop(con, s.Name)))
		}
	}()
	if _, err := con.Expect(readyRE, bootTimeout); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	r.logf("smoke %s: ready after %s", s.Name, time.Since(t0).Round(100*time.Millisecond))
	if _, err := g.run("ls /dev/vda", r.cmdDeadline()); err != nil {
		return err
	}
	if _, err := g.run("ip link set dev eth0 up", r.cmdDeadline()); err != nil {
		return err
	}
	if err := r.userNetUp(g); err != nil {
		return err
	}
	if err := con.Send("poweroff\n"); err != nil {
		return err
	}
	code, err := con.Wait(exitTimeout)
	if err != nil {
		return fmt.Errorf("poweroff: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d after poweroff", s.Name, code)
	}
	return nil
}

// exec runs a command on the host and fails unless it exits 0.
func (r *Runner) exec(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, code, err := r.Host.Exec(ctx, args...)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("%q exited with status %d: %s", args, code, strings.TrimSpace(tail(out, 2000)))
	}
	return out, nil
}

// guest is one booted guest's console.
type guest struct {
	con  Console
	sys  System
	wait time.Duration // Runner.cmdDeadline
}

var rcRE = regexp.MustCompile(`bench-rc-(\d+)`)

// promptRE is the guest shell's prompt. The next command is typed only
// once the prompt that follows the last one's status line has appeared:
// typed sooner, its echo and the prompt interleave on the console
// ("echo bench-rc-$", then "$ ", then "?"), typedRE never matches, and
// the attempt fails as if the guest had hung. QEMU's guest, whose
// console lags more, lost 6 of 9 attempts that way in a QEMU-only run
// (2026-12-05), a failure the earlier runs took for its guest hanging.
var promptRE = regexp.MustCompile(`\$ `)

// prompt waits for the shell's next prompt (promptRE).
func (g *guest) prompt() error {
	if _, err := g.con.Expect(promptRE, g.wait); err != nil {
		return fmt.Errorf("shell prompt: %w", err)
	}
	return nil
}

// run types a shell command and waits for it to finish, returning its
// output; a nonzero status is an error. The status comes from an echo
// appended to the line: the echoed command line shows "$?", not digits.
func (g *guest) run(cmd string, timeout time.Duration) (string, error) {
	if err := g.con.Send(cmd + "; echo bench-rc-$?\n"); err != nil {
		return "", err
	}
	out, err := g.con.Expect(rcRE, timeout)
	if err != nil {
		return out, err
	}
	if err := g.prompt(); err != nil {
		return out, err
	}
	m := rcRE.FindAllStringSubmatch(out, -1)
	if rc := m[len(m)-1][1]; rc != "0" {
		return out, fmt.Errorf("guest command %q: status %s: %s", cmd, rc, strings.TrimSpace(tail(out, 2000)))
	}
	return out, nil
}

// outFile holds a measured command's output in the guest, so that the
// console carries only the status line while the command runs.
const outFile = "/tmp/bench.out"

// typedRE is the end of a measured command as the guest's terminal
// echoes it (the status echo, not yet expanded).
var typedRE = regexp.MustCompile(`bench-rc-\$\?`)

// phase is a measured command under way.
type phase struct {
	cmd    string
	before *kvmstats.Sample // nil: the VM could not be sampled
	// stderrOnConsole: the command's stderr goes to the console, not
	// to outFile (see startListener).
	stderrOnConsole bool
}

// start types cmd without Enter, waits for the guest's echo of it,
// samples the VM and then presses Enter. The serial exits and interrupts
// of the typed line so fall before the sample, and the command's output
// goes to outFile: between the two samples the console carries only
// Enter and the status line, a few dozen exits. A sample that fails is
// logged and the phase goes on without its cost.
func (r *Runner) start(ctx context.Context, g *guest, cmd string) (*phase, error) {
	return r.startPhase(ctx, g, &phase{cmd: cmd})
}

// startListener is start for a guest's vmm-iotool tcp-recv whose sender
// must not connect before it listens, and waits for its "listening on"
// line: its stderr stays on the console for that (one line more for the
// console to carry during the phase, a few dozen exits against the
// thousands of a transfer).
func (r *Runner) startListener(ctx context.Context, g *guest, cmd string) (*phase, error) {
	ph, err := r.startPhase(ctx, g, &phase{cmd: cmd, stderrOnConsole: true})
	if err != nil {
		return nil, err
	}
	if _, err := g.con.Expect(listeningRE, r.cmdDeadline()); err != nil {
		return nil, fmt.Errorf("waiting for %q to listen: %w", cmd, err)
	}
	return ph, nil
}

// listeningRE is vmm-iotool tcp-recv's line on stderr once it listens;
// the echo of the typed command does not contain it.
var listeningRE = regexp.MustCompile(`tcp-recv: listening on`)

func (r *Runner) startPhase(ctx context.Context, g *guest, ph *phase) (*phase, error) {
	redirect := " >" + outFile + " 2>&1"
	if ph.stderrOnConsole {
		redirect = " >" + outFile
	}
	if err := g.con.Send(ph.cmd + redirect + "; echo bench-rc-$?"); err != nil {
		return nil, err
	}
	if _, err := g.con.Expect(typedRE, r.cmdDeadline()); err != nil {
		return nil, fmt.Errorf("echo of %q: %w", ph.cmd, err)
	}
	s, err := r.sample(ctx, g.sys)
	switch {
	case err != nil && fatal(ctx, err):
		return nil, err
	case err != nil:
		r.logf("warning: %s: no cost for %q: %v", g.sys.Name, ph.cmd, firstLine(err))
	default:
		ph.before = &s
	}
	if err := g.con.Send("\n"); err != nil {
		return nil, err
	}
	return ph, nil
}

// finish waits for ph's command to end, samples the VM again and returns
// the command's output and its cost over units of work (nil without
// samples). A nonzero status is an error.
func (r *Runner) finish(ctx context.Context, g *guest, ph *phase, units float64, timeout time.Duration) (string, *Cost, error) {
	out, err := g.con.Expect(rcRE, timeout)
	if err != nil {
		return out, nil, err
	}
	m := rcRE.FindAllStringSubmatch(out, -1)
	rc := m[len(m)-1][1]
	var cost *Cost
	if ph.before != nil {
		after, err := r.sample(ctx, g.sys)
		if err == nil {
			var d kvmstats.Delta
			if d, err = kvmstats.Diff(*ph.before, after); err == nil {
				cost = &Cost{Units: units, Counters: d.Counters, CPU: d.CPU, Threads: d.Threads}
				if line := cost.threadLine(); line != "" {
					r.logf("%s: %q: %s", g.sys.Name, ph.cmd, line)
				}
			}
		}
		switch {
		case err != nil && fatal(ctx, err):
			return "", nil, err
		case err != nil:
			r.logf("warning: %s: no cost for %q: %v", g.sys.Name, ph.cmd, firstLine(err))
		}
	}
	// The prompt after the sample, so that its output and the
	// console's lag stay outside the measured window.
	if err := g.prompt(); err != nil {
		return "", nil, err
	}
	res, err := g.run("cat "+outFile, r.cmdDeadline())
	if err != nil {
		return "", nil, fmt.Errorf("output of %q: %w", ph.cmd, err)
	}
	if rc != "0" {
		msg := strings.TrimSpace(tail(catOutput(res), 2000))
		if ph.stderrOnConsole {
			msg = strings.TrimSpace(msg + " " + tail(strings.TrimSuffix(strings.TrimSpace(out), m[len(m)-1][0]), 2000))
		}
		return res, nil, fmt.Errorf("guest command %q: status %s: %s", ph.cmd, rc, msg)
	}
	return res, cost, nil
}

// catOutput is what a command run by guest.run printed: its console
// output without the echo of the typed line and the status line.
func catOutput(s string) string {
	if loc := typedRE.FindAllStringIndex(s, -1); len(loc) > 0 {
		s = s[loc[len(loc)-1][1]:]
	}
	if loc := rcRE.FindAllStringIndex(s, -1); len(loc) > 0 {
		s = s[:loc[len(loc)-1][0]]
	}
	return s
}

// measured runs cmd in the guest between two samples of its VM.
func (r *Runner) measured(ctx context.Context, g *guest, cmd string, units float64, timeout time.Duration) (string, *Cost, error) {
	ph, err := r.start(ctx, g, cmd)
	if err != nil {
		return "", nil, err
	}
	return r.finish(ctx, g, ph, units, timeout)
}

// sample reads s's VM counters and CPU time on the host, through
// benchtool (in L1, where the VMM runs). One VMM runs at a time, so its
// command name finds it.
func (r *Runner) sample(ctx context.Context, s System) (kvmstats.Sample, error) {
	out, err := r.exec(ctx, r.cmdDeadline(), r.Layout.BenchTool, "vmstat", commName(s.Args[0]))
	if err != nil {
		return kvmstats.Sample{}, fmt.Errorf("sampling %s's VM: %w", s.Name, err)
	}
	var smp kvmstats.Sample
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &smp); err != nil {
		return kvmstats.Sample{}, fmt.Errorf("sampling %s's VM: %q: %w", s.Name, tail(out, 200), err)
	}
	// Whose CPU time a system's cost holds, said once per set of
	// processes (vmm-net and virtiofsd show up here).
	if key := s.Name + ": " + strings.Join(smp.Procs, ", "); len(smp.Procs) > 0 && !r.counted[key] {
		if r.counted == nil {
			r.counted = map[string]bool{}
		}
		r.counted[key] = true
		r.logf("%s's CPU time counts the processes %s", s.Name, strings.Join(smp.Procs, ", "))
	}
	return smp, nil
}

// mibUnits is n bytes in MiB, a cost's unit.
func mibUnits(n int64) float64 { return float64(n) / (1 << 20) }

// runGuest boots s, measures every figure and its cost (into costs)
// once and powers the guest off.
func (r *Runner) runGuest(ctx context.Context, s System, costs map[string]*Cost) (vals map[string]float64, err error) {
	g, err := r.boot(ctx, s, s.Args)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		err = r.withTails(errors.Join(err, stop(g.con, s.Name)))
	}()
	if _, err := g.run("ip addr add "+s.GuestIP+"/24 dev eth0 && ip link set dev eth0 up", r.cmdDeadline()); err != nil {
		return nil, fmt.Errorf("network setup: %w", err)
	}
	// Also resolves the neighbours both ways before anything is timed.
	if _, err := g.run("vmm-iotool ping -addr "+s.HostIP+" -count 3", r.cmdDeadline()); err != nil {
		return nil, fmt.Errorf("ping %s: %w", s.HostIP, err)
	}
	if err := r.userNetUp(g); err != nil {
		return nil, err
	}

	vals = map[string]float64{}
	p := r.Params
	seq := strconv.FormatInt(p.SeqBytes, 10)
	blk := []struct {
		key, cmd, field string
	}{
		// Write first: the read then covers data this guest wrote.
		{"blk-seq-write", "vmm-iotool blk-seq-write -dev /dev/vda -bytes " + seq, "mibps"},
		{"blk-seq-read", "vmm-iotool blk-seq-read -dev /dev/vda -bytes " + seq, "mibps"},
		{"blk-rand-read", "vmm-iotool blk-rand-read -dev /dev/vda -bs 4096 -seconds " + strconv.Itoa(p.RandSeconds), "iops"},
	}
	for _, b := range blk {
		ph, err := r.start(ctx, g, b.cmd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.key, err)
		}
		units := mibUnits(p.SeqBytes)
		if b.key == "blk-rand-read" {
			units = 0 // the requests made, known from the output
		}
		out, cost, err := r.finish(ctx, g, ph, units, figureTimeout)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.key, err)
		}
		l, err := iotool.ParseLast(out, b.key)
		if err != nil {
			return nil, err
		}
		if b.key != "blk-rand-read" {
			if err := checkBytes(l, p.SeqBytes); err != nil {
				return nil, err
			}
		} else if cost != nil {
			ops, err := l.Int("ops")
			if err != nil {
				return nil, err
			}
			cost.Units = float64(ops)
		}
		if vals[b.key], err = l.Float(b.field); err != nil {
			return nil, err
		}
		costs[b.key] = cost
	}
	if vals["tcp-guest-to-host"], costs["tcp-guest-to-host"], err = r.tcpGuestToHost(ctx, g, tapIf, s.HostIP); err != nil {
		return nil, fmt.Errorf("tcp guest to host: %w", err)
	}
	port := r.nextPort()
	if vals["tcp-host-to-guest"], costs["tcp-host-to-guest"], err = r.tcpHostToGuest(ctx, g, tapIf, port, s.GuestIP+":"+port, false); err != nil {
		return nil, fmt.Errorf("tcp host to guest: %w", err)
	}
	// The user-mode network: the gateway is the host's loopback, where
	// the host's receiver listens too, and the host reaches the guest
	// through the port forward.
	if vals["tcp-user-guest-to-host"], costs["tcp-user-guest-to-host"], err = r.tcpGuestToHost(ctx, g, userIf, userGatewayIP); err != nil {
		return nil, fmt.Errorf("user-mode network: tcp guest to host: %w", err)
	}
	if vals["tcp-user-host-to-guest"], costs["tcp-user-host-to-guest"], err = r.tcpHostToGuest(ctx, g, userIf, userGuestPort, "127.0.0.1:"+s.UserHostPort, true); err != nil {
		return nil, fmt.Errorf("user-mode network: tcp host to guest: %w", err)
	}
	if err := g.poweroff(r); err != nil {
		return nil, err
	}
	return vals, nil
}

// userNetUp gives the guest's user-mode card its address by hand, as
// the runner does for the TAP's (the init's DHCP is off), after making
// sure userIf is that card and not the TAP's: the cards' order is the
// VMM's, vmm's by flag order, QEMU's by PCI slot.
func (r *Runner) userNetUp(g *guest) error {
	out, err := g.run("cat /sys/class/net/"+userIf+"/address && ip addr add "+userGuestIP+"/24 dev "+userIf+" && ip link set dev "+userIf+" up", r.cmdDeadline())
	if err != nil {
		return fmt.Errorf("user-mode network setup: %w", err)
	}
	if !strings.Contains(catOutput(out), userMAC) {
		return fmt.Errorf("user-mode network setup: %s is not the user-mode card (MAC %s): %q", userIf, userMAC, strings.TrimSpace(catOutput(out)))
	}
	return nil
}

// boot starts args (one of s's command lines), waits for the guest's
// shell and quietens its console.
func (r *Runner) boot(ctx context.Context, s System, args []string) (*guest, error) {
	con, err := r.Host.Start(ctx, args)
	if err != nil {
		return nil, err
	}
	g := &guest{con: con, sys: s, wait: r.cmdDeadline()}
	fail := func(err error) (*guest, error) { return nil, r.withTails(errors.Join(err, stop(con, s.Name))) }
	if _, err := con.Expect(readyRE, bootTimeout); err != nil {
		return fail(fmt.Errorf("boot: %w", err))
	}
	// The arithmetic proves a shell is reading; the typed line would
	// not contain 42.
	if err := con.Send("echo bench-$((6*7))\n"); err != nil {
		return fail(err)
	}
	if _, err := con.Expect(regexp.MustCompile(`bench-42`), r.cmdDeadline()); err != nil {
		return fail(fmt.Errorf("shell: %w", err))
	}
	if err := g.prompt(); err != nil {
		return fail(err)
	}
	// Kernel messages on the console (at quiet's level 4, errors such
	// as those nesting can cause still appear) could land inside a
	// result line.
	if _, err := g.run("echo 1 > /proc/sys/kernel/printk", r.cmdDeadline()); err != nil {
		return fail(fmt.Errorf("console log level: %w", err))
	}
	return g, nil
}

// poweroff ends the guest and waits for its VMM; a VMM that fails on the
// way out is logged, not an error (its figures were taken).
func (g *guest) poweroff(r *Runner) error {
	if err := g.con.Send("poweroff\n"); err != nil {
		return err
	}
	code, err := g.con.Wait(exitTimeout)
	if err != nil {
		return fmt.Errorf("poweroff: %w", err)
	}
	if code != 0 {
		r.logf("warning: %s exited with status %d after the guest powered off", g.sys.Name, code)
	}
	return nil
}

// fsGuest boots s's shared-directory guest, mounts Layout.FSDir
// (System.FSMount) and times the file workload and the two
// sequential reads in it; the small files are removed on the host
// afterwards.
func (r *Runner) fsGuest(ctx context.Context, s System, costs map[string]*Cost) (vals map[string]float64, err error) {
	g, err := r.boot(ctx, s, s.FSArgs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = r.withTails(errors.Join(err, stop(g.con, s.Name)))
		}
	}()
	if _, err := g.run(s.FSMount, r.cmdDeadline()); err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	// A failed attempt before this one may have left files behind.
	files := path.Join(r.Layout.FSDir, fsFilesDir)
	if _, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "rm", files); err != nil {
		return nil, fmt.Errorf("remove %s: %w", files, err)
	}
	p := r.Params
	// Every file is several round trips to the file server, each one
	// costing 15-80 ms nested under TCG: allow a second a file.
	timeout := figureTimeout + time.Duration(p.FSFiles)*time.Second
	out, cost, err := r.measured(ctx, g, fmt.Sprintf("vmm-iotool fs-files -dir %s -count %d -size %d -drop-caches -timeout %s",
		path.Join(fsMnt, fsFilesDir), p.FSFiles, p.FSFileSize, timeout), float64(p.FSFiles), timeout+time.Minute)
	if err != nil {
		return nil, fmt.Errorf("fs-files: %w", err)
	}
	l, err := iotool.ParseLast(out, "fs-files")
	if err != nil {
		return nil, err
	}
	if n, err := l.Int("files"); err != nil || n != int64(p.FSFiles) {
		return nil, fmt.Errorf("fs-files did %d files (%v), want %d: %s", n, err, p.FSFiles, l)
	}
	costs["fs-files"] = cost
	vals = map[string]float64{}
	for key, field := range map[string]string{"fs-create": "create_s", "fs-stat": "stat_s", "fs-read": "read_s"} {
		if vals[key], err = l.Float(field); err != nil {
			return nil, err
		}
	}
	// The file is read twice, each time from an emptied page cache. The
	// first read's page cache (virtio-fs caches; QEMU's 9p, mounted
	// without a cache, does not) lands in guest RAM the guest has never
	// touched, each page of which KVM (L1's, when nested) faults in and
	// zeroes, a cost of the VM's first use of its RAM: a fault per 2 MiB
	// of vmm's anonymous RAM, per 4 KiB of QEMU's memfd under virtiofsd.
	// The second read's lands in RAM the first one freed, and is what
	// reading costs a guest that has run a while. Both are reported.
	for _, key := range []string{"fs-seq-read", "fs-seq-reread"} {
		out, cost, err := r.measured(ctx, g, fmt.Sprintf("vmm-iotool fs-seq-read -file %s -bytes %d -drop-caches", path.Join(fsMnt, fsSeqFile), p.FSSeqBytes), mibUnits(p.FSSeqBytes), figureTimeout)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		l, err := iotool.ParseLast(out, "fs-seq-read")
		if err != nil {
			return nil, err
		}
		if err := checkBytes(l, p.FSSeqBytes); err != nil {
			return nil, err
		}
		if vals[key], err = l.Float("seconds"); err != nil {
			return nil, err
		}
		costs[key] = cost
	}
	if err := g.poweroff(r); err != nil {
		return nil, err
	}
	if _, err := r.exec(ctx, setupTimeout, r.Layout.BenchTool, "rm", files); err != nil {
		return nil, fmt.Errorf("remove %s: %w", files, err)
	}
	return vals, nil
}

// stop ends a VMM after a failure, unless it has exited already, and
// waits for it: the next one must not find the TAP or the disk in use.
func stop(con Console, name string) error {
	if _, err := con.Wait(time.Second); err == nil {
		return nil
	}
	if err := con.Kill(); err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	if _, err := con.Wait(30 * time.Second); err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	return nil
}

func checkBytes(l iotool.Result, want int64) error {
	n, err := l.Int("bytes")
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("iotool %s moved %d bytes, want %d: %s", l.Op, n, want, l)
	}
	return nil
}

func (r *Runner) nextPort() string {
	r.port++
	return strconv.Itoa(5200 + r.port)
}

// tcpGuestToHost: the host receives (and reports), the guest sends to
// hostIP, where the host's receiver listening on every address is
// reached. The receiver's figure is used for both directions: it times
// from the connection to the last byte, and its clock is the host's.
func (r *Runner) tcpGuestToHost(ctx context.Context, g *guest, iface, hostIP string) (float64, *Cost, error) {
	return r.withFrames(g, iface, func() (float64, *Cost, error) { return r.tcpGuestToHostPhase(ctx, g, hostIP) })
}

// tcpGuestToHostPhase is tcpGuestToHost's transfer, between the frame
// counts.
func (r *Runner) tcpGuestToHostPhase(ctx context.Context, g *guest, hostIP string) (v float64, cost *Cost, err error) {
	port := r.nextPort()
	type result struct {
		out  string
		code int
		err  error
	}
	done := make(chan result, 1)
	rctx, cancel := context.WithTimeout(ctx, figureTimeout)
	defer cancel()
	go func() {
		out, code, err := r.Host.Exec(rctx, r.Layout.L1Tool, "io", "tcp-recv", "-port", port, "-timeout", figureTimeout.String())
		done <- result{out, code, err}
	}()
	// vmm-iotool's sender retries a refused connection for a while: the
	// receiver may still be starting.
	out, c, err := r.measured(ctx, g, fmt.Sprintf("vmm-iotool tcp-send -addr %s:%s -bytes %d", hostIP, port, r.Params.TCPBytes), mibUnits(r.Params.TCPBytes), figureTimeout)
	if err != nil {
		return 0, nil, err
	}
	sent, err := iotool.ParseLast(out, "tcp-send")
	if err != nil {
		return 0, nil, err
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(figureTimeout):
		return 0, nil, errors.New("host receiver did not finish")
	}
	if res.err != nil {
		return 0, nil, fmt.Errorf("host receiver: %w", res.err)
	}
	if res.code != 0 {
		return 0, nil, fmt.Errorf("host receiver exited with status %d: %s", res.code, strings.TrimSpace(tail(res.out, 2000)))
	}
	got, err := iotool.ParseLast(res.out, "tcp-recv")
	if err != nil {
		return 0, nil, err
	}
	v, err = checkTransfer(sent, got, r.Params.TCPBytes)
	return v, c, err
}

// tcpHostToGuest: the guest receives (and reports) on port, the host
// sends to addr. forwarded says addr is a VMM's port forward, which
// accepts before the guest listens and then breaks the connection: the
// host waits for the guest to listen first. (Elsewhere the guest's
// refusal makes the host's sender retry.)
func (r *Runner) tcpHostToGuest(ctx context.Context, g *guest, iface, port, addr string, forwarded bool) (float64, *Cost, error) {
	return r.withFrames(g, iface, func() (float64, *Cost, error) { return r.tcpHostToGuestPhase(ctx, g, port, addr, forwarded) })
}

// tcpHostToGuestPhase is tcpHostToGuest's transfer, between the frame
// counts.
func (r *Runner) tcpHostToGuestPhase(ctx context.Context, g *guest, port, addr string, forwarded bool) (v float64, cost *Cost, err error) {
	start := r.start
	if forwarded {
		start = r.startListener
	}
	ph, err := start(ctx, g, "vmm-iotool tcp-recv -port "+port+" -timeout "+figureTimeout.String())
	if err != nil {
		return 0, nil, err
	}
	out, err := r.exec(ctx, figureTimeout, r.Layout.L1Tool, "io", "tcp-send", "-addr", addr, "-bytes", strconv.FormatInt(r.Params.TCPBytes, 10))
	if err != nil {
		return 0, nil, fmt.Errorf("host sender: %w", err)
	}
	sent, err := iotool.ParseLast(out, "tcp-send")
	if err != nil {
		return 0, nil, err
	}
	out, c, err := r.finish(ctx, g, ph, mibUnits(r.Params.TCPBytes), figureTimeout)
	if err != nil {
		return 0, nil, fmt.Errorf("guest receiver: %w", err)
	}
	got, err := iotool.ParseLast(out, "tcp-recv")
	if err != nil {
		return 0, nil, err
	}
	v, err = checkTransfer(sent, got, r.Params.TCPBytes)
	return v, c, err
}

// withFrames runs a network phase between two readings of iface's
// packet counters and adds what the phase moved to its cost.
func (r *Runner) withFrames(g *guest, iface string, phase func() (float64, *Cost, error)) (float64, *Cost, error) {
	before, err := r.guestFrames(g, iface)
	if err != nil {
		return 0, nil, err
	}
	v, cost, err := phase()
	if err != nil {
		return v, cost, err
	}
	cost, err = r.addFrames(g, iface, before, cost)
	return v, cost, err
}

// guestFrames reads the packet counters of the guest's card iface, outside
// any measured window (the typed command and its output cost a few
// dozen exits, which are not the phase's).
func (r *Runner) guestFrames(g *guest, iface string) (Frames, error) {
	dir := "/sys/class/net/" + iface + "/statistics/"
	out, err := g.run("cat "+dir+"rx_packets "+dir+"tx_packets", r.cmdDeadline())
	if err != nil {
		return Frames{}, fmt.Errorf("%s's packet counters: %w", iface, err)
	}
	f, err := parseFrames(catOutput(out))
	if err != nil {
		return Frames{}, fmt.Errorf("%s's packet counters: %w", iface, err)
	}
	return f, nil
}

// parseFrames reads cat's output of rx_packets then tx_packets: two
// decimal numbers, one a line (the console's line ends are CRLF).
func parseFrames(s string) (Frames, error) {
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return Frames{}, fmt.Errorf("want two counters, got %q", tail(s, 200))
	}
	rx, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return Frames{}, fmt.Errorf("rx_packets %q: %w", fields[0], err)
	}
	tx, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return Frames{}, fmt.Errorf("tx_packets %q: %w", fields[1], err)
	}
	return Frames{RX: rx, TX: tx}, nil
}

// addFrames reads iface's counters again after a phase and records what
// the phase moved in cost (when the phase was costed at all). A counter
// that went backwards is a different card or a reset one: no frames.
func (r *Runner) addFrames(g *guest, iface string, before Frames, cost *Cost) (*Cost, error) {
	after, err := r.guestFrames(g, iface)
	if err != nil {
		return cost, err
	}
	if cost == nil {
		return nil, nil
	}
	if after.RX < before.RX || after.TX < before.TX {
		r.logf("warning: %s: %s's packet counters went backwards (%+v, then %+v); no frame counts", g.sys.Name, iface, before, after)
		return cost, nil
	}
	cost.Frames = &Frames{RX: after.RX - before.RX, TX: after.TX - before.TX}
	return cost, nil
}

// checkTransfer makes sure the receiver got exactly what was sent before
// its throughput counts.
func checkTransfer(sent, got iotool.Result, want int64) (float64, error) {
	if err := checkBytes(sent, want); err != nil {
		return 0, err
	}
	if err := checkBytes(got, want); err != nil {
		return 0, err
	}
	ss, _ := sent.Get("sha256")
	gs, _ := got.Get("sha256")
	if ss == "" || ss != gs {
		return 0, fmt.Errorf("sha256 mismatch: sent %q, received %q", ss, gs)
	}
	return got.Float("mibps")
}

// withTails adds the host's recent console and kernel log to err unless
// it already carries them (the nested package adds them itself).
func (r *Runner) withTails(err error) error {
	if err == nil || strings.Contains(err.Error(), "--- job console") {
		return err
	}
	return fmt.Errorf("%w\n%s", err, r.Host.Tails())
}
