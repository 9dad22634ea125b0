package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/devices/boottimer"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/hostout"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/snapshot"
)

// `vmm snapshot [vm flags] [-out-size SIZE] -o DIR` boots a guest whose
// init waits for a job (guestabi.WaitParam) and saves it there; `vmm run
// -snapshot DIR ... -- CMD` restores it and hands it CMD. Every snapshot
// carries a scratch disk for -out as its last disk and two virtio-fs
// slots after any -fs shares, one for -share and one for -rootfs
// (jobShareSlots), so a restored job can use each of them or not: the
// waiting guest has probed the devices but mounted nothing, so each run
// may serve another directory in a slot.

// jobShareSlots are the shares every snapshot ends with, served from dir
// (an empty directory) where a run does not ask for them.
func jobShareSlots(dir string) []machine.Share {
	return []machine.Share{
		{Dir: dir, Tag: guestabi.JobShareTag},
		{Dir: dir, Tag: guestabi.JobRootTag, ReadOnly: true},
	}
}

// jobSlotTags names, by tag, the shares of vmm run that every snapshot
// holds a slot for (jobShareSlots): no -fs may take their tags, in vmm
// run or in vmm snapshot.
func jobSlotTags() map[string]string {
	return map[string]string{guestabi.JobShareTag: "vmm run's -share", guestabi.JobRootTag: "vmm run's -rootfs"}
}

// fillShareSlots appends to cfg.Shares the snapshot's slots, each with
// the directory of the share in asked that has its tag, or else empty,
// served read-only: a job that mounts a slot its run did not ask for
// must not fill the host's temporary directory.
func fillShareSlots(cfg *machine.Config, asked []machine.Share, empty string) {
	for _, slot := range jobShareSlots(empty) {
		used := false
		for _, a := range asked {
			if a.Tag == slot.Tag {
				slot.Dir, slot.Flag, used = a.Dir, a.Flag, true
			}
		}
		slot.ReadOnly = slot.ReadOnly || !used
		cfg.Shares = append(cfg.Shares, slot)
	}
}

// addSnapshotFlags adds vmm snapshot's own flags to vmm's: they are
// read by the same parser as the others, so a flag's value that looks
// like one of them (-append -o) stays the value.
func addSnapshotFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVarP(&o.snapDir, "output", "o", "", "save the snapshot in `DIR` (created if missing; required)")
	fs.StringVar(&o.outSize, "out-size", defaultOutSize, "the -out disk of every run restored from the snapshot: the most -out can bring back")
	fs.StringVar(&o.verify, "verify", "", "boot nothing: check the snapshot in `DIR` whole, every byte of its memory file against its manifest's hash (a restore checks a sample of pages), and exit 0 if it is intact, 1 if not")
}

func snapshotUsage(fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: vmm snapshot -kernel BZIMAGE -initrd INITRD [vm flags] [-out-size SIZE] -o DIR\n")
	fmt.Fprintf(w, "       vmm snapshot -verify DIR\n\n")
	fmt.Fprintf(w, "Boots the guest until its init waits for a job and saves it in DIR, for\n")
	fmt.Fprintf(w, "`vmm run -snapshot DIR [flags] -- CMD`. -m, -smp, -disk, -tap, -nic and -fs must be given\n")
	fmt.Fprintf(w, "again, the same, to each run. -out-size fixes the -out disk of every run.\n\n")
	fs.PrintDefaults()
}

