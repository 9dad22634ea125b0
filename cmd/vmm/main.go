// Command vmm boots a Linux bzImage in a KVM virtual machine with a serial
// console on the terminal:
//
//	vmm -kernel bzImage -initrd initrd.cpio [-m 512M] [-smp 2] [-append ARGS] [-timeout 10m]
//	    [-disk FILE[,ro]]... [-tap NAME[,mac=52:54:00:12:34:56]]... [-kernel-cache on|off|DIR]
//	    [-nic user[,hostfwd=tcp::2222-:22]...[,mac=MAC]]... [-nic tap,ifname=NAME[,mac=MAC]]...
//
// With -kernel-cache (or $VMM_KERNEL_CACHE) on, the first boot of a
// bzImage decompresses its kernel on the host into the kernel cache, and
// later boots load that vmlinux and enter it directly, skipping the
// kernel's own decompression. It is off by default because only warm
// boots gain: measured nested (QEMU TCG, Debian's cloud kernel), the
// first exit came 5.8-7.9 s after start from a warm cache against 9.4 s
// without, but 17.2 s from a cold one, which a fresh machine (such as
// each nested test's L1) always has. -kernel also takes a vmlinux ELF,
// booted directly.
//
// Flags take QEMU's single-dash spelling as typed and GNU's double-dash
// one. Exit status: 0 when the guest powers off or reboots (or Ctrl-A x
// is typed), 1 for a runtime failure, 2 for a usage error, 124 when
// -timeout stopped the guest, 128+N when stopped by signal N.
//
// A vCPU never waits for vmm's readers: console output a reader does not
// take is dropped (the count is printed on stderr at exit), and in `vmm
// run` the job waits for its stdout reader instead. A closed stdout or
// stderr (`vmm ... | head -1`) ends only that stream's output, and
// -timeout and signals end vmm within a second whatever its pipes do.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/cachedir"
	"github.com/vmm-dev/vmm/internal/rawterm"
	"github.com/vmm-dev/vmm/internal/selfmem"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/sandbox"
	"github.com/vmm-dev/vmm/tap"
	"github.com/vmm-dev/vmm/usernet/hostfwd"
)

// defaultCmdline starts every kernel command line (see
// machine.DefaultCmdline for why each part is there).
const defaultCmdline = machine.DefaultCmdline

type options struct {
	kernel, initrd, appendArgs, memory string
	cpus                               int
	timeout                            time.Duration
	disks                              []string
	nics                               []nicArg // -tap and -nic in order
	bootTimer                          bool
	version                            bool
	kernelCache                        string
	sandbox                            string // "on" or "off"
	transport                          string // "pci" or "mmio"

	// `vmm snapshot` only (snapshot.go); its -out-size is outSize.
	snap    bool
	snapDir string // -o DIR
	verify  string // -verify DIR: check a snapshot, boot nothing

	// `vmm run` only.
	run                 bool
	share, out, outSize string
	outBytes            uint64 // outSize, parsed and checked by parseMode
	rootfs              string
	shares              []string // -fs values, parsed into machine.Config.Shares
	env, command        []string
	snapshot            string // -snapshot DIR: restore instead of booting (snapshot.go)
	stdoutPort          bool   // the job's stdout on its output port (guestabi.Spec.StdoutPort)
	stderrPipe          bool   // the job's stderr a pipe, not the console (guestabi.Spec.StderrPipe)
	stdinPort           bool   // the job's stdin from its input port (guestabi.Spec.StdinPort)
}

// pipedInput reports whether f, vmm run's stdin, is a pipe, a socket or a
// regular file: input worth the job's input port, which costs the boot a
// PCI device (about 560 exits to probe it, nested). A character device
// is left to the serial port: a terminal must stay one, and /dev/null,
// where CI runners and `</dev/null` leave most jobs, has no bytes to
// carry.
func pipedInput(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
		return true
	}
	return false
}

// -kernel-cache values besides a directory: on is the default directory
// ($VMM_CACHE/vmlinux, see cachedir), off boots the bzImage as it is.
const (
	kernelCacheOn  = "on"
	kernelCacheOff = "off"
)

// exitTimeout is the status when -timeout stops the guest: the one GNU
// timeout(1) uses, so CI scripts can tell a hung job from a failed one.
const exitTimeout = 124

// usageError is a bad command line: exit status 2.
type usageError struct{ error }

func main() {
	// Before anything else, so the heap never has a huge page: see
	// package selfmem. An error costs memory only. A vmm built as the
	// Makefile builds it (selfmem.LDFlags) has nothing to do here; one
	// built otherwise executes itself again on hosts whose huge pages
	// are "always", a start-up of about 40-50 ms nested that falls
	// before the boot timer's zero.
	_ = selfmem.ExecWithoutHugePages()
	start := time.Now() // the boot timer's zero: before anything else runs
	ignoreSIGPIPE()
	os.Exit(vmmMain(start, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, bootKVM))
}

// vmmMain is main once SIGPIPE is handled, with the process's files and
// the way to build a guest passed in: tests run it in a child process
// with a guest that needs no /dev/kvm.
func vmmMain(start time.Time, args []string, stdin, stdout, stderr *os.File, boot bootFunc) int {
	if len(args) > 0 && args[0] == "run" {
		return runMode(true, start, args[1:], stdin, stdout, stderr, boot)
	}
	if len(args) > 0 && args[0] == "snapshot" {
		return snapshotMain(start, args[1:], stdout, stderr)
	}
	return runMode(false, start, args, stdin, stdout, stderr, boot)
}

// guest is what runMode needs of a machine: *machine.Machine, or in
// tests a fake that drives the real UARTs from a goroutine.
type guest interface {
	Run(ctx context.Context) error
	Close() error
	ExitStatus() (status int, ok bool)
	Reason() machine.StopReason
	// KVMNote says why guests cannot run on this host's /dev/kvm, or "".
	KVMNote() string
	// Places says where each vCPU was when a cancel stopped the guest.
	Places() []machine.VCPUPlace
}

// bootFunc builds the guest runMode runs.
type bootFunc func(machine.Config) (guest, error)

// bootKVM builds a KVM machine.
func bootKVM(cfg machine.Config) (guest, error) {
	m, err := machine.New(cfg)
	if err != nil {
		return nil, err // not a nil *Machine in a non-nil interface
	}
	return m, nil
}

