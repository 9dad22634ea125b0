package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/snapshot"
)

// vmm snapshot's -o and -out-size are read by vmm's own parser, so a
// value that looks like them stays a value.
func TestSnapshotArgs(t *testing.T) {
	for _, tc := range []struct {
		args            []string
		dir, cmdline    string
		outBytes        uint64
		wantUsageFail   bool
		wantMemory, why string
	}{
		{args: []string{"-kernel", "bz", "-o", "d"}, dir: "d", outBytes: 1 << 30},
		{args: []string{"-kernel", "bz", "--output=d", "-m", "256M", "-out-size", "64M"}, dir: "d", outBytes: 64 << 20, wantMemory: "256M"},
		{args: []string{"-kernel", "bz", "-o=d", "-out-size=2M"}, dir: "d", outBytes: 2 << 20},
		{args: []string{"-kernel", "bz", "-output", "d"}, dir: "d", outBytes: 1 << 30},
		// -append's value is "-o", not the flag; the user's arguments
		// come after vmm run's, so they can override them.
		{args: []string{"-kernel", "bz", "-append", "-o", "-o", "d"}, dir: "d", outBytes: 1 << 30, cmdline: defaultCmdline + " " + runCmdline + " -o"},
		{args: []string{"-kernel", "bz"}, wantUsageFail: true, why: "no -o"},
		{args: []string{"-kernel", "bz", "-o"}, wantUsageFail: true, why: "-o without a value"},
		{args: []string{"-kernel", "bz", "-o", ""}, wantUsageFail: true, why: "empty -o"},
		{args: []string{"-kernel", "bz", "-o", "d", "-out-size", "1.5x"}, wantUsageFail: true, why: "bad -out-size"},
		{args: []string{"-kernel", "bz", "-o", "d", "-out-size", "1000B"}, wantUsageFail: true, why: "-out-size not whole sectors"},
		{args: []string{"-kernel", "bz", "-o", "d", "extra"}, wantUsageFail: true, why: "an argument"},
		{args: []string{"-kernel", "bz", "-o", "d", "-out-size", "8E"}, wantUsageFail: true, why: "-out-size past int64"},
		{args: []string{"-kernel", "bz", "-o", "d", "-share", "/tmp"}, wantUsageFail: true, why: "vmm run's flag"},
	} {
		cfg, o, err := parseOptions(options{snap: true}, tc.args, io.Discard)
		if tc.wantUsageFail {
			if _, ok := err.(usageError); !ok {
				t.Errorf("%q (%s): %v, want a usage error", tc.args, tc.why, err)
			}
			continue
		}
		if err != nil || o.snapDir != tc.dir || o.outBytes != tc.outBytes {
			t.Errorf("%q: dir %q, -out-size %d, %v; want %q, %d", tc.args, o.snapDir, o.outBytes, err, tc.dir, tc.outBytes)
			continue
		}
		if want := cmp.Or(tc.cmdline, defaultCmdline+" "+runCmdline); cfg.Cmdline != want {
			t.Errorf("%q: command line %q, want %q", tc.args, cfg.Cmdline, want)
		}
		if tc.wantMemory != "" && o.memory != tc.wantMemory {
			t.Errorf("%q: -m %q, want %q", tc.args, o.memory, tc.wantMemory)
		}
	}
}

// The directory given as an argument, not with -o, is a usage error
// that says where it goes; with -o given, an extra argument is only that.
func TestSnapshotDirAsArgument(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-kernel", "bz", "d"}, `unexpected argument "d" (the snapshot's directory is given with -o DIR)`},
		{[]string{"-kernel", "bz", "-o", "d", "e"}, `unexpected argument "e"`},
	} {
		_, _, err := parseOptions(options{snap: true}, tc.args, io.Discard)
		if _, ok := err.(usageError); !ok || err.Error() != tc.want {
			t.Errorf("%q: %v, want the usage error %q", tc.args, err, tc.want)
		}
	}
}

