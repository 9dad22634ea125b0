package snapshot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/vmm-dev/vmm/internal/pack/packtest"
)

func testManifest(size uint64) Manifest {
	return Manifest{
		VMMVersion: "test", Created: time.Unix(1700000000, 0).UTC(),
		Kernel:  FileID{Path: "/k", Hash: "00", Size: 1},
		Cmdline: "console=ttyS0", MemSize: size, CPUs: 2,
		Devices: []Device{{Kind: "blk", Serial: "vmm-out", Capacity: 1 << 20}, {Kind: "net", MAC: "52:54:00:00:00:01"}, {Kind: "console", Tag: "vmm.job-stdout"}},
		HostCPU: "GenuineIntel fpu sse2",
	}
}

func testRegions() [][]byte {
	a := make([]byte, 8*PageSize)
	b := make([]byte, 4*PageSize)
	a[5] = 1
	a[3*PageSize+7] = 2
	b[len(b)-1] = 3
	return [][]byte{a, b}
}

func TestWriteOpenRoundTrip(t *testing.T) {
	dir := t.TempDir()
	regions := testRegions()
	m := testManifest(12 * PageSize)
	state := []byte(`{"vcpus":[]}`)
	if err := Write(dir, m, state, regions); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !bytes.Equal(s.State, state) || s.Manifest.Cmdline != m.Cmdline || len(s.Manifest.Devices) != 3 || s.Manifest.Devices[2] != m.Devices[2] {
		t.Errorf("opened %+v / %q", s.Manifest, s.State)
	}
	if err := s.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, MemoryFile))
	if err != nil {
		t.Fatal(err)
	}
	ram := append(append([]byte(nil), regions[0]...), regions[1]...)
	sum := blake2b.Sum256(ram)
	if !bytes.Equal(got, append(ram, trailer(sum[:])...)) {
		t.Error("memory file is not the regions then the trailer naming their hash")
	}
	// Sparse: the zero pages take no blocks (where the file system
	// supports holes, as tmpfs and ext4 do).
	var st os.FileInfo
	if st, err = os.Stat(filepath.Join(dir, MemoryFile)); err == nil {
		if blocks := blocksOf(st); blocks > 0 && blocks*512 >= int64(len(got)) {
			t.Errorf("memory file takes %d bytes on disk for %d with 3 non-zero pages: not sparse", blocks*512, len(got))
		}
	}
	// Only the two files, each the owner's alone: the memory file is
	// the guest's RAM, and read-only, as restored vmms map it.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %v, want the state and memory files only", entries)
	}
	for _, e := range entries {
		want := os.FileMode(0o600)
		if e.Name() == MemoryFile {
			want = 0o400
		}
		if info, err := e.Info(); err != nil || info.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", e.Name(), info.Mode(), err, want)
		}
	}
}

// Every kind of damage is refused by Open with one error.
func TestOpenRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"state truncated", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, StateFile), -1) }, "corrupt or truncated"},
		{"state bit flip", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, StateFile), 40) }, "checksum mismatch"},
		{"memory truncated", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, MemoryFile), -PageSize) }, "memory file is"},
		{"memory changed", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, MemoryFile), 5) }, "sampled pages"},
		{"memory missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, MemoryFile)) }, "no such file"},
		{"trailer damaged", func(t *testing.T, dir string) { flip(t, filepath.Join(dir, MemoryFile), 12*PageSize+1) }, "no trailer"},
		{"trailer of other RAM", func(t *testing.T, dir string) {
			flip(t, filepath.Join(dir, MemoryFile), 12*PageSize+int64(len(memoryMagic)))
		}, "different saves"},
		{"not a snapshot", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, StateFile), []byte("hello"), 0o644) }, "corrupt"},
		{"no state file", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, StateFile)) }, "not a snapshot: it has no state file (vmm snapshot -o DIR makes one)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := Write(dir, testManifest(12*PageSize), []byte("{}"), testRegions()); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir)
			s, err := Open(dir)
			if err == nil {
				s.Close()
				t.Fatal("Open accepted a damaged snapshot")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open: %v; want one line with %q", err, tc.want)
			}
		})
	}
}