// newFlagSet's help goes to help: stdout, where -h is asked for, as GNU
// programs and QEMU print theirs, so `vmm -h | less` works. Errors in
// flags are not printed by the flag set (ContinueOnError): the caller
// prints them as one line on stderr.
func newFlagSet(o *options, help io.Writer) *pflag.FlagSet {
	name := "vmm"
	switch {
	case o.run:
		name = "vmm run"
	case o.snap:
		name = "vmm snapshot"
	}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(help)
	fs.SortFlags = false
	fs.StringVar(&o.kernel, "kernel", "", "Linux kernel to boot, a bzImage or a vmlinux ELF (required)")
	fs.StringVar(&o.initrd, "initrd", "", "initramfs (cpio, optionally compressed) to hand the kernel")
	fs.StringVar(&o.appendArgs, "append", "", "`ARGS` appended to the kernel command line, after vmm's own \""+defaultCmdline+"\"")
	fs.StringVarP(&o.memory, "memory", "m", "512M", "guest RAM: a size with K, M, G or T suffix; a plain number is MiB")
	fs.IntVar(&o.cpus, "smp", 1, "number of vCPUs (QEMU's `cpus=N` form works too)")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop the guest after this long (e.g. 90s, 10m) and exit with status 124; 0 means never")
	fs.StringVar(&o.sandbox, "sandbox", "on", "`on` confines vmm, once its files and devices are open, to the system calls it needs (seccomp); a call outside them ends vmm with a message naming it. off is for debugging")
	fs.StringVar(&o.transport, "virtio-transport", "pci", "`TRANSPORT` the guest reaches the virtio devices by: pci (virtio-pci with MSI-X on a PCI bus: no trapped register access per interrupt; needs the guest's virtio_pci driver) or mmio (virtio-mmio described in ACPI, for kernels without PCI)")
	fs.BoolVar(&o.version, "version", false, "print which build of vmm this is (its source revision and build ID, as a snapshot's manifest names it) and exit")
	fs.BoolVar(&o.bootTimer, "boot-timer", false, "print when each boot phase was reached (vmm's own and those the guest writes to port 0x5f0) to stderr at exit")
	fs.StringVar(&o.kernelCache, "kernel-cache", cmp.Or(os.Getenv("VMM_KERNEL_CACHE"), kernelCacheOff), "on, off or `DIR`: decompress the bzImage's kernel once into DIR (on: $VMM_CACHE/vmlinux, else ~/.cache/vmm/vmlinux) and boot it from there, sparing the guest its decompression; the default is $VMM_KERNEL_CACHE, else off")
	// StringArray, not StringSlice: a comma belongs to the value
	// (FILE,ro), it does not separate repeated values.
	fs.StringArrayVar(&o.disks, "disk", nil, "virtio-blk disk backed by `FILE[,ro]`, a raw image or block device; ,ro makes it read-only; repeat for more (the guest sees /dev/vda, /dev/vdb, ... in order)")
	fs.Var(nicFlag{&o.nics, "tap"}, "tap", "virtio-net card on host TAP interface `NAME[,mac=MAC]`, created if missing (needs CAP_NET_ADMIN); the default MAC is derived from NAME")
	fs.StringArrayVar(&o.shares, "fs", nil, "share host directory `DIR[,tag=NAME][,ro]` with the guest over virtio-fs (mount -t virtiofs NAME /mnt); the tag defaults to DIR's base name; ro refuses every change on the host side; repeat for more")
	fs.Var(nicFlag{&o.nics, "nic"}, "nic", "virtio-net card, QEMU's spelling: `user[,hostfwd=RULE]...[,mac=MAC]` is a user-mode network inside vmm needing no privilege (DHCP gives the guest 10.0.2.15; 10.0.2.2 is the host's loopback; DNS at 10.0.2.3; RULE is [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT); tap,ifname=NAME[,mac=MAC] is -tap NAME; none adds no card; cards are eth0, eth1, ... in -tap and -nic order")
	if o.run {
		addRunFlags(fs, o)
		fs.SetInterspersed(false) // the first argument that is not a flag starts the command
		fs.Usage = func() { runUsage(fs, help) }
		return fs
	}
	if o.snap {
		addSnapshotFlags(fs, o)
		fs.Usage = func() { snapshotUsage(fs, help) }
		return fs
	}
	fs.Usage = func() {
		fmt.Fprintf(help, "Usage: vmm -kernel BZIMAGE [-initrd INITRD] [-m SIZE] [-smp N] [-append ARGS] [-timeout D] [-disk FILE[,ro]]... [-tap NAME[,mac=MAC]]... [-nic user[,hostfwd=RULE]...]...\n\n")
		fmt.Fprintf(help, "Boots Linux on KVM with the guest's serial console (ttyS0) on this terminal.\n")
		fmt.Fprintf(help, "Type Ctrl-A x to quit, Ctrl-A Ctrl-A to send Ctrl-A. Flags may be written -flag or --flag.\n\n")
		fs.PrintDefaults()
	}
	return fs
}

// qemuSpelling rewrites QEMU's single-dash long flags (-kernel, -smp) to
// pflag's double-dash form. Single letters (-m) stay shorthands, also
// with their value attached (-m512M, -m=512M); an argument that is a
// flag's value is left alone even if it starts with a dash.
//
// Any other single-dash word is an unknown flag, named as typed. Left to
// pflag it would be a bundle of shorthands: QEMU's -hda would read as
// -h -d -a, that is as -help, and a CI script with that typo would exit
// 0 without booting anything; -mem-prealloc would set -m to
// "em-prealloc".
func qemuSpelling(fs *pflag.FlagSet, args []string, stopAtArg bool) ([]string, error) {
	out := make([]string, 0, len(args))
	var lastBool string // the previous word, if a bool flag without =VALUE
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || (stopAtArg && !strings.HasPrefix(a, "-")) {
			// "vmm run -boot-timer false -- make": a bool flag takes no
			// separate value (-boot-timer=false does), so the job would
			// be "false -- make", ending 1 without a word. "true" and
			// "false" are commands too, so the line is ambiguous, and
			// refused rather than guessed.
			if lastBool != "" && a != "--" && (a == "true" || a == "false") {
				return nil, fmt.Errorf("%s %s: a flag's true or false goes after =, as %s=%s; to run %s as the job, write -- before it", lastBool, a, lastBool, a, a)
			}
			// The rest is a command (vmm run), not vmm's flags.
			out = append(out, args[i:]...)
			break
		}
		f, hasValue, known := flagWord(fs, a)
		lastBool = ""
		if f != nil && !hasValue && f.Value.Type() == "bool" {
			lastBool = a
		}
		switch {
		case len(a) == 2 && a[0] == '-' && !known:
			// pflag's own words for an unknown shorthand are "unknown
			// shorthand flag: 'x' in -x".
			return nil, fmt.Errorf("unknown flag: %s", a)
		case len(a) > 2 && a[0] == '-' && a[1] != '-' && !known:
			return nil, fmt.Errorf("unknown flag: %s", a)
		case len(a) > 2 && a[0] == '-' && a[1] != '-' && (f != nil || a == "-help" || strings.HasPrefix(a, "-help=")):
			a = "-" + a // QEMU's -kernel is pflag's --kernel
		}
		// Keep a flag's value with it, even if it starts with a dash or,
		// for vmm run, does not.
		if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 == len(args) {
			// pflag would name it --kernel, however it was typed.
			return nil, fmt.Errorf("%s: no value given", args[i])
		}
		takesNext := f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args)
		// "-out $DIR -- make" with DIR unset reaches vmm as "-out --
		// make": the "--" that ends the flags is no path, so it is not
		// taken as one (the job would run and its results land in
		// ./--). A kernel command line may hold "--" (what follows it
		// goes to init), so -append keeps it.
		if takesNext && args[i+1] == "--" && f.Name != "append" {
			return nil, fmt.Errorf("%s: no value given (the next argument is --)", args[i])
		}
		// The same unset variable before another flag ("-out $DIR
		// -timeout 2s") would take that flag for the value: a
		// directory named -timeout, and a job without its deadline.
		// No path or value of vmm's is spelled like one of its flags;
		// a file that is can be given as ./-name.
		if takesNext && f.Name != "append" {
			if _, _, next := flagWord(fs, args[i+1]); next {
				return nil, fmt.Errorf("%s: no value given (the next argument, %s, is a flag)", args[i], args[i+1])
			}
		}
		if check := valueArg(f); check != nil {
			var err error
			switch {
			case hasValue:
				name, v, _ := strings.Cut(a, "=")
				a, err = check(v)
				a = name + "=" + a
			case takesNext:
				i++
				out = append(out, a)
				a, err = check(args[i])
				takesNext = false
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, a)
		if takesNext {
			i++
			out = append(out, args[i])
		}
	}
	return out, nil
}