func snapshotMain(start time.Time, args []string, stdout, stderr io.Writer) int {
	cfg, o, err := parseOptions(options{snap: true}, args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(helpError)) {
		fmt.Fprintf(stderr, "vmm snapshot: %s\n", errLine(err))
		return 1
	}
	if err == nil {
		for _, sh := range cfg.Shares {
			if owner, taken := jobSlotTags()[sh.Tag]; taken {
				err = fmt.Errorf("-fs %s,tag=%s: tag %q is taken by the snapshot's slot for %s", sh.Dir, sh.Tag, sh.Tag, owner)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "vmm snapshot: %s\n", errLine(err))
		return 2
	}
	if o.verify != "" {
		return verifySnapshot(o.verify, stderr)
	}
	dir := o.snapDir
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// From here on every byte for stderr, the guest's console and vmm's
	// messages alike, goes through a queue, as in vmm run (hostIO): a
	// vCPU writing the console must never wait on a reader that stopped
	// reading, or neither -timeout nor a signal could end vmm snapshot.
	// At exit the queue drains while its reader keeps taking it, and
	// for messageGrace after a stop.
	out := hostout.New(stderr, consoleQueue)
	msgDone, stopMsgs := afterGrace(ctx, messageGrace)
	defer func() {
		_ = out.Drain(msgDone, consoleStall)
		out.Close()
		stopMsgs()
	}()
	stderr = out
	if o.bootTimer {
		cfg.BootTimer = boottimer.New(start)
		defer func() {
			cfg.BootTimer.Mark(guestabi.VMMExit)
			cfg.BootTimer.WriteReport(stderr)
		}()
	}
	// The directory is made (or found writable) before the boot, not
	// when the snapshot is written: a path it cannot go to fails at once.
	// One made here is removed again if no snapshot is saved in it, so a
	// failed run (a missing kernel, a guest that never waits) leaves
	// nothing behind.
	made := outermostMissing(dir)
	err = makeWritableDir("-o", dir)
	if err == nil {
		// Refused now rather than by every restore.
		err = snapshot.CheckDir(dir)
	}
	if err != nil {
		if made != "" {
			removeUnsaved(dir, made) // made, then found not writable
		}
		fmt.Fprintf(stderr, "vmm snapshot: %s\n", errLine(err))
		return 1
	}
	defer armStops(ctx, cancel, o.timeout)()
	if err := makeSnapshot(ctx, cfg, dir, int64(o.outBytes), stderr); err != nil {
		if made != "" {
			removeUnsaved(dir, made)
		}
		// The statuses of vmm's own -timeout and signal stops.
		var te errTimeout
		var se signalError
		switch cause := context.Cause(ctx); {
		case errors.As(cause, &te):
			fmt.Fprintf(stderr, "vmm snapshot: %v before the guest's init waited for a job\n", te)
			return exitTimeout
		case errors.As(cause, &se):
			fmt.Fprintf(stderr, "vmm snapshot: %v\n", se)
			return 128 + int(se.sig)
		}
		fmt.Fprintf(stderr, "vmm snapshot: %s\n", errLine(err))
		printBugStack(stderr, err)
		return 1
	}
	return 0
}

// verifySnapshot checks every byte of the snapshot in dir (vmm snapshot
// -verify): a snapshot copied between machines, or kept for long, can
// be damaged where a restore's sampled pages do not look.
func verifySnapshot(dir string, stderr io.Writer) int {
	s, err := snapshot.Open(dir)
	if err == nil {
		defer s.Close()
		if err = s.Verify(); err != nil {
			err = fmt.Errorf("snapshot %s: %w", dir, err)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "vmm snapshot: %s\n", errLine(err))
		return 1
	}
	m := s.Manifest
	fmt.Fprintf(stderr, "vmm snapshot: %s is intact: %d MiB, %d vCPUs, made %s by vmm %s\n", oneLine(dir), m.MemSize>>20, m.CPUs, m.Created.Format(time.RFC3339), oneLine(m.VMMVersion))
	if m.VMMVersion != vmmVersion() {
		fmt.Fprintf(stderr, "vmm snapshot: this vmm (%s) will not restore it: make it again with this build\n", vmmVersion())
	}
	return 0
}

// outermostMissing returns the outermost directory on dir's path that
// does not exist (dir itself, or a parent -o's MkdirAll makes too), or
// "" if dir exists.
func outermostMissing(dir string) string {
	top := ""
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			return top
		}
		top = d
		if filepath.Dir(d) == d {
			return top
		}
	}
}

// removeMade removes the empty directories from d up to top, which a
// failed vmm snapshot made on the way to its -o: /tmp/a/b/snap leaves
// no /tmp/a behind. A directory something else was put in stays.
func removeMade(d, top string) {
	for ; len(d) >= len(top) && d != filepath.Dir(d); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			return
		}
	}
}

// removeUnsaved removes a snapshot directory this run made and saved no
// snapshot in, and the parents made on the way up to made
// (outermostMissing, before), each only if empty: a failed
// snapshot.Write removes its own files, and files there now are another
// run's (two vmm snapshot -o of one new directory both find it missing).
func removeUnsaved(dir, made string) {
	removeMade(filepath.Clean(dir), made)
}

