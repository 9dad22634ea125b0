package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/fdpath"
	"github.com/vmm-dev/vmm/internal/helperbin"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/runjob"
)

// runCmdline keeps the kernel's boot messages off the console in `vmm
// run`, where the console is stderr beside the job's own messages, and
// makes a kernel panic (an initramfs without an init, an init that
// dies, a job that crashes the kernel) reboot the guest at once, which
// ends the run with exitNoStatus and the panic on stderr: Debian's
// kernels are built with CONFIG_PANIC_TIMEOUT=0, which spins after a
// panic until -timeout or a signal, and vmm has no pvpanic device to
// hear of it otherwise. Firecracker's documented boot arguments and
// virtme-ng do the same. -append panic=0 undoes it (a later parameter
// wins).
const runCmdline = "quiet panic=-1"

// exitNoStatus is `vmm run`'s status when the guest ended without
// reporting the job's status (it powered off, rebooted, or its init does
// not know the exit port): 125, as `docker run` uses for "the job never
// produced a status of its own".
const exitNoStatus = 125

// defaultOutSize bounds what -out can bring back. The scratch disk is a
// sparse file, so only what the guest writes takes host space.
const defaultOutSize = "1G"

func addRunFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.share, "share", "", "share host directory `DIR` with the job at /share, live and read-write over virtio-fs: what the job writes there is on the host when vmm exits; the job starts there")
	fs.StringVar(&o.rootfs, "rootfs", "", "run the job with host directory `DIR` (usually /) as its root: read-only over virtio-fs under a tmpfs overlay that takes its writes, fresh /proc, /sys, /dev, /tmp; the job starts in the current directory with the host's PATH")
	fs.StringVar(&o.out, "out", "", "after the job, copy the guest's /out into host directory `DIR` (created if missing)")
	fs.StringVar(&o.outSize, "out-size", defaultOutSize, "the most -out can bring back (256M, 2G; a plain number is MiB)")
	fs.StringArrayVar(&o.env, "env", nil, "`KEY=VALUE` for the job's environment (repeatable)")
	fs.StringVar(&o.snapshot, "snapshot", "", "restore the guest saved in `DIR` by vmm snapshot instead of booting one (no -kernel needed; -m, -smp, -disk, -tap, -nic and -fs must be those the snapshot was made with)")
}

func runUsage(fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: vmm run -kernel BZIMAGE -initrd INITRD [flags] [--] CMD [ARGS...]\n\n")
	fmt.Fprintf(w, "Boots a fresh VM, runs CMD in it and exits with CMD's exit status.\n")
	fmt.Fprintf(w, "CMD's stdin and stdout are vmm's (each through a virtio-console port when a pipe or\n")
	fmt.Fprintf(w, "a file, else through the guest's ttyS1); its stderr and the\n")
	fmt.Fprintf(w, "guest's console go to vmm's stderr. CMD waits while stdout is not read; if stdout\n")
	fmt.Fprintf(w, "is closed, CMD's further output is discarded. Status: CMD's own; 125 if the guest stopped\n")
	fmt.Fprintf(w, "without reporting one; 124 on -timeout; 128+N on signal N; 1 or 2 for vmm's errors.\n")
	fmt.Fprintf(w, "The initramfs must run vmm's guest init (make guest builds one).\n\n")
	fs.PrintDefaults()
}

// jobFiles is what `vmm run` creates on the host for one job.
type jobFiles struct {
	outDir  string
	outDisk string // scratch disk the guest writes /out to (scratchDisk)
	outFile *os.File
	outSize int64
	// collector is the helper that unpacks the disk into outDir once
	// the job is done (startCollector).
	collector *runjob.Collector
	// boot, for -snapshot, restores the snapshot instead of booting;
	// snap is the opened snapshot, closed by remove.
	boot bootFunc
	snap io.Closer
	// emptyDir, for -snapshot, serves the snapshot's share slots this
	// run does not use; releaseEmpty removes it at exit
	// (lockedEmptyDir).
	emptyDir     string
	releaseEmpty func()
	// removed makes remove run once: runMode defers it, and the
	// backstop (backstop.go) may call it meanwhile.
	removed sync.Once
}