// flagWord reads a as qemuSpelling does: a shorthand (-m, or -m512M
// and -m=512M with its value attached), GNU's --name[=VALUE] or QEMU's
// -name[=VALUE]. f is the flag it names, if fs has it (none for -h and
// -help, pflag's help, nor for an attached shorthand value), hasValue
// whether =VALUE came with a long name, and known whether a is one of
// fs's flags or help at all. A lone "-" is no flag.
func flagWord(fs *pflag.FlagSet, a string) (f *pflag.Flag, hasValue, known bool) {
	switch {
	case len(a) == 2 && a[0] == '-': // a shorthand: -m
		f = fs.ShorthandLookup(a[1:])
		return f, false, f != nil || a == "-h"
	case strings.HasPrefix(a, "--"): // GNU: --kernel or --kernel=bz
		var name string
		name, _, hasValue = strings.Cut(a[2:], "=")
		f = fs.Lookup(name)
		return f, hasValue, f != nil || name == "help"
	case len(a) > 2 && a[0] == '-': // QEMU: -kernel or -kernel=bz
		var name string
		name, _, hasValue = strings.Cut(a[1:], "=")
		f = fs.Lookup(name)
		return f, hasValue, f != nil || name == "help" || shorthandWithValue(fs, a)
	}
	return nil, false, false
}

// valueArg is the check of a flag whose value qemuSpelling reads itself
// before pflag does, or nil: to take QEMU's forms, and to say what is
// wrong with a bad value in vmm's words (pflag's are `invalid argument
// "soon" for "--timeout" flag: time: invalid duration "soon"`).
func valueArg(f *pflag.Flag) func(string) (string, error) {
	if f == nil {
		return nil
	}
	switch f.Name {
	case "smp":
		return smpArg // QEMU's "-smp cpus=2" and "-smp 2,sockets=1" become 2
	case "timeout":
		return timeoutArg // as typed, if it is a duration
	}
	if f.Value.Type() == "bool" { // only ever -flag=VALUE
		return func(v string) (string, error) {
			if _, err := strconv.ParseBool(v); err != nil {
				return "", fmt.Errorf("-%s %q: want true or false", f.Name, v)
			}
			return v, nil
		}
	}
	return nil
}

// timeoutArg checks a -timeout value is a duration. time.ParseDuration
// says "invalid duration" for one past time.Duration's 292 years too, so
// a number with one unit is looked at again to say that instead.
func timeoutArg(v string) (string, error) {
	if _, err := time.ParseDuration(v); err != nil {
		for _, u := range []struct {
			suffix string
			d      time.Duration
		}{{"h", time.Hour}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}} {
			n, ok := strings.CutSuffix(v, u.suffix)
			if !ok || !allDigits(strings.Replace(n, ".", "", 1)) {
				continue
			}
			if f, err := strconv.ParseFloat(n, 64); err == nil && f*float64(u.d) >= math.MaxInt64 {
				return "", fmt.Errorf("-timeout %q: too long (at most %dh)", v, math.MaxInt64/int64(time.Hour))
			}
		}
		return "", fmt.Errorf("-timeout %q: not a duration (try 90s or 10m)", v)
	}
	return v, nil
}

// smpArg reduces a -smp value to its number of vCPUs in decimal, as
// pflag then reads it (it would read 010 as octal), with a message of
// its own for anything else (pflag's quotes strconv).
func smpArg(v string) (string, error) {
	n, err := parseSMP(v)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(n), nil
}

// parseSMP reads QEMU's -smp: [cpus=]N[,maxcpus=M][,sockets=S][,cores=C]
// [,threads=T]... in any order after N. It returns the number of vCPUs:
// N, else maxcpus, else the topology's product. vmm has no CPU hotplug, so
// maxcpus above N is accepted and unused, as QEMU would leave the rest
// offline; an unknown key, a repeated one, a value that is not a positive
// number, maxcpus below N, or a topology that cannot make the vCPUs is an
// error naming the value as typed.
func parseSMP(v string) (int, error) {
	bad := func(format string, args ...any) (int, error) {
		return 0, fmt.Errorf("-smp %q: "+format, append([]any{v}, args...)...)
	}
	// The keys of QEMU's -smp that say how its vCPUs are grouped
	// (qemu-options.hx, -smp). vmm shows the guest every vCPU as a
	// socket of its own, so only their product counts: it gives the
	// number of vCPUs when cpus= is left out, and must match it when
	// given.
	smpTopology := []string{"sockets", "dies", "clusters", "cores", "threads", "books", "drawers", "modules"}
	vals := map[string]int{}
	for i, part := range strings.Split(v, ",") {
		k, s, isKey := strings.Cut(part, "=")
		if !isKey {
			if i != 0 {
				return bad("%q is not KEY=N (try 2, or cpus=2,sockets=1)", part)
			}
			k, s = "cpus", part
		}
		if k != "cpus" && k != "maxcpus" && !slices.Contains(smpTopology, k) {
			return bad("unknown key %q (want cpus, maxcpus, %s)", k, strings.Join(smpTopology, ", "))
		}
		if _, dup := vals[k]; dup {
			return bad("%s given twice", k)
		}
		n, err := strconv.Atoi(s)
		if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
			return bad("too many vCPUs")
		}
		if err != nil || (n < 1 && k != "cpus") {
			if k == "cpus" {
				return bad("want a number of vCPUs, such as 2 or cpus=2")
			}
			return bad("%s=%q: want a positive number", k, s)
		}
		vals[k] = n
	}
	product, topology := 1, false
	for _, k := range smpTopology {
		if n, ok := vals[k]; ok {
			topology = true
			if product > 1<<20/n {
				return bad("too many vCPUs")
			}
			product *= n
		}
	}
	cpus, hasCPUs := vals["cpus"]
	maxcpus, hasMax := vals["maxcpus"]
	switch {
	case !hasCPUs && hasMax:
		cpus = maxcpus
	case !hasCPUs && topology:
		cpus = product
	case !hasCPUs:
		return bad("want a number of vCPUs, such as 2 or cpus=2")
	}
	if !hasMax {
		maxcpus = cpus
	}
	if maxcpus < cpus {
		return bad("maxcpus %d is less than the %d vCPUs", maxcpus, cpus)
	}
	// As QEMU does, keys left out of the topology are computed: what
	// is given must divide the vCPUs, and sockets, cores and threads
	// all given must make them.
	_, s := vals["sockets"]
	_, c := vals["cores"]
	_, t := vals["threads"]
	if topology && (maxcpus%product != 0 || (s && c && t && product != maxcpus)) {
		return bad("the topology makes %d vCPUs, not %d", product, maxcpus)
	}
	return cpus, nil
}