// writeTestSnapshot saves a snapshot with the given manifest and an
// empty machine state: enough for the checks before a restore.
func writeTestSnapshot(t *testing.T, man snapshot.Manifest) string {
	t.Helper()
	dir := t.TempDir()
	if man.MemSize == 0 {
		man.MemSize = 512 << 20
	}
	if man.CPUs == 0 {
		man.CPUs = 1
	}
	regions := [][]byte{make([]byte, man.MemSize)}
	if err := snapshot.Write(dir, man, []byte("{}"), regions); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Each refusal before the restore is one line naming the snapshot.
func TestPrepareRestoreRefuses(t *testing.T) {
	outDisk := snapshot.Device{Kind: "blk", Serial: guestabi.OutSerial, Capacity: 1 << 20}
	slots := []snapshot.Device{{Kind: "fs", Tag: guestabi.JobShareTag}, {Kind: "fs", Tag: guestabi.JobRootTag}}
	// vmm snapshot's job output port, last.
	port := snapshot.Device{Kind: "console", Tag: guestabi.JobOutputPort}
	good := snapshot.Manifest{VMMVersion: vmmVersion(), Devices: append(append([]snapshot.Device{outDisk}, slots...), port)}
	spec := guestabi.Spec{Args: []string{"true"}}
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		man  *snapshot.Manifest // nil: a corrupted snapshot
		cfg  machine.Config
		o    options
		want string
	}{
		{"version", &snapshot.Manifest{VMMVersion: "other", Devices: []snapshot.Device{outDisk}}, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{}, "made by vmm other"},
		{"memory", &good, machine.Config{MemSize: 256 << 20, CPUs: 1, JobOutput: io.Discard}, options{}, "-m 256 MiB, snapshot has 512 MiB"},
		{"devices", &good, machine.Config{MemSize: 512 << 20, CPUs: 1, NICs: []machine.NIC{{Tap: "x"}}, JobOutput: io.Discard}, options{}, "virtio devices asked for"},
		{"no out disk", &snapshot.Manifest{VMMVersion: vmmVersion(), Devices: slots}, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{}, "no -out disk"},
		{"no share slots", &snapshot.Manifest{VMMVersion: vmmVersion(), Devices: []snapshot.Device{outDisk}}, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{}, "4 virtio devices asked for, snapshot has 1"},
		{"corrupt", nil, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{}, "corrupt or truncated"},
		{"missing share", &good, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{share: "/no/such/dir"}, "-share"},
		{"out is a file", &good, machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}, options{out: aFile}, "-out: mkdir " + aFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			if tc.man == nil {
				dir = writeTestSnapshot(t, good)
				if err := os.Truncate(filepath.Join(dir, snapshot.StateFile), 100); err != nil {
					t.Fatal(err)
				}
			} else {
				dir = writeTestSnapshot(t, *tc.man)
			}
			tc.o.snapshot = dir
			cfg := tc.cfg
			j, err := prepareRestore(&cfg, tc.o, spec)
			if err == nil {
				j.remove()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v; want one line with %q", err, tc.want)
			}
		})
	}
	// And the matching one is accepted, with the -out disk in its slot.
	dir := writeTestSnapshot(t, good)
	cfg := machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}
	j, err := prepareRestore(&cfg, options{snapshot: dir}, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer j.remove()
	if len(cfg.Disks) != 1 || cfg.Disks[0].Serial != guestabi.OutSerial || j.boot == nil {
		t.Errorf("disks %+v, boot set %v", cfg.Disks, j.boot != nil)
	}
	// Unused, both are served read-only: a job that mounts one must not
	// write into the host's temporary directory.
	wantSlots := []machine.Share{{Dir: j.emptyDir, Tag: guestabi.JobShareTag, ReadOnly: true}, {Dir: j.emptyDir, Tag: guestabi.JobRootTag, ReadOnly: true}}
	if !reflect.DeepEqual(cfg.Shares, wantSlots) {
		t.Errorf("shares without -share: %+v, want %+v", cfg.Shares, wantSlots)
	}

	// -share and -rootfs fill the slots with their directories.
	share, root := t.TempDir(), t.TempDir()
	cfg = machine.Config{MemSize: 512 << 20, CPUs: 1, JobOutput: io.Discard}
	j2, err := prepareRestore(&cfg, options{snapshot: dir, share: share, rootfs: root}, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.remove()
	wantSlots = []machine.Share{{Dir: share, Tag: guestabi.JobShareTag, Flag: "-share"}, {Dir: root, Tag: guestabi.JobRootTag, ReadOnly: true, Flag: "-rootfs"}}
	if !reflect.DeepEqual(cfg.Shares, wantSlots) {
		t.Errorf("shares with -share and -rootfs: %+v, want %+v", cfg.Shares, wantSlots)
	}
	j2.remove()
	if _, err := os.Stat(j2.emptyDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the empty slot directory is left behind: %v", err)
	}
}

// A restored job always has the snapshot's -out disk; without -out on
// this run nothing is extracted (it once tried to create "" and failed
// the job), and no helper is started for it.
func TestCollectWithoutOut(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such.img")
	for _, tc := range []struct {
		name    string
		j       *jobFiles
		wantErr string
	}{
		{"no disk", &jobFiles{}, ""},
		{"disk, no -out", &jobFiles{outDisk: missing}, ""},
		{"disk and -out", &jobFiles{outDisk: missing, outDir: t.TempDir()}, "-out: open " + missing + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.j.startCollector(options{})
			if err == nil {
				err = tc.j.collect(t.Context(), nil)
			}
			tc.j.remove()
			if got := fmt.Sprint(err); (err != nil || tc.wantErr != "") && got != tc.wantErr {
				t.Fatalf("collect: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestSnapshotBadDir: an -o the snapshot cannot be written to fails
// before the guest boots (so here, with a kernel that is not one, the
// message is about -o, not the kernel), in one line with status 1.
func TestSnapshotBadDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory others may write: whoever can could put their own
	// guest in place of the snapshot (snapshot.CheckDir).
	openDir := filepath.Join(dir, "open")
	if err := os.Mkdir(openDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, o, want string }{
		{"a file", file, "vmm snapshot: -o: mkdir " + file},
		{"under a file", filepath.Join(file, "snap"), "vmm snapshot: -o: mkdir " + file},
		{"writable by others", openDir, "vmm snapshot: snapshot " + openDir + ": the directory has mode 777"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			status := snapshotMain(time.Now(), []string{"-kernel", file, "-o", tc.o}, io.Discard, &stderr)
			msg := stderr.String()
			if status != 1 || !strings.HasPrefix(msg, tc.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("status %d, stderr %q; want 1 and one line starting %q", status, msg, tc.want)
			}
		})
	}
}

// TestSnapshotBadInput: a kernel or initrd that is not a regular file
// (a FIFO nobody writes, which open(2) would wait on for ever; /dev/zero,
// which never ends) or is missing fails at once in one line naming it,
// and an -o directory this run made is not left behind; one that was
// there before stays.
func TestSnapshotBadInput(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		o    string
		want string
	}{
		{"kernel a FIFO", []string{"-kernel", fifo}, filepath.Join(dir, "new1"), "kernel: " + fifo + ": not a regular file"},
		{"kernel /dev/zero", []string{"-kernel", "/dev/zero"}, filepath.Join(dir, "new2"), "kernel: /dev/zero: not a regular file"},
		{"initrd a FIFO", []string{"-kernel", kernel, "-initrd", fifo}, filepath.Join(dir, "new3"), "initrd: " + fifo + ": not a regular file"},
		{"kernel missing", []string{"-kernel", filepath.Join(dir, "none")}, existing, "no such file"},
		// The parents -o made on its way go too.
		{"kernel missing, -o deep", []string{"-kernel", filepath.Join(dir, "none")}, filepath.Join(dir, "p1", "p2", "snap"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			done := make(chan int, 1)
			go func() { done <- snapshotMain(time.Now(), append(tc.args, "-o", tc.o), io.Discard, &stderr) }()
			var status int
			select {
			case status = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("vmm snapshot did not return")
			}
			msg := stderr.String()
			if status != 1 || !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("status %d, stderr %q; want 1 and one line containing %q", status, msg, tc.want)
			}
			_, err := os.Stat(tc.o)
			if tc.o == existing && err != nil {
				t.Errorf("the existing -o directory: %v", err)
			}
			if tc.o != existing && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("-o %s left behind: %v", tc.o, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "p1")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("-o's parent %s left behind: %v", filepath.Join(dir, "p1"), err)
			}
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("the directory -o was made in: %v", err)
			}
		})
	}
}