// makeWritableDir makes dir, the directory of flag (-out, -o), or finds
// it, and checks vmm may write in it, before the guest runs rather than
// when its results are saved: a path they cannot go to (a file, a place
// vmm may not write) then fails in a second instead of after the whole
// job, whose output would be lost. A job that fails leaves it, empty if
// it was new.
func makeWritableDir(flag, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("%s %s: not writable: %w", flag, dir, err)
	}
	return nil
}

// prepareJob turns cfg into a job VM: the job spec and shared files as an
// appended initramfs and a scratch disk for -out. runMode wires the job's
// stdin and stdout.
func prepareJob(cfg *machine.Config, o options) (*jobFiles, error) {
	spec := guestabi.Spec{Args: o.command, Env: o.env, Out: o.out != "", StdoutPort: o.stdoutPort, StderrPipe: o.stderrPipe, StdinPort: o.stdinPort}
	if o.snapshot != "" {
		return prepareRestore(cfg, o, spec)
	}
	if err := addJobShares(cfg, &spec, o); err != nil {
		return nil, err
	}
	if spec.StdinPort {
		more := 0
		if o.out != "" {
			more = 1 // -out's scratch disk, added below
		}
		spec.StdinPort = machine.JobInputPortFits(*cfg, more)
	}
	cfg.JobInputPort = spec.StdinPort
	layer, err := runjob.Layer(spec)
	if err != nil {
		return nil, err
	}
	cfg.InitrdAppend = layer
	j := &jobFiles{}
	if o.out == "" {
		return j, nil
	}
	if err := makeWritableDir("-out", o.out); err != nil {
		return nil, err
	}
	j.outDir, j.outSize = o.out, int64(o.outBytes)
	if j.outFile, j.outDisk, err = scratchDisk("vmm-out-*.img", j.outSize); err != nil {
		return nil, fmt.Errorf("-out: scratch disk: %w", err)
	}
	cfg.Disks = append(cfg.Disks, machine.Disk{Path: j.outDisk, Serial: guestabi.OutSerial})
	if err := j.startCollector(o); err != nil {
		j.remove()
		return nil, err
	}
	return j, nil
}

// startCollector starts the helper that will unpack -out (package
// runjob/outtar, in vmm-unpack), if the job has an -out: now, during
// setup, because once the sandbox is on vmm may start no process.
func (j *jobFiles) startCollector(o options) error {
	if j.outDisk == "" || j.outDir == "" {
		return nil
	}
	helper, err := helperbin.Find(runjob.OutHelper, "-out unpacks the job's files in")
	if err != nil {
		return err
	}
	j.collector, err = runjob.StartCollector(helper, j.outDisk, j.outDir, j.outSize, o.sandbox != "off")
	return err
}