// shorthandWithValue reports whether a, a single-dash word of three or
// more bytes, is a shorthand flag that takes a value with the value
// attached: -m512M or -m=512M. A size starts with a digit.
func shorthandWithValue(fs *pflag.FlagSet, a string) bool {
	f := fs.ShorthandLookup(a[1:2])
	if f == nil || f.NoOptDefVal != "" {
		return false
	}
	return a[2] == '=' || (a[2] >= '0' && a[2] <= '9')
}

// parseSize reads QEMU's -m syntax: a number, with a fraction if it
// likes (1.5G; qemu_strtosz takes one and drops what falls below a
// byte), and an optional K/M/G/T/P/E suffix, itself optionally followed
// by "i", "B" or "iB" (512Mi, 512MB, 512MiB); B alone means bytes and
// no suffix MiB, as for QEMU's -m.
func parseSize(s string) (uint64, error) {
	v, problem := sizeOf(s, 20)
	if problem != "" {
		return 0, fmt.Errorf("-m %q: %s", s, problem)
	}
	return v, nil
}

// sizeOf is parseSize's reading of s, or what is wrong with it, with
// no suffix meaning 1<<shift bytes.
func sizeOf(s string, shift int) (v uint64, problem string) {
	const notSize = "not a size (try 512M or 2G)"
	t := strings.TrimSpace(s)
	// The suffix: B alone is bytes, as for QEMU; a unit letter may be
	// followed by i, B or iB.
	unit := strings.TrimLeft(t, "0123456789.")
	t = t[:len(t)-len(unit)]
	up := strings.ToUpper(unit)
	switch u := strings.TrimSuffix(strings.TrimSuffix(up, "B"), "I"); {
	case up == "":
	case up == "B":
		shift = 0
	case len(u) == 1 && strings.Contains("KMGTPE", u):
		shift = 10 * (strings.Index("KMGTPE", u) + 1)
	default:
		return 0, notSize
	}
	whole, frac, hasFrac := strings.Cut(t, ".")
	if whole == "" || !allDigits(whole) || (hasFrac && !allDigits(frac)) {
		return 0, notSize
	}
	v, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || v > (1<<63)>>shift {
		return 0, "too large"
	}
	v <<= shift
	if frac = strings.TrimRight(frac, "0"); frac != "" {
		// frac/10^len(frac) of 2^shift bytes, the part below a byte
		// dropped, as QEMU does.
		q := fracBits(frac, shift)
		if v+q > 1<<63 {
			return 0, "too large"
		}
		v += q
	}
	if v == 0 && strings.Trim(t, "0.") != "" {
		return 0, "less than one byte"
	}
	if v == 0 {
		return 0, "must be more than 0"
	}
	return v, ""
}

// fracBits is the decimal fraction 0.digits times 2^shift, rounded
// down: exact for any number of digits, shift at most 63, as the binary
// expansion long multiplication gives it one bit at a time (double the
// fraction, carry out the bit). It spares vmm math/big, and the 60 KB
// of code and tables that package and math/rand would add to every
// running vmm's resident memory (issue 12).
func fracBits(digits string, shift int) uint64 {
	d := []byte(digits)
	for i := range d {
		d[i] -= '0'
	}
	var q uint64
	for range shift {
		carry := byte(0)
		for i := len(d) - 1; i >= 0; i-- {
			x := d[i]*2 + carry
			d[i], carry = x%10, x/10
		}
		q = q<<1 | uint64(carry)
	}
	return q
}

func allDigits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}

// parseMemory reads -m: a size, or QEMU's [size=]SIZE[,slots=N]
// [,maxmem=SIZE] with its keys in any order, each once. vmm has no
// memory hotplug, so slots and maxmem are checked and unused; maxmem
// without a suffix is bytes, as for QEMU. The size is rounded up to whole
// 4 KiB pages, which KVM's memory slots are made of (QEMU rounds to 8
// KiB).
func parseMemory(s string) (uint64, error) {
	var size, maxmem string
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		k, v, isKey := strings.Cut(part, "=")
		if !isKey && i == 0 {
			k, v = "size", part
		}
		switch {
		case (isKey || i == 0) && (k == "size" || k == "slots" || k == "maxmem"):
			if seen[k] {
				return 0, fmt.Errorf("-m %q: %s given twice", s, k)
			}
			seen[k] = true
		default:
			return 0, fmt.Errorf("-m %q: %q is neither a size nor QEMU's size=, slots= or maxmem=", s, part)
		}
		switch k {
		case "size":
			size = v
		case "maxmem":
			maxmem = v
		case "slots":
			if n, err := strconv.ParseUint(v, 10, 32); err != nil || n > 256 {
				return 0, fmt.Errorf("-m %q: slots=%q: want a number of memory slots", s, v)
			}
		}
	}
	if size == "" {
		return 0, fmt.Errorf("-m %q: no size (try 512M or 2G)", s)
	}
	n, problem := sizeOf(size, 20)
	if problem != "" {
		return 0, fmt.Errorf("-m %q: %s", s, problem)
	}
	if n > 1<<63-ramPage {
		return 0, fmt.Errorf("-m %q: too large", s)
	}
	n = (n + ramPage - 1) &^ (ramPage - 1)
	if seen["maxmem"] {
		m, problem := sizeOf(maxmem, 0)
		if problem != "" {
			return 0, fmt.Errorf("-m %q: maxmem=%q: %s", s, maxmem, problem)
		}
		if m < n {
			return 0, fmt.Errorf("-m %q: maxmem is less than the size", s)
		}
	}
	return n, nil
}

// ramPage is what guest RAM is a whole number of: the 4 KiB page
// KVM_SET_USER_MEMORY_REGION's memory_size is made of
// (Documentation/virt/kvm/api.rst).
const ramPage = 4 << 10

// hostMemory is MemTotal from /proc/meminfo, or 0 if unknown.
func hostMemory() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// parseArgs turns the command line into a machine configuration and the
// options that are vmm's own (timeout, boot timer).
func parseArgs(args []string, help io.Writer) (machine.Config, options, error) {
	return parseMode(false, args, help)
}

func parseMode(run bool, args []string, help io.Writer) (machine.Config, options, error) {
	return parseOptions(options{run: run}, args, help)
}

// helpWriter is the help's writer, which keeps its first error: a help
// that went nowhere (stdout closed, a full disk, /dev/full) is a failure
// to say, as GNU programs say it, not a silent success.
type helpWriter struct {
	w   io.Writer
	err error
}