// vmm snapshot -verify reads every byte: a page a restore's sample
// misses, changed, fails it with status 1; an intact snapshot passes,
// with a line saying whether this build restores it.
func TestSnapshotVerify(t *testing.T) {
	const pages = 1024
	man := snapshot.Manifest{VMMVersion: vmmVersion(), MemSize: pages * snapshot.PageSize, CPUs: 1}
	ram := make([]byte, man.MemSize)
	for i := range ram {
		ram[i] = byte(i / snapshot.PageSize)
	}
	dir := t.TempDir()
	if err := snapshot.Write(dir, man, []byte("{}"), [][]byte{ram}); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	if status := snapshotMain(time.Now(), []string{"-verify", dir}, io.Discard, &stderr); status != 0 || !strings.Contains(stderr.String(), "is intact") || strings.Contains(stderr.String(), "will not restore") {
		t.Fatalf("intact: status %d, %q", status, stderr.String())
	}
	sampled := map[uint64]bool{}
	for _, off := range snapshot.SampleOffsets(man.MemSize) {
		sampled[off] = true
	}
	off := uint64(0)
	for sampled[off] {
		off += snapshot.PageSize
	}
	mem := filepath.Join(dir, snapshot.MemoryFile)
	if err := os.Chmod(mem, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(mem, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, int64(off)+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if s, err := snapshot.Open(dir); err != nil {
		t.Fatalf("the change is in a sampled page after all: %v", err)
	} else {
		s.Close()
	}
	stderr.Reset()
	status := snapshotMain(time.Now(), []string{"-verify", dir}, io.Discard, &stderr)
	if status != 1 || !strings.Contains(stderr.String(), "does not match its hash") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("changed page: status %d, %q; want 1 and one line", status, stderr.String())
	}
	for _, args := range [][]string{{"-verify", dir, "-m", "1G"}, {"-verify", ""}, {"-verify"}} {
		stderr.Reset()
		if status := snapshotMain(time.Now(), args, io.Discard, &stderr); status != 2 {
			t.Errorf("%q: status %d, %q; want a usage error", args, status, stderr.String())
		}
	}
}

// TestGoBuildID: the build ID read from the binary's first pages is the
// one go tool buildid prints, so vmmVersion tells builds apart even when
// the VCS stamp is missing (-buildvcs=false) or the same; a file without
// one gives "".
func TestGoBuildID(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got := goBuildID(exe)
	if got == "" {
		t.Fatal("no build ID in the test binary")
	}
	if goBin := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(goBin) {
		out, err := exec.Command(goBin, "tool", "buildid", exe).Output()
		if err != nil {
			t.Fatalf("go tool buildid: %v", err)
		}
		if want := strings.TrimSpace(string(out)); got != want {
			t.Errorf("goBuildID %q, go tool buildid %q", got, want)
		}
	}
	if !strings.Contains(vmmVersion(), " build ") {
		t.Errorf("vmmVersion %q names no build", vmmVersion())
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("\x04\x00\x00\x00\x00\x10\x00\x00\x04\x00\x00\x00Go\x00\x00short"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{other, "/nonexistent", "/dev/null"} {
		if id := goBuildID(p); id != "" {
			t.Errorf("goBuildID(%s) = %q, want none", p, id)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestRemoveUnsaved: a directory a failed vmm snapshot made goes if it
// is empty (snapshot.Write removes its own files when it fails); files
// in it are another run's (two runs of one new -o both find it missing),
// and they and the directory stay.
func TestRemoveUnsaved(t *testing.T) {
	for _, files := range [][]string{
		nil,
		{snapshot.MemoryFile, snapshot.StateFile},
		{snapshot.StateFile + ".tmp-123"},
	} {
		top := filepath.Join(t.TempDir(), "a")
		dir := filepath.Join(top, "snap")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		removeUnsaved(dir, top)
		left, _ := os.ReadDir(dir)
		switch {
		case len(files) == 0:
			if _, err := os.Stat(top); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("empty directories made for -o left: %v", err)
			}
		case len(left) != len(files):
			t.Errorf("another run's %q: left %v", files, left)
		}
	}
}

// A scratch disk leaves nothing in $TMPDIR from the moment it exists, so
// a vmm killed with SIGKILL leaves no image behind, and is still a
// path the machine opens, writes and vmm reads back.
func TestScratchDiskUnlinked(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	f, path, err := scratchDisk("vmm-out-*.img", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%s holds %v while the disk is in use", tmp, left)
	}
	w, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("the machine cannot open %s: %v", path, err)
	}
	if _, err := w.WriteAt([]byte("from the guest"), 4096); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if st, err := os.Stat(path); err != nil || st.Size() != 1<<20 {
		t.Fatalf("stat %s: %v, %v; want 1 MiB", path, st, err)
	}
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 14)
	if _, err := r.ReadAt(got, 4096); err != nil || string(got) != "from the guest" {
		t.Errorf("read back %q, %v", got, err)
	}
	r.Close()
	removeScratch(f, path)
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("%s holds %v after removeScratch", tmp, left)
	}
}

// A -fs that takes the tag of one of the snapshot's own share slots is
// a usage error (status 2) naming it, before anything is made.
func TestSnapshotSlotTagsTaken(t *testing.T) {
	for _, tag := range []string{guestabi.JobShareTag, guestabi.JobRootTag} {
		var stderr strings.Builder
		o := filepath.Join(t.TempDir(), "snap")
		status := snapshotMain(time.Now(), []string{"-kernel", "k", "-fs", "/tmp,tag=" + tag, "-o", o}, io.Discard, &stderr)
		want := fmt.Sprintf("vmm snapshot: -fs /tmp,tag=%s: tag %q is taken by the snapshot's slot", tag, tag)
		if status != 2 || !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("tag %s: status %d, stderr %q; want 2 and one line starting %q", tag, status, stderr.String(), want)
		}
		if _, err := os.Lstat(o); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("tag %s: -o made: %v", tag, err)
		}
	}
}