func TestParseRefusesOtherFormat(t *testing.T) {
	b, err := Encode(testManifest(PageSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	b[8] = FormatVersion + 1
	if _, _, err := Parse(b); err == nil || !strings.Contains(err.Error(), "format") || errors.Is(err, ErrCorrupt) {
		t.Errorf("Parse: %v, want a format refusal", err)
	}
}

func TestSampleOffsets(t *testing.T) {
	for _, tc := range []struct {
		size  uint64
		n     int
		first uint64
		last  uint64
	}{
		{PageSize, 1, 0, 0},
		{10 * PageSize, 10, 0, 9 * PageSize},
		{1 << 30, sampleCount, 0, 1<<30 - PageSize},
	} {
		got := SampleOffsets(tc.size)
		if len(got) != tc.n || got[0] != tc.first || got[len(got)-1] != tc.last {
			t.Errorf("SampleOffsets(%d) = %d offsets %v..%v, want %d %v..%v", tc.size, len(got), got[0], got[len(got)-1], tc.n, tc.first, tc.last)
		}
	}
}

func FuzzParse(f *testing.F) {
	// A manifest Parse accepts: its memory file as large as its RAM.
	m := testManifest(PageSize)
	m.Memory.Size = PageSize
	good, err := Encode(m, []byte(`{"x":1}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("VMMSNAP\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, state, err := Parse(b)
		if err != nil {
			return
		}
		// What parses re-encodes to a file that parses to the same.
		again, err := Encode(m, state)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, state2, err := Parse(again)
		if err != nil || !bytes.Equal(state, state2) || m2.MemSize != m.MemSize {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func truncate(t *testing.T, path string, by int64) {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil { // the memory file is 0400
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()+by); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	if err := os.Chmod(path, 0o600); err != nil { // the memory file is 0400
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestManifestRoundTrip: every field of a manifest survives Encode and
// Parse, and its layout is the one FormatVersion carries.
func TestManifestRoundTrip(t *testing.T) {
	var m Manifest
	packtest.Fill(&m)
	m.Created = time.Date(2026, 12, 5, 14, 0, 0, 0, time.UTC)
	m.MemSize, m.Memory.Size, m.CPUs = PageSize, PageSize, 1
	for i := range m.Devices {
		m.Devices[i].Kind = "blk"
	}
	b, err := Encode(m, []byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	back, state, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Created.Equal(m.Created) || string(state) != "state" {
		t.Fatalf("Created %v, state %q", back.Created, state)
	}
	back.Created = m.Created
	if !reflect.DeepEqual(back, m) {
		t.Fatalf("manifest changed in a round trip:\n got %+v\nwant %+v", back, m)
	}
	// A change to Manifest's layout changes the format: bump
	// FormatVersion and record the new layout here.
	const layout, format = "e80f347c5e4f16b0", 5
	if got := packtest.Layout(Manifest{}); got != layout || FormatVersion != format {
		t.Errorf("Manifest's layout is %s (format %d); recorded: %s for format %d", got, FormatVersion, layout, format)
	}
}

// A manifest whose checksum holds but whose contents cannot be a
// snapshot vmm wrote is refused as corrupt.
func TestParseRefusesBadManifest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *Manifest)
		want   string
	}{
		{"negative disk", func(m *Manifest) { m.Devices[0].Capacity = -1 }, "blk device of -1 bytes"},
		{"unknown device", func(m *Manifest) { m.Devices[0].Kind = "gpu" }, `device kind "gpu"`},
		{"no vCPUs", func(m *Manifest) { m.CPUs = 0 }, "0 vCPUs"},
	} {
		m := testManifest(PageSize)
		m.Memory.Size = m.MemSize
		tc.change(&m)
		b, err := Encode(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Parse(b); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want corrupt: %s", tc.name, err, tc.want)
		}
	}
}

// Two saves of the same guest whose RAM differs only where no sample
// looks: a restore that finds the state file of one and the memory file
// of the other (a new snapshot replacing the files as it reads them, or
// a save that failed between its two files) refuses them, after trying
// again in case a save was under way.
func TestOpenRefusesFilesOfTwoSaves(t *testing.T) {
	const pages = 256
	ram := func(b byte) [][]byte {
		r := make([]byte, pages*PageSize)
		r[PageSize+9] = b // page 1: SampleOffsets skips it
		return [][]byte{r}
	}
	for _, off := range SampleOffsets(pages * PageSize) {
		if off == PageSize {
			t.Fatal("page 1 is sampled: the test would not show what the trailer adds")
		}
	}
	a, b := t.TempDir(), t.TempDir()
	for dir, v := range map[string]byte{a: 1, b: 2} {
		if err := Write(dir, testManifest(pages*PageSize), []byte("state"), ram(v)); err != nil {
			t.Fatal(err)
		}
	}
	mem, err := os.ReadFile(filepath.Join(b, MemoryFile))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(a, MemoryFile))
	if err := os.WriteFile(filepath.Join(a, MemoryFile), mem, 0o400); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s, err := Open(a)
	if err == nil {
		s.Close()
		t.Fatal("Open paired one save's state with another's memory")
	}
	if !strings.Contains(err.Error(), "different saves") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Open: %v; want one line saying the files are from different saves", err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("Open gave up after %v, before trying again", d)
	}
}

// A Write that fails after its memory file is in place (here the state
// file's name is a directory, so its rename fails) takes that file away
// again: no memory file of it is left to pair with an older state.
func TestWriteFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, StateFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, testManifest(12*PageSize), []byte("state"), testRegions()); err == nil {
		t.Fatal("Write succeeded with a directory for its state file")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != StateFile {
		t.Errorf("left %v, want only the directory that was there", ents)
	}
}

// A snapshot another user could change is refused before anything in
// it is read: a directory of someone else's, or one others may write
// without the sticky bit, or a file others may write. (Checked as root
// as root too.) A directory or file its group may write passes: with
// per-user groups that is the user's own.
func TestOpenRefusesUnsafe(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		{"directory writable by others", func(t *testing.T, dir string) { chmod(t, dir, 0o777) }, "the directory has mode 777"},
		{"state writable by others", func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, StateFile), 0o602) }, "state has mode 602"},
		{"state and directory writable by group", func(t *testing.T, dir string) {
			chmod(t, dir, 0o775)
			chmod(t, filepath.Join(dir, StateFile), 0o660)
		}, ""},
		{"memory writable by others", func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, MemoryFile), 0o402) }, "memory has mode 402"},
		{"sticky directory writable by others", func(t *testing.T, dir string) { chmod(t, dir, os.ModeSticky|0o777) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snap")
			if err := Write(dir, testManifest(12*PageSize), []byte("state"), testRegions()); err != nil {
				t.Fatal(err)
			}
			tc.change(t, dir)
			s, err := Open(dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v; want ErrUnsafe saying %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		euid int
		uid  uint32
		want bool
	}{
		{1000, 1000, true},
		{1000, 0, true},     // root's: root can change anything anyway
		{1000, 4242, false}, // another user's
		{0, 4242, true},     // vmm as root trusts every owner
	} {
		if got := trusts(tc.euid, tc.uid); got != tc.want {
			t.Errorf("vmm as %d, file of %d: trusted %v, want %v", tc.euid, tc.uid, got, tc.want)
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	// As root: a snapshot of another user's (sudo vmm run -snapshot
	// ~/snap) opens.
	dir := filepath.Join(t.TempDir(), "snap")
	if err := Write(dir, testManifest(12*PageSize), []byte("state"), testRegions()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, StateFile), filepath.Join(dir, MemoryFile)} {
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open of another user's snapshot as root: %v", err)
	}
	s.Close()
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