func (h *helpWriter) Write(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	n, err := h.w.Write(p)
	h.err = err
	return n, err
}

// helpError is a help that could not be written.
type helpError struct{ err error }

func (e helpError) Error() string { return "writing the help: " + e.err.Error() }

// parseOptions reads args for vmm, vmm run or vmm snapshot, as o says.
// Asked for help (-h, --help), it prints it to help and returns
// pflag.ErrHelp, or a helpError if the help could not be written.
func parseOptions(o options, args []string, help io.Writer) (machine.Config, options, error) {
	run := o.run
	hw := &helpWriter{w: help}
	fs := newFlagSet(&o, hw)
	args, err := qemuSpelling(fs, args, run)
	if err != nil {
		return machine.Config{}, o, usageError{err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			if hw.err != nil && !errors.Is(hw.err, unix.EPIPE) {
				return machine.Config{}, o, helpError{hw.err}
			}
			// Written, or read as far as its reader wanted (vmm -h |
			// head): help given.
			return machine.Config{}, o, err
		}
		return machine.Config{}, o, usageError{err}
	}
	if o.version {
		// As QEMU's -version: the rest of the line is not looked at.
		fmt.Fprintf(hw, "vmm %s\n", vmmVersion())
		if hw.err != nil && !errors.Is(hw.err, unix.EPIPE) {
			return machine.Config{}, o, helpError{hw.err}
		}
		return machine.Config{}, o, pflag.ErrHelp
	}
	if run {
		if o.command = fs.Args(); len(o.command) == 0 {
			return machine.Config{}, o, usageError{errors.New("no command given: vmm run [flags] -- CMD ARGS...")}
		}
		for _, e := range o.env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				return machine.Config{}, o, usageError{fmt.Errorf("-env %q: want KEY=VALUE", e)}
			}
		}
		// The job's command and environment as guestabi.Spec.Validate
		// checks them later, so that what is wrong with them is a usage
		// error like the rest.
		if err := (guestabi.Spec{Args: o.command, Env: o.env}).Validate(); err != nil {
			return machine.Config{}, o, usageError{err}
		}
	} else if fs.NArg() > 0 {
		hint := ""
		if a := fs.Arg(0); (a == "run" || a == "snapshot") && !o.snap {
			// vmm -m 1G run -- make: the mode comes first.
			hint = fmt.Sprintf(" (%s is a mode, and comes first: vmm %s [flags] ...)", a, a)
		} else if a == "true" || a == "false" {
			// vmm -kernel bz -boot-timer false
			hint = fmt.Sprintf(" (a flag's true or false goes after =, as -boot-timer=%s)", a)
		} else if o.snap && o.snapDir == "" {
			// vmm snapshot -kernel bz DIR: the directory is a flag's.
			hint = " (the snapshot's directory is given with -o DIR)"
		}
		return machine.Config{}, o, usageError{fmt.Errorf("unexpected argument %q%s", fs.Arg(0), hint)}
	}
	if run || o.snap {
		// Checked with or without -out, so a typo shows at once.
		n, problem := sizeOf(o.outSize, 20)
		switch {
		case problem == "" && n%512 != 0:
			problem = "not a whole number of 512-byte sectors"
		case problem == "" && n > math.MaxInt64:
			problem = "too large"
		}
		if problem != "" {
			return machine.Config{}, o, usageError{fmt.Errorf("-out-size %q: %s (want a size such as 256M or 2G; a plain number is MiB, as for -m)", o.outSize, problem)}
		}
		o.outBytes = n
	}
	// An empty path given on purpose is a mistake, most often a
	// variable that was not set (-out "$RESULTS"): taken as "not given",
	// -out would silently bring nothing back.
	for _, name := range []string{"kernel", "initrd", "share", "rootfs", "out", "snapshot", "output", "verify"} {
		if f := fs.Lookup(name); f != nil && fs.Changed(name) && f.Value.String() == "" {
			return machine.Config{}, o, usageError{fmt.Errorf("-%s \"\": want a path", name)}
		}
	}
	if o.snap && o.verify != "" {
		var other string
		fs.Visit(func(f *pflag.Flag) {
			if f.Name != "verify" && other == "" {
				other = f.Name
			}
		})
		if other != "" {
			return machine.Config{}, o, usageError{fmt.Errorf("-verify takes no other flag (-%s)", other)}
		}
		return machine.Config{}, o, nil
	}
	if o.snap && o.snapDir == "" {
		return machine.Config{}, o, usageError{errors.New("no snapshot directory given: use -o DIR")}
	}
	if o.kernel == "" && o.snapshot == "" {
		return machine.Config{}, o, usageError{errors.New("no kernel given: use -kernel BZIMAGE")}
	}
	if o.snapshot != "" {
		// The snapshot's kernel, initramfs, command line and -out disk
		// are the restored guest's; other ones would be ignored,
		// silently.
		for _, name := range []string{"kernel", "initrd", "append", "out-size"} {
			if fs.Changed(name) {
				return machine.Config{}, o, usageError{fmt.Errorf("-%s does not go with -snapshot: the guest is restored with the kernel, initrd, command line and -out disk size it was saved with", name)}
			}
		}
	}
	mem, err := parseMemory(o.memory)
	if err != nil {
		return machine.Config{}, o, usageError{err}
	}
	if mem < machine.MinMemory {
		return machine.Config{}, o, usageError{fmt.Errorf("-m %s: need at least %d MiB", o.memory, machine.MinMemory>>20)}
	}
	if host := hostMemory(); host > 0 && mem > host {
		return machine.Config{}, o, usageError{fmt.Errorf("-m %s: more than this host's %d MiB of RAM", o.memory, host>>20)}
	}
	if o.cpus < 1 {
		return machine.Config{}, o, usageError{fmt.Errorf("-smp %d: need at least one vCPU", o.cpus)}
	}
	if o.cpus > machine.MaxCPUs {
		return machine.Config{}, o, usageError{fmt.Errorf("-smp %d: vmm supports at most %d vCPUs", o.cpus, machine.MaxCPUs)}
	}
	if o.timeout < 0 {
		return machine.Config{}, o, usageError{fmt.Errorf("-timeout %v: must not be negative", o.timeout)}
	}
	if o.sandbox != "on" && o.sandbox != "off" {
		return machine.Config{}, o, usageError{fmt.Errorf("-sandbox %q: want on or off", o.sandbox)}
	}
	if o.transport != "pci" && o.transport != "mmio" {
		return machine.Config{}, o, usageError{fmt.Errorf("-virtio-transport %q: want pci or mmio", o.transport)}
	}
	cmdline := defaultCmdline
	if run || o.snap {
		cmdline += " " + runCmdline
	}
	if o.appendArgs != "" {
		cmdline += " " + o.appendArgs
	}
	cfg := machine.Config{Kernel: o.kernel, Initrd: o.initrd, Cmdline: cmdline, MemSize: mem, CPUs: o.cpus}
	if o.transport == "mmio" {
		cfg.Transport = machine.VirtioMMIO
	}
	// The usual spellings of a switch, in any case, are on or off, as
	// for GODEBUG-style variables: VMM_KERNEL_CACHE=1 must not make a
	// directory named 1 in the current one. A directory so named is
	// still ./1.
	switch strings.ToLower(o.kernelCache) {
	case kernelCacheOff, "", "false", "no", "0":
	case kernelCacheOn, "true", "yes", "1":
		cfg.KernelCache = filepath.Join(cachedir.Dir(), "vmlinux")
	default:
		cfg.KernelCache = o.kernelCache
	}
	for _, d := range o.disks {
		disk, err := parseDisk(d)
		if err != nil {
			return machine.Config{}, o, usageError{err}
		}
		cfg.Disks = append(cfg.Disks, disk)
	}
	if err := checkDisksDistinct(cfg.Disks); err != nil {
		return machine.Config{}, o, usageError{err}
	}
	// QEMU's -nic none: no card where QEMU would add a default one.
	// vmm adds none unless asked, so it changes nothing.
	o.nics = slices.DeleteFunc(o.nics, func(a nicArg) bool { return a.flag == "nic" && a.value == "none" })
	for _, a := range o.nics {
		nic, err := parseNICArg(a)
		if err != nil {
			return machine.Config{}, o, usageError{err}
		}
		// A user network's helper confines itself as vmm does.
		nic.NoSandbox = nic.User && o.sandbox == "off"
		cfg.NICs = append(cfg.NICs, nic)
	}
	if err := checkNICsDistinct(o.nics, cfg.NICs); err != nil {
		return machine.Config{}, o, usageError{err}
	}
	tags := map[string]string{}
	if run {
		tags = jobSlotTags()
	}
	for _, v := range o.shares {
		sh, err := parseFS(v)
		if err != nil {
			return machine.Config{}, o, usageError{err}
		}
		if other, dup := tags[sh.Tag]; dup {
			return machine.Config{}, o, usageError{fmt.Errorf("-fs %q: tag %q is taken by %s", v, sh.Tag, other)}
		}
		tags[sh.Tag] = fmt.Sprintf("-fs %q", v)
		cfg.Shares = append(cfg.Shares, sh)
	}
	return cfg, o, nil
}