// makeSnapshot boots the guest until its init waits for a job and saves
// it in dir; ctx ends the boot early (-timeout, a signal).
func makeSnapshot(ctx context.Context, cfg machine.Config, dir string, outSize int64, stderr io.Writer) error {
	scratch, scratchPath, err := scratchDisk("vmm-snapshot-out-*.img", outSize)
	if err != nil {
		return fmt.Errorf("-out disk: %w", err)
	}
	defer removeScratch(scratch, scratchPath)
	cfg.Disks = append(cfg.Disks, machine.Disk{Path: scratchPath, Serial: guestabi.OutSerial})
	empty, releaseEmpty, err := lockedEmptyDir("vmm-snapshot-slot-*")
	if err != nil {
		return fmt.Errorf("share slots: %w", err)
	}
	defer releaseEmpty()
	fillShareSlots(&cfg, nil, empty)
	cfg.Cmdline += " " + guestabi.WaitParam // after runCmdline and -append (parseOptions)
	cfg.SaveOnWait = true
	cfg.JobOutput = io.Discard
	// The job's input port, where it fits: its probe is paid here, once,
	// and every restored job with piped stdin gets its input through it.
	cfg.JobInputPort = machine.JobInputPortFits(cfg, 0)
	cfg.Console = stderr
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, "vmm: %s\n", oneLine(fmt.Sprintf(format, args...)))
	}

	man := snapshot.Manifest{VMMVersion: vmmVersion(), Created: time.Now().UTC()}
	if man.Kernel, err = snapshot.HashFile(cfg.Kernel); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	if cfg.Initrd != "" {
		id, err := snapshot.HashFile(cfg.Initrd)
		if err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
		man.Initrd = &id
	}
	m, err := machine.New(cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Run(ctx); err != nil {
		return err
	}
	if r := m.Reason(); r != machine.StopSnapshot {
		return fmt.Errorf("guest stopped (%v) before its init waited for a job: does the initramfs run vmm's guest init (make guest)?", r)
	}
	if err := m.Snapshot(dir, man); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "vmm: snapshot of a %d MiB guest saved in %s\n", cfg.MemSize>>20, oneLine(dir))
	return nil
}

// vmmVersion names this build of vmm for the manifest: a snapshot holds
// vmm's device state in vmm's encoding, so only the build that made it
// restores it. It is the VCS revision the binary was built from (with
// "+dirty" for a modified tree), else the module version, for people to
// read; then a digest of the binary's Go build ID, which is what tells
// builds apart: without it two builds of different trees were the same
// vmm whenever the VCS said nothing (go build -buildvcs=false, a tree
// outside git: "(devel)") or the same "+dirty" revision.
func vmmVersion() string {
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		switch {
		case rev == "":
			v = bi.Main.Version + " " + bi.GoVersion
		case dirty:
			v = rev + "+dirty"
		default:
			v = rev
		}
	}
	if id := goBuildID("/proc/self/exe"); id != "" {
		sum := blake2b.Sum256([]byte(id))
		v += " build " + hex.EncodeToString(sum[:6])
	}
	return v
}

// goBuildID reads the Go build ID (what go tool buildid prints) of the
// executable at path, or "" if it has none. The Go linker stores it in an
// ELF note named "Go" of type 4 (cmd/link's ELF_NOTE_GOBUILDID_TAG)
// within the file's first pages, which is where the go command looks for
// it too: 32 KiB are read, not the binary.
func goBuildID(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 32<<10)
	n, _ := io.ReadFull(f, b)
	b = b[:n]
	// Elf64_Nhdr: n_namesz, n_descsz, n_type (4 bytes each, the
	// host's order), then the name padded to 4 bytes, then the desc.
	const maxID = 512
	tail := []byte("\x04\x00\x00\x00Go\x00\x00") // n_type 4, name "Go"
	for off := 0; ; {
		i := bytes.Index(b[off:], tail)
		if i < 0 {
			return ""
		}
		i += off
		off = i + 1
		if i < 8 || binary.LittleEndian.Uint32(b[i-8:]) != 4 {
			continue // n_namesz must be 4: "Go\0" padded
		}
		size := int(binary.LittleEndian.Uint32(b[i-4:]))
		start := i + len(tail)
		if size == 0 || size > maxID || start+size > len(b) {
			continue
		}
		return string(b[start : start+size])
	}
}