// removeMade stops at the first directory that is not empty and never
// goes above top.
func TestRemoveMade(t *testing.T) {
	base := t.TempDir()
	top := filepath.Join(base, "a")
	if err := os.MkdirAll(filepath.Join(top, "b", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := outermostMissing(filepath.Join(top, "b", "c", "x", "y")); got != filepath.Join(top, "b", "c", "x") {
		t.Errorf("outermostMissing: %q", got)
	}
	if got := outermostMissing(top); got != "" {
		t.Errorf("outermostMissing of an existing directory: %q", got)
	}
	removeMade(filepath.Join(top, "b", "c"), top)
	if _, err := os.Stat(filepath.Join(top, "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty b: %v", err)
	}
	if _, err := os.Stat(filepath.Join(top, "keep")); err != nil {
		t.Errorf("a holding a file: %v", err)
	}
	removeMade(base, top) // above top: nothing
	if _, err := os.Stat(base); err != nil {
		t.Errorf("above top: %v", err)
	}
}

// A stderr nobody reads does not hold vmm snapshot: its console and
// messages go through a queue, which gives up on a reader that takes
// nothing for consoleStall (here the message that the kernel is none).
func TestSnapshotStalledStderr(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	stuck := &stuckWriter{release: make(chan struct{})}
	defer close(stuck.release)
	done := make(chan int, 1)
	go func() {
		done <- snapshotMain(time.Now(), []string{"-kernel", kernel, "-o", filepath.Join(dir, "snap")}, io.Discard, stuck)
	}()
	select {
	case status := <-done:
		if status != 1 {
			t.Errorf("status %d, want 1", status)
		}
	case <-time.After(consoleStall + 10*time.Second):
		t.Fatal("vmm snapshot waited on a stderr nobody reads")
	}
}

// stuckWriter's Write blocks until release is closed, as a pipe nobody
// reads does once it is full.
type stuckWriter struct{ release chan struct{} }

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}