// parseDisk reads -disk FILE[,ro]. A comma in a file name is written
// twice, as QEMU spells it.
func parseDisk(v string) (machine.Disk, error) {
	parts := splitOpts(v)
	d := machine.Disk{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("-disk %q: no file name", v)
	}
	modeGiven := ""
	for _, o := range parts[1:] {
		switch o {
		case "ro", "readonly", "readonly=on", "rw", "readonly=off":
			if modeGiven != "" {
				return d, fmt.Errorf("-disk %q: %q after %q: say once whether the disk is read-only", v, o, modeGiven)
			}
			modeGiven = o
			d.ReadOnly = o != "rw" && o != "readonly=off"
		default:
			return d, fmt.Errorf("-disk %q: unknown option %q (want FILE or FILE,ro; a comma in FILE is written ,,)", v, o)
		}
	}
	return d, nil
}

// checkDisksDistinct refuses an image given twice, by any path, when
// either is writable: the second open would find the first one's lock
// and blame another process. Twice read-only is what the locks allow
// (virtio/blk), so it is allowed here too. A path that cannot be read is
// left for the disk's own open to report.
func checkDisksDistinct(disks []machine.Disk) error {
	type fileID struct{ dev, ino uint64 }
	seen := make(map[fileID]machine.Disk, len(disks))
	for _, d := range disks {
		var st unix.Stat_t
		if unix.Stat(d.Path, &st) != nil {
			continue
		}
		id := fileID{uint64(st.Dev), st.Ino}
		if first, ok := seen[id]; ok && (!first.ReadOnly || !d.ReadOnly) {
			return fmt.Errorf("-disk %s: the same image as -disk %s, and a writable disk must be its image's only user", d.Path, first.Path)
		}
		seen[id] = d
	}
	return nil
}

// parseFS reads -fs DIR[,tag=NAME][,ro]. The directory itself is
// checked when the machine opens it, before /dev/kvm.
func parseFS(v string) (machine.Share, error) {
	parts := splitOpts(v)
	sh := machine.Share{Dir: parts[0], Flag: "-fs"}
	if sh.Dir == "" {
		return sh, fmt.Errorf("-fs %q: no directory", v)
	}
	tagged, modeGiven := false, ""
	for _, o := range parts[1:] {
		switch k, val, _ := strings.Cut(o, "="); {
		case o == "ro" || o == "readonly" || o == "readonly=on" || o == "rw" || o == "readonly=off":
			if modeGiven != "" {
				return sh, fmt.Errorf("-fs %q: %q after %q: say once whether the share is read-only", v, o, modeGiven)
			}
			modeGiven = o
			sh.ReadOnly = o != "rw" && o != "readonly=off"
		case k == "tag" || k == "mount_tag":
			if tagged {
				return sh, fmt.Errorf("-fs %q: tag given twice", v)
			}
			sh.Tag, tagged = val, true
		default:
			return sh, fmt.Errorf("-fs %q: unknown option %q (want DIR[,tag=NAME][,ro]; a comma in DIR is written ,,)", v, o)
		}
	}
	if !tagged {
		sh.Tag = filepath.Base(filepath.Clean(sh.Dir))
		if sh.Tag == "/" || sh.Tag == "." || sh.Tag == ".." {
			return sh, fmt.Errorf("-fs %q: name the share with tag=NAME", v)
		}
	}
	if err := guestabi.ValidTag(sh.Tag); err != nil {
		return sh, fmt.Errorf("-fs %q: %w", v, err)
	}
	return sh, nil
}

// checkNICsDistinct refuses, while the command line is read rather than
// once the machine is half built, what the host would refuse later: a
// TAP name Linux does not allow, one TAP for two cards, and two
// forwards of one host port (the same address, or the unspecified one
// beside any), which the second bind would fail on. args[i] gave nics[i].
func checkNICsDistinct(args []nicArg, nics []machine.NIC) error {
	taps := map[string]int{}
	type fwd struct {
		nic  int
		rule hostfwd.Forward
	}
	var fwds []fwd
	for i, n := range nics {
		if n.Tap != "" {
			if err := tap.ValidateName(n.Tap); err != nil {
				return fmt.Errorf("-%s %q: %w", args[i].flag, args[i].value, err)
			}
			if j, dup := taps[n.Tap]; dup {
				return fmt.Errorf("-%s %q: TAP %q is also -%s %q's", args[i].flag, args[i].value, n.Tap, args[j].flag, args[j].value)
			}
			taps[n.Tap] = i
		}
		for _, f := range n.HostFwd {
			if f.Host.Port() == 0 {
				continue // any free port: never taken twice
			}
			for _, g := range fwds {
				if g.rule.UDP == f.UDP && g.rule.Host.Port() == f.Host.Port() &&
					(g.rule.Host.Addr() == f.Host.Addr() || g.rule.Host.Addr().IsUnspecified() || f.Host.Addr().IsUnspecified()) {
					proto, a := "tcp", args[g.nic]
					if f.UDP {
						proto = "udp"
					}
					return fmt.Errorf("-%s %q: %s host port %d is forwarded twice (also by -%s %q)",
						args[i].flag, args[i].value, proto, f.Host.Port(), a.flag, a.value)
				}
			}
			fwds = append(fwds, fwd{i, f})
		}
	}
	return nil
}