// addJobShares attaches -share and -rootfs as virtio-fs shares and tells
// the guest's init where to mount them. A -rootfs job starts in the
// host's current directory when the root has it (with -rootfs / it
// always does) and looks its command up in the host's PATH; -env can
// still override PATH.
func addJobShares(cfg *machine.Config, spec *guestabi.Spec, o options) error {
	for _, f := range []struct{ flag, dir string }{{"-share", o.share}, {"-rootfs", o.rootfs}} {
		if f.dir == "" {
			continue
		}
		if st, err := os.Stat(f.dir); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		} else if !st.IsDir() {
			return fmt.Errorf("%s %s: not a directory", f.flag, f.dir)
		}
	}
	if o.share != "" {
		cfg.Shares = append(cfg.Shares, machine.Share{Dir: o.share, Tag: guestabi.JobShareTag, Flag: "-share"})
		spec.Mounts = append(spec.Mounts, guestabi.Mount{Tag: guestabi.JobShareTag, Path: guestabi.ShareDir})
	}
	if o.rootfs != "" {
		cfg.Shares = append(cfg.Shares, machine.Share{Dir: o.rootfs, Tag: guestabi.JobRootTag, ReadOnly: true, Flag: "-rootfs"})
		spec.RootTag = guestabi.JobRootTag
		spec.Dir = "/"
		if wd, err := os.Getwd(); err == nil {
			if st, err := os.Stat(filepath.Join(o.rootfs, wd)); err == nil && st.IsDir() {
				spec.Dir = wd
			}
		}
		// The host's PATH and HOME, as the job sees the host's files
		// (HOME: the go command's module and build caches, a tool's
		// configuration); -env overrides them.
		host := []string{"PATH=" + os.Getenv("PATH")}
		if home := os.Getenv("HOME"); home != "" {
			host = append(host, "HOME="+home)
		}
		spec.Env = append(host, spec.Env...)
	}
	if o.share != "" || o.rootfs != "" {
		spec.Env = append(sharerEnv(os.Geteuid(), os.Getegid()), spec.Env...)
	}
	return nil
}

// sharerEnv is what tells the job, which runs as root in the guest, whose
// files the shares hold: a vmm run by an ordinary user shows that user's
// files (virtio-fs passes owners through), and git refuses to work in a
// repository its user does not own ("detected dubious ownership": go
// build's version stamping, git describe), unless, for root, SUDO_UID
// names the owner, as sudo sets it. vmm run as root sets nothing.
func sharerEnv(euid, egid int) []string {
	if euid == 0 {
		return nil
	}
	return []string{"SUDO_UID=" + strconv.Itoa(euid), "SUDO_GID=" + strconv.Itoa(egid)}
}

// ready says whether the -out helper, if the job has one, is ready to
// unpack (runjob.Collector.Ready): called before the guest runs, so that
// a helper that cannot work fails the run before the job, not after it.
func (j *jobFiles) ready(ctx context.Context) error {
	if j.collector == nil {
		return nil
	}
	return j.collector.Ready(ctx)
}

// collect unpacks what the guest wrote to the scratch disk into -out,
// within runjob's default limits, telling warn about each entry it
// skipped. ctx is the run's: -timeout and signals stop the extraction
// as they stop the guest.
func (j *jobFiles) collect(ctx context.Context, warn func(string)) error {
	// A restored snapshot always has the scratch disk (its slot is in
	// the snapshot) whether or not this run asked for -out.
	if j.collector == nil {
		return nil
	}
	_, err := j.collector.Collect(ctx, warn)
	return err
}

func (j *jobFiles) remove() {
	j.removed.Do(func() {
		if j.collector != nil {
			j.collector.Close()
		}
		if j.outFile != nil {
			removeScratch(j.outFile, j.outDisk)
		}
		if j.snap != nil {
			j.snap.Close()
		}
		if j.releaseEmpty != nil {
			j.releaseEmpty()
		}
	})
}

// scratchDisk makes a sparse file of size bytes in the temporary
// directory for a disk vmm gives the guest and reads back itself (the
// -out disk), and returns it open with the path to hand the machine. The
// file is unlinked at once where /proc lets the machine open it through
// the descriptor (/proc/self/fd/N), so nothing is left in $TMPDIR however
// vmm ends (SIGKILL, the sandbox's end of a refused call, a crash), where
// CI runners would pile up one image per killed run; else it keeps its
// name, which removeScratch removes.
func scratchDisk(pattern string, size int64) (*os.File, string, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, "", err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, "", err
	}
	byFD, ok := fdpath.Of(f)
	if !ok {
		return f, f.Name(), nil
	}
	if err := os.Remove(f.Name()); err != nil {
		return f, f.Name(), nil
	}
	return f, byFD, nil
}

// removeScratch closes a scratchDisk and removes it if it still has a
// name.
func removeScratch(f *os.File, path string) {
	if !fdpath.Is(path) {
		os.Remove(path)
	}
	f.Close()
}