// checkVersion refuses a snapshot another vmm build made.
func checkVersion(man snapshot.Manifest, ours string) error {
	if man.VMMVersion != ours {
		return fmt.Errorf("snapshot was made by vmm %s, this is vmm %s: make it again with this vmm", man.VMMVersion, ours)
	}
	return nil
}

// outDevice is the snapshot's -out disk: its last disk, which vmm
// snapshot made with guestabi.OutSerial.
func outDevice(devs []snapshot.Device) (snapshot.Device, bool) {
	for i := len(devs) - 1; i >= 0; i-- {
		if devs[i].Kind == "blk" {
			return devs[i], devs[i].Serial == guestabi.OutSerial
		}
	}
	return snapshot.Device{}, false
}

// prepareRestore is prepareJob for -snapshot: the snapshot opened and
// checked, this run's scratch disk for -out in the slot the snapshot
// has for it, and a boot function that restores the machine and sends
// the job, host entropy and the host's clock ahead of the job's stdin.
func prepareRestore(cfg *machine.Config, o options, spec guestabi.Spec) (*jobFiles, error) {
	n := len(cfg.Shares)
	if err := addJobShares(cfg, &spec, o); err != nil {
		return nil, err
	}
	asked := slices.Clone(cfg.Shares[n:])
	cfg.Shares = cfg.Shares[:n]
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	snap, err := snapshot.Open(o.snapshot)
	if err != nil {
		return nil, err
	}
	j := &jobFiles{snap: snap}
	fail := func(err error) (*jobFiles, error) {
		j.remove()
		return nil, fmt.Errorf("snapshot %s: %w", o.snapshot, err)
	}
	if err := checkVersion(snap.Manifest, vmmVersion()); err != nil {
		return fail(err)
	}
	out, ok := outDevice(snap.Manifest.Devices)
	if !ok {
		return fail(errors.New("has no -out disk: it was not made by vmm snapshot"))
	}
	if j.emptyDir, j.releaseEmpty, err = lockedEmptyDir("vmm-slot-*"); err != nil {
		return fail(fmt.Errorf("share slots: %w", err))
	}
	fillShareSlots(cfg, asked, j.emptyDir)
	j.outSize = out.Capacity
	if j.outFile, j.outDisk, err = scratchDisk("vmm-out-*.img", j.outSize); err != nil {
		return fail(fmt.Errorf("-out: scratch disk: %w", err))
	}
	if o.out != "" {
		if err := makeWritableDir("-out", o.out); err != nil {
			return fail(err)
		}
		j.outDir = o.out
		if err := j.startCollector(o); err != nil {
			return fail(err)
		}
	}
	cfg.Disks = append(cfg.Disks, machine.Disk{Path: j.outDisk, Serial: guestabi.OutSerial})
	// The snapshot's input port is part of its machine whether or not
	// this job uses it; the job's input goes there when it is piped and
	// the snapshot's init found the port.
	cfg.JobInputPort = slices.Contains(snap.Manifest.Devices, snapshot.Device{Kind: "console", Tag: guestabi.JobInputPort})
	spec.StdinPort = spec.StdinPort && cfg.JobInputPort && snap.Manifest.JobInputPort
	if err := machine.CheckSnapshot(*cfg, snap.Manifest); err != nil {
		return fail(err)
	}
	j.boot = func(c machine.Config) (guest, error) {
		msg := guestabi.JobMessage{Spec: spec, Entropy: make([]byte, guestabi.EntropySize)}
		// The kernel's CSPRNG itself (getrandom(2), which blocks only
		// until it is seeded): crypto/rand would link Go's FIPS 140
		// module for the same bytes (see package snapshot).
		if n, err := unix.Getrandom(msg.Entropy, 0); err != nil || n != len(msg.Entropy) {
			return nil, fmt.Errorf("host entropy: %d of %d bytes: %v", n, len(msg.Entropy), err)
		}
		msg.UnixNano = time.Now().UnixNano()
		b, err := guestabi.EncodeJobMessage(msg)
		if err != nil {
			return nil, err
		}
		in := io.Reader(bytes.NewReader(b))
		switch {
		case spec.StdinPort:
			// The message on the serial port, the input on the
			// port the message tells the init to open.
			c.JobPortInput = c.JobInput
		case c.JobInput != nil:
			in = io.MultiReader(in, c.JobInput)
		}
		c.JobInput = in
		m, err := machine.Restore(c, snap)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", o.snapshot, err)
		}
		return m, nil
	}
	return j, nil
}