// parseTap reads -tap NAME[,mac=MAC].
func parseTap(v string) (machine.NIC, error) {
	parts := splitOpts(v)
	n := machine.NIC{Tap: parts[0]}
	if n.Tap == "" {
		return n, fmt.Errorf("-tap %q: no interface name", v)
	}
	for i, o := range parts[1:] {
		mac, ok := strings.CutPrefix(o, "mac=")
		if !ok {
			return n, fmt.Errorf("-tap %q: unknown option %q (want NAME or NAME,mac=52:54:00:12:34:56)", v, o)
		}
		if i > 0 {
			return n, fmt.Errorf("-tap %q: mac given twice", v)
		}
		var err error
		if n.MAC, err = parseMAC(mac); err != nil {
			return n, fmt.Errorf("-tap %q: %w", v, err)
		}
	}
	return n, nil
}

// splitOpts splits at single commas; ",," stands for a literal comma.
func splitOpts(v string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			if i+1 < len(v) && v[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(v[i])
	}
	return append(parts, cur.String())
}

func run(args []string, stdin *os.File, stdout, stderr *os.File) int {
	return runAt(time.Now(), args, stdin, stdout, stderr)
}

func runAt(start time.Time, args []string, stdin *os.File, stdout, stderr *os.File) int {
	return runMode(false, start, args, stdin, stdout, stderr, bootKVM)
}

// runJob is `vmm run`.
func runJob(start time.Time, args []string, stdin *os.File, stdout, stderr *os.File) int {
	return runMode(true, start, args, stdin, stdout, stderr, bootKVM)
}

func runMode(runMode bool, start time.Time, args []string, stdin *os.File, stdoutFile, stderrFile *os.File, boot bootFunc) (status int) {
	cfg, o, err := parseMode(runMode, args, stdoutFile)
	timeout := o.timeout
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(helpError)) {
		fmt.Fprintf(stderrFile, "vmm: %s\n", errLine(err))
		return 1
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderrFile, "vmm: %s\n", errLine(err))
		return 2
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// From here on, everything for stdout and stderr goes through host's
	// queues, vmm's own messages included (stderr is the queue), so no
	// write can hold up a vCPU or the exit (hostio.go).
	host := newHostIO(ctx, runMode, stdoutFile, stderrFile)
	host.sharedTerm = sameTerminal(stdoutFile, stderrFile)
	stderr := host.stderr
	// The clock starts before the machine is built: -timeout bounds the
	// whole run, boot included.
	defer armStops(ctx, cancel, timeout)()
	// Disarmed last, after host.finish: the backstop bounds the whole
	// stop, output included.
	bs, disarm := armBackstop(ctx, stderrFile, os.Exit)
	defer disarm()
	// The backstop's last cleanup: what vmm said before it, within a
	// moment, ahead of its own line.
	bs.onExit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_ = host.stderr.Drain(ctx, 0)
	})

	var bootReport func(io.Writer)
	if o.bootTimer {
		cfg.BootTimer = boottimer.New(start)
		bootReport = func(w io.Writer) {
			cfg.BootTimer.Mark(guestabi.VMMExit)
			cfg.BootTimer.WriteReport(w)
		}
	}
	// Registered after -timeout's timer and the signal handler, so both
	// can still cut short a wait for a reader, and before the terminal
	// is restored, the machine closed and the scratch disk removed, so
	// it runs after all three: vmm-exit is the last instant.
	defer func() { status = host.finish(status, bootReport) }()

	// rawMode is whether the terminal is raw now: device goroutines log
	// while runMode sets and restores it.
	var rawMode atomic.Bool
	cfg.Logf = func(format string, args ...any) {
		if rawMode.Load() {
			// In a raw terminal \n alone does not return the cursor,
			// and the guest's console may be mid-line.
			fmt.Fprintf(stderr, "\r\nvmm: %s\r\n", oneLine(fmt.Sprintf(format, args...)))
			return
		}
		fmt.Fprintf(stderr, "vmm: %s\n", oneLine(fmt.Sprintf(format, args...)))
	}
	var restore func()
	// endTerm is the terminal vmm made raw, its mode before and the raw
	// one, for the sandbox to give back if a denied call ends vmm.
	var endTerm *sandbox.Terminal
	var job *jobFiles
	cfg.Console = host.console
	if runMode {
		// A job whose output goes to a log, a pipe or a file writes it
		// through the output port, pages at a time; at a terminal it
		// keeps the serial port, a terminal of its own.
		o.stdoutPort = !rawterm.IsTerminal(int(stdoutFile.Fd()))
		o.stderrPipe = !rawterm.IsTerminal(int(stderrFile.Fd()))
		// Piped input comes through an input port, pages at a time
		// (pipedInput says which), where the VM has one (prepareJob,
		// prepareRestore); a terminal stays the job's serial port, a
		// terminal.
		o.stdinPort = stdin != nil && pipedInput(stdin)
		// The job's stdin and stdout on COM2 and its output port, the
		// console on stderr. Set before prepareJob: a restore checks
		// the snapshot's devices against cfg's, the port among them.
		cfg.JobOutput = host.job
		if job, err = prepareJob(&cfg, o); err != nil {
			fmt.Fprintf(stderr, "vmm: %s\n", errLine(err))
			return 1
		}
		defer job.remove()
		bs.onExit(job.remove)
		if stdin != nil {
			cfg.JobInput = stdin
		}
	} else {
		if stdin != nil && rawterm.InBackground(int(stdin.Fd())) {
			// `vmm &`: the terminal is the shell's. Touching it would
			// stop vmm (SIGTTOU, and again after each SIGCONT, so
			// that `kill %1` could not end it) and save the shell's
			// line-editing mode as the one to restore.
			cfg.Logf("warning: started in the background of a terminal: leaving it alone (no console input; run vmm in the foreground to type to the guest)")
			stdin = nil
		}
		if stdin != nil {
			fd := int(stdin.Fd())
			mode, modeErr := unix.IoctlGetTermios(fd, unix.TCGETS)
			if term, err := rawterm.MakeRawKept(fd); err == nil {
				rawMode.Store(true)
				restore = term
				if raw, err := unix.IoctlGetTermios(fd, unix.TCGETS); modeErr == nil && err == nil {
					endTerm = &sandbox.Terminal{Fd: fd, Mode: *mode, Raw: *raw}
				}
				bs.onExit(term)
				cfg.ConsoleIn = newTerminalInput(stdin, func() { cancel(errQuit) })
			} else {
				cfg.ConsoleIn = stdin
			}
		}
	}
	unraw := func() {
		if restore != nil {
			// The guest's last output in the terminal mode it was
			// written for.
			host.drainConsole()
			restore()
			rawMode.Store(false)
			restore = nil
		}
	}
	defer unraw()

	if job != nil && job.boot != nil {
		boot = job.boot // -snapshot: restore instead of booting
	}
	raiseFileLimit(cfg) // before the shares take their budget of descriptors
	if !bs.startBuilding() {
		// Stopped before the build: nothing was started to stop.
		unraw()
		cause := context.Cause(ctx)
		status, _ := stoppedStatus(cause) // a quit: 0
		if line := stopBeforeStart(cause); line != "" {
			fmt.Fprintf(stderr, "%s\n", line)
		}
		return status
	}
	m, err := boot(cfg)
	if !bs.started() {
		// A stop during the build is ending vmm (fireEarly), with the
		// cleanups this function would have run.
		select {}
	}
	if err != nil {
		unraw() // the one line in the terminal's own mode
		fmt.Fprintf(stderr, "vmm: %s\n", errLine(err))
		return 1
	}
	defer m.Close()
	if job != nil {
		// A stop meanwhile is the run's to report (m.Run returns at
		// once), not the helper's.
		if err := job.ready(ctx); err != nil && ctx.Err() == nil {
			unraw()
			fmt.Fprintf(stderr, "vmm: %s\n", errLine(err))
			return 1
		}
	}
	releaseLoadMemory(&cfg)
	if err := enterSandbox(o, cfg, endTerm); err != nil {
		unraw()
		fmt.Fprintf(stderr, "vmm: %s\n", errLine(err))
		return 1
	}
	err = m.Run(ctx)
	m.Close() // disks flushed and closed before their files are read
	cause := context.Cause(ctx)
	var se signalError
	var te errTimeout
	switch {
	case err == nil:
		status, reported := m.ExitStatus()
		if job != nil {
			if err := job.collect(ctx, func(msg string) { cfg.Logf("%s", msg) }); err != nil {
				// The failed -out decides the status (its files are not
				// all there), but the job's own is said with it.
				jobSaid := ""
				if reported {
					jobSaid = fmt.Sprintf(" (the job exited with status %d)", status)
				}
				fmt.Fprintf(stderr, "vmm: %s%s\n", errLine(err), jobSaid)
				// -timeout or a signal stopped the extraction: the
				// status says so, as it would have during the run.
				switch cause := context.Cause(ctx); {
				case errors.As(cause, &te):
					return exitTimeout
				case errors.As(cause, &se):
					return 128 + int(se.sig)
				}
				return 1
			}
			if !reported {
				why := ""
				if m.Reason() == machine.StopReboot {
					// runCmdline's panic=-1: a panic is on the console.
					why = " (vmm run's guest reboots on a kernel panic: see the console above)"
				}
				if cfg.Initrd == "" && o.snapshot == "" {
					// The job is started by vmm-init, which only an
					// initramfs brings: without one the kernel finds no
					// root (the panic above) or boots some other init.
					why += "; no -initrd was given, and vmm run's job is started by vmm's init from its initramfs (make guest builds build/guest-cloud/initrd.cpio)"
				}
				fmt.Fprintf(stderr, "vmm: guest stopped (%v) without reporting the job's exit status%s\n", m.Reason(), why)
				return exitNoStatus
			}
		}
		if !reported {
			return 0 // a poweroff or reboot
		}
		return status
	case errors.Is(cause, errQuit):
		return 0
	case errors.As(cause, &te):
		unraw()
		why := ""
		if m.KVMNote() != "" {
			// A distro kernel may run on such a KVM until the
			// deadline without one exit: point back at why.
			why = " (this host's KVM has no hardware virtualization: see the warning above)"
		}
		fmt.Fprintf(stderr, "%svmm: %v%s%s\n", host.sep(), te, why, placesNote(m.Places()))
		return exitTimeout
	case errors.As(cause, &se):
		unraw()
		fmt.Fprintf(stderr, "%svmm: stopped by %v\n", host.sep(), se.sig)
		return 128 + int(se.sig)
	}
	unraw()
	fmt.Fprintf(stderr, "%svmm: %s\n", host.sep(), errLine(err))
	printBugStack(stderr, err)
	return 1
}

// placesNote says where each vCPU was when -timeout stopped the guest,
// for the end of the line that says so: a job that missed its deadline
// because its kernel hung with interrupts off (RIP in the kernel, which
// System.map or a vmlinux names) looks the same on the console as one
// that was merely slow, and this tells them apart. A vCPU whose
// registers were unreadable is left out.
func placesNote(places []machine.VCPUPlace) string {
	var b strings.Builder
	for id, p := range places {
		if p.Known {
			fmt.Fprintf(&b, "; vCPU %d was at %v", id, p)
		}
	}
	return b.String()
}

// printBugStack writes, if err is a bug in vmm (machine.BugError), its
// stack: lines for the bug report, after the one that says what.
func printBugStack(w io.Writer, err error) {
	var bug *machine.BugError
	if errors.As(err, &bug) {
		fmt.Fprintf(w, "%s\n", bug.Stack)
	}
}

// releaseLoadMemory gives back to the kernel the heap that building the
// machine needed and the running guest does not: the kernel image read
// whole (14 MiB for Debian's cloud kernel; its vmlinux, with the kernel
// cache, is some 50 MiB) and the job's appended initramfs are in guest
// memory now. Left to itself the runtime would keep those pages until
// its next collection, which an idle guest may not cause for minutes,
// and then hand them back only gradually; one forced collection costs
// milliseconds with the small heap left (issue 12).
func releaseLoadMemory(cfg *machine.Config) {
	cfg.InitrdAppend = nil // the bootReport closure keeps cfg alive
	debug.FreeOSMemory()
}

var errQuit = errors.New("quit from the console")

type errTimeout struct{ d time.Duration }

func (e errTimeout) Error() string { return fmt.Sprintf("guest stopped: -timeout %v reached", e.d) }

type signalError struct{ sig unix.Signal }

// armStops makes -timeout (errTimeout, if timeout is set) and SIGINT,
// SIGTERM or SIGHUP (signalError) cancel ctx with their cause, which is
// how vmm, vmm run and vmm snapshot all stop; the returned func disarms
// both. The signal goroutine ends with ctx.
func armStops(ctx context.Context, cancel context.CancelCauseFunc, timeout time.Duration) (disarm func()) {
	var t *time.Timer
	if timeout > 0 {
		t = time.AfterFunc(timeout, func() { cancel(errTimeout{timeout}) })
	}
	sigs := make(chan os.Signal, 1)
	// A signal vmm was started ignoring stays ignored: `nohup vmm`
	// (SIGHUP) and `vmm &` from a script (SIGINT) must outlive the
	// terminal and its Ctrl-C, as other programs do; Notify would
	// start catching it again (os/signal).
	var stops []os.Signal
	for _, sig := range []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP} {
		if !signal.Ignored(sig) {
			stops = append(stops, sig)
		}
	}
	signal.Notify(sigs, stops...)
	go func() {
		select {
		case s := <-sigs:
			cancel(signalError{s.(unix.Signal)})
		case <-ctx.Done():
		}
	}()
	return func() {
		if t != nil {
			t.Stop()
		}
		signal.Stop(sigs)
	}
}

func (e signalError) Error() string { return "stopped by " + e.sig.String() }
