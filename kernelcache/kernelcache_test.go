package kernelcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/kernelimage"
	"github.com/vmm-dev/vmm/kernelimage/unpack"
)

// inProcess is the Unpack of most tests: vmm-unpack's decoding, in the
// test's process (TestHelper runs the helper).
func inProcess(payload []byte, limit int, out *os.File) error {
	return unpack.DecompressTo(out, payload, limit)
}

func key(s string) Key { return KeyOf([]byte(s)) }

func openTemp(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(filepath.Join(t.TempDir(), "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func put(t *testing.T, c *Cache, k Key, data []byte) {
	t.Helper()
	p, err := c.Create(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(data); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	c := openTemp(t)
	if _, err := c.Get(key("a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty cache: %v, want not-exist", err)
	}
	for _, data := range [][]byte{nil, []byte("vmlinux"), bytes.Repeat([]byte{1, 2, 3}, 100000)} {
		put(t, c, key("a"), data)
		v, err := c.Get(key("a"))
		if err != nil {
			t.Fatal(err)
		}
		if got := contents(t, v); !bytes.Equal(got, data) {
			t.Fatalf("got %d bytes back, stored %d", len(got), len(data))
		}
	}
	if _, err := c.Get(key("b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("other key: %v, want not-exist", err)
	}
	// Nothing but the entry is left: no temporary files.
	if ents, _ := os.ReadDir(c.dir); len(ents) != 1 {
		t.Errorf("%d files in the cache, want 1", len(ents))
	}
}

// An entry being written has no name in the directory until its commit
// (where the file system has O_TMPFILE, as tmpfs and ext4 do), so a vmm
// killed while it fills one leaves nothing behind; an aborted one
// leaves nothing either.
func TestPendingUnnamed(t *testing.T) {
	c := openTemp(t)
	p, err := c.Create(key("a"))
	if err != nil {
		t.Fatal(err)
	}
	if !isUnnamed(p.f) {
		t.Skipf("%s has no O_TMPFILE: the entry is written under a name", c.dir)
	}
	if _, err := p.f.Write([]byte("being written")); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(c.dir); len(ents) != 0 {
		t.Errorf("the directory holds %v while an entry is written", ents)
	}
	p.Abort()
	if ents, _ := os.ReadDir(c.dir); len(ents) != 0 {
		t.Errorf("the directory holds %v after an abort", ents)
	}
	put(t, c, key("b"), []byte("vmlinux"))
	if ents, _ := os.ReadDir(c.dir); len(ents) != 1 {
		t.Errorf("the directory holds %v after a commit, want the entry only", ents)
	}
	if v, err := c.Get(key("b")); err != nil || !bytes.Equal(contents(t, v), []byte("vmlinux")) {
		t.Errorf("committed entry: %v", err)
	}
}

// An entry cut short while it is mapped and read is an error from Read,
// not a SIGBUS that kills vmm; any other panic in the reader goes on.
func TestEntryCutShortWhileRead(t *testing.T) {
	c := openTemp(t)
	data := bytes.Repeat([]byte("vmlinux "), 1<<17) // 1 MiB
	put(t, c, key("k"), data)
	v, err := c.Get(key("k"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := os.Truncate(c.path(key("k")), int64(headerLen+4096)); err != nil {
		t.Fatal(err)
	}
	var sum int
	err = v.Read(func(b []byte) error {
		for i := 0; i < len(b); i += 4096 {
			sum += int(b[i])
		}
		return nil
	})
	if err == nil || err.Error() != "kernel cache entry "+c.path(key("k"))+" was cut short or could not be read while vmm read it" {
		t.Fatalf("reading an entry cut short: %v (sum %d), want the error", err, sum)
	}
	defer func() {
		if r := recover(); r != "not a fault" {
			t.Errorf("recovered %v, want the reader's own panic", r)
		}
	}()
	v.Read(func([]byte) error { panic("not a fault") })
}

// TestUntrustedEntries checks that every way an entry can be damaged is
// detected and the entry removed, so the next boot rebuilds it.
func TestUntrustedEntries(t *testing.T) {
	data := []byte("the decompressed kernel")
	good := encode(data)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "is truncated (0 bytes), removed"},
		{"truncated header", good[:headerLen-1], "is truncated"},
		{"truncated data", good[:len(good)-1], "holds 22 bytes, its header says 23, removed"},
		{"appended", append(bytes.Clone(good), 'x'), "holds 24 bytes, its header says 23, removed"},
		{"flipped data", append(bytes.Clone(good[:len(good)-1]), 'X'), "does not match its checksum, removed"},
		{"flipped sum", func() []byte { b := bytes.Clone(good); b[len(magic)] ^= 1; return b }(), "does not match its checksum, removed"},
		{"other format", append([]byte("vmm vmlinux cache v2\n"), good[len(magic):]...), "has no vmm cache header, removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openTemp(t)
			p := c.path(key("k"))
			if err := os.WriteFile(p, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			v, err := c.Get(key("k"))
			if err == nil {
				t.Fatalf("accepted: %q", contents(t, v))
			}
			if errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line with %q", err, tc.want)
			}
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("damaged entry not removed: %v", err)
			}
		})
	}
}

func TestUnsafe(t *testing.T) {
	t.Run("group-writable directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vmlinux")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o770); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir); !errors.Is(err, ErrUnsafeDir) {
			t.Errorf("Open: %v, want ErrUnsafeDir", err)
		}
	})
	t.Run("world-writable entry", func(t *testing.T) {
		c := openTemp(t)
		put(t, c, key("k"), []byte("x"))
		if err := os.Chmod(c.path(key("k")), 0o666); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(key("k")); !errors.Is(err, ErrUnsafeDir) {
			t.Errorf("Get: %v, want ErrUnsafeDir", err)
		}
	})
	t.Run("someone else's entry", func(t *testing.T) {
		c := openTemp(t)
		put(t, c, key("k"), []byte("x"))
		if err := os.Chown(c.path(key("k")), os.Geteuid()+1, -1); err != nil {
			t.Skipf("cannot give a file away here: %v", err)
		}
		if _, err := c.Get(key("k")); !errors.Is(err, ErrUnsafeDir) {
			t.Errorf("Get: %v, want ErrUnsafeDir", err)
		}
	})
	t.Run("parent someone else's", func(t *testing.T) {
		// Another user's directory under /tmp, made first, holding ours.
		parent := filepath.Join(t.TempDir(), "vmm-cache-1000")
		if err := os.Mkdir(parent, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(parent, os.Geteuid()+1, -1); err != nil {
			t.Skipf("cannot give a directory away here: %v", err)
		}
		if _, err := Open(filepath.Join(parent, "vmlinux")); !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), "its parent") {
			t.Errorf("Open: %v, want ErrUnsafeDir naming the parent", err)
		}
	})
	t.Run("symlinked entry", func(t *testing.T) {
		c := openTemp(t)
		target := filepath.Join(t.TempDir(), "elsewhere")
		if err := os.WriteFile(target, encode([]byte("x")), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, c.path(key("k"))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(key("k")); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get through a symlink: %v, want a refusal", err)
		}
	})
}

func TestEvict(t *testing.T) {
	c := openTemp(t)
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return clock }
	stale := filepath.Join(c.dir, tempPrefix+"123456")
	fresh := filepath.Join(c.dir, tempPrefix+"77-1700000000-0")
	// The user's own files in a -kernel-cache DIR: whatever their age,
	// nothing vmm does not name its own way is removed.
	var mine []string
	for _, n := range []string{"linux-6.1.vmlinux", "notes.key", tempPrefix + "draft", "b2-" + strings.Repeat("g", 64) + entrySuffix, "README"} {
		mine = append(mine, filepath.Join(c.dir, n))
	}
	for _, p := range append([]string{stale, fresh}, mine...) {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Chtimes(stale, clock.Add(-2*staleTemp), clock.Add(-2*staleTemp))
	os.Chtimes(fresh, clock, clock)
	for _, p := range mine {
		os.Chtimes(p, clock.Add(-2*staleOld), clock.Add(-2*staleOld))
	}
	// An older vmm's entries (named by SHA-256 with no prefix, or
	// BLAKE2b-256 with b2-): one unused for longer than staleOld goes,
	// one in use stays, and none counts against MaxEntries.
	oldUnused := filepath.Join(c.dir, strings.Repeat("a", 64)+entrySuffix)
	oldInUse := filepath.Join(c.dir, strings.Repeat("b", 64)+entrySuffix)
	b2Unused := filepath.Join(c.dir, "b2-"+strings.Repeat("c", 64)+entrySuffix)
	b2InUse := filepath.Join(c.dir, "b2-"+strings.Repeat("d", 64)+entrySuffix)
	for _, p := range []string{oldUnused, oldInUse, b2Unused, b2InUse} {
		if err := os.WriteFile(p, encode([]byte("old")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Chtimes(oldUnused, clock.Add(-2*staleOld), clock.Add(-2*staleOld))
	os.Chtimes(oldInUse, clock, clock)
	os.Chtimes(b2Unused, clock.Add(-2*staleOld), clock.Add(-2*staleOld))
	os.Chtimes(b2InUse, clock, clock)
	for i := range MaxEntries + 1 {
		put(t, c, key(fmt.Sprint(i)), []byte{byte(i)})
		os.Chtimes(c.path(key(fmt.Sprint(i))), clock, clock)
		clock = clock.Add(time.Minute)
		if i == 1 {
			// Entry 0 is used again: it is now more recent than 1.
			v, err := c.Get(key("0"))
			if err != nil {
				t.Fatal(err)
			}
			v.Close()
			clock = clock.Add(time.Minute)
		}
	}
	for i := range MaxEntries + 1 {
		_, err := os.Stat(c.path(key(fmt.Sprint(i))))
		if kept := i != 1; kept != (err == nil) {
			t.Errorf("entry %d: kept %v, want %v", i, err == nil, kept)
		}
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temporary file not removed")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("another writer's temporary file removed")
	}
	for _, p := range []string{oldUnused, b2Unused} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("an older vmm's entry unused for two days not removed: %s", filepath.Base(p))
		}
	}
	for _, p := range []string{oldInUse, b2InUse} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("an older vmm's entry in use removed: %s", filepath.Base(p))
		}
	}
	for _, p := range mine {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a file vmm did not make removed: %s", filepath.Base(p))
		}
	}
}

// TestEvictBytes: beyond MaxBytes together, the least recently used
// entries go, but never the newest, however large.
func TestEvictBytes(t *testing.T) {
	c := openTemp(t)
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return clock }
	const size = 1000
	c.maxBytes = 3 * (int64(headerLen) + size) // three entries' worth
	for i := range 4 {
		put(t, c, key(fmt.Sprint(i)), bytes.Repeat([]byte{byte(i)}, size))
		os.Chtimes(c.path(key(fmt.Sprint(i))), clock, clock)
		clock = clock.Add(time.Minute)
	}
	for i := range 4 {
		_, err := os.Stat(c.path(key(fmt.Sprint(i))))
		if kept := i != 0; kept != (err == nil) {
			t.Errorf("entry %d: kept %v, want %v", i, err == nil, kept)
		}
	}
	// One entry larger than the whole budget is kept while it is the
	// newest: it is the one being booted.
	c.maxBytes = 10
	put(t, c, key("big"), bytes.Repeat([]byte{9}, size))
	if _, err := os.Stat(c.path(key("big"))); err != nil {
		t.Errorf("the newest entry, over the budget alone, removed: %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(c.dir, entryPrefix+"*")); len(ents) != 1 {
		t.Errorf("entries %q, want only the newest", ents)
	}
}

// lz4Payload compresses vmlinux as the kernel's Makefile does for LZ4:
// a legacy frame followed by the size (scripts/Makefile.lib).
func lz4Payload(t *testing.T, vmlinux []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := lz4.NewWriter(&b)
	if err := w.Apply(lz4.LegacyOption(true)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(vmlinux); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.AppendUint32(b.Bytes(), uint32(len(vmlinux)))
}

func bzImage(t *testing.T, compressed []byte) ([]byte, *bootparam.Kernel) {
	t.Helper()
	img := testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}, Compressed: compressed})
	k, err := bootparam.ParseKernel(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, k
}

// notes records what Load tells the user.
type notes []string

func (n *notes) f(format string, args ...any) { *n = append(*n, fmt.Sprintf(format, args...)) }

// contents returns a copy of v's bytes and closes v.
func contents(t *testing.T, v *Vmlinux) []byte {
	t.Helper()
	var b []byte
	if err := v.Read(func(data []byte) error { b = bytes.Clone(data); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}

// loadBytes is Load, with the kernel's bytes copied out.
func loadBytes(t *testing.T, dir string, image []byte, k *bootparam.Kernel, limit int, notef func(string, ...any)) ([]byte, error) {
	t.Helper()
	v, err := Load(dir, &Image{mapped: mapped{data: image}}, k, inProcess, limit, notef)
	if err != nil {
		return nil, err
	}
	return contents(t, v), nil
}

func TestLoad(t *testing.T) {
	vmlinux := bytes.Repeat([]byte("\x7fELF vmlinux "), 1000)
	img, k := bzImage(t, lz4Payload(t, vmlinux))
	dir := filepath.Join(t.TempDir(), "vmm", "vmlinux")
	var n notes
	got, err := loadBytes(t, dir, img, k, 1<<20, n.f)
	if err != nil || !bytes.Equal(got, vmlinux) {
		t.Fatalf("first boot: %d bytes, %v", len(got), err)
	}
	entry := filepath.Join(dir, fmt.Sprintf("b2v4-%x.vmlinux", KeyOf(img)))
	if _, err := os.Stat(entry); err != nil {
		t.Fatalf("no entry stored: %v", err)
	}
	// The second boot reads the entry, quietly; a damaged entry is
	// noticed, said once, and rebuilt.
	got, err = loadBytes(t, dir, img, k, 1<<20, n.f)
	if err != nil || !bytes.Equal(got, vmlinux) || len(n) != 0 {
		t.Fatalf("second boot: %d bytes, %v, notes %q", len(got), err, n)
	}
	// It is really read from the cache: an intact entry with other
	// contents is what comes back.
	if err := os.WriteFile(entry, encode([]byte("cached")), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := loadBytes(t, dir, img, k, 1<<20, n.f); err != nil || string(got) != "cached" {
		t.Fatalf("boot from the cache: %q, %v", got, err)
	}
	b := encode(vmlinux)
	b[len(b)-1] ^= 1
	if err := os.WriteFile(entry, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = loadBytes(t, dir, img, k, 1<<20, n.f)
	if err != nil || !bytes.Equal(got, vmlinux) {
		t.Fatalf("boot with a damaged entry: %d bytes, %v", len(got), err)
	}
	if len(n) != 1 || !strings.Contains(n[0], "does not match its checksum, removed") {
		t.Errorf("notes %q, want one about the damaged entry", n)
	}
	if b2, _ := os.ReadFile(entry); !bytes.Equal(b2, encode(vmlinux)) {
		t.Error("damaged entry not rebuilt")
	}
}

// TestLoadWhileAnotherFills: while another process holds the fill lock,
// a boot that misses does not decompress (it boots the bzImage, said to
// nobody); once the lock is free the next boot fills the entry.
func TestLoadWhileAnotherFills(t *testing.T) {
	vmlinux := bytes.Repeat([]byte("\x7fELF vmlinux "), 1000)
	img, k := bzImage(t, lz4Payload(t, vmlinux))
	dir := filepath.Join(t.TempDir(), "vmm", "vmlinux")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Another open file description of the directory: flock(2) locks
	// belong to those, so this one conflicts with Load's as another
	// process's would.
	other, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(other, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var n notes
	if _, err := loadBytes(t, dir, img, k, 1<<20, n.f); !errors.Is(err, ErrFillBusy) || len(n) != 0 {
		t.Fatalf("boot during another fill: %v, notes %q; want ErrFillBusy and no note", err, n)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "*"+entrySuffix)); len(ents) != 0 {
		t.Fatalf("entries %q stored while another fill held the lock", ents)
	}
	unix.Close(other)
	if got, err := loadBytes(t, dir, img, k, 1<<20, n.f); err != nil || !bytes.Equal(got, vmlinux) || len(n) != 0 {
		t.Fatalf("boot after the other fill: %d bytes, %v, notes %q", len(got), err, n)
	}
}

// TestLoadTrimsZeroTails: an entry holds the vmlinux with its segments'
// zero tails cut off (kernelimage.TrimZeroTails), on the boot that fills
// it and on those that read it.
func TestLoadTrimsZeroTails(t *testing.T) {
	code := []byte{0xf4, 1, 2, 3}
	const zeros = 0x2000
	vmlinux := testkernel.Vmlinux(append(bytes.Clone(code), make([]byte, zeros)...), 0)
	img, k := bzImage(t, lz4Payload(t, vmlinux))
	dir := filepath.Join(t.TempDir(), "vmm", "vmlinux")
	for _, boot := range []string{"filling", "from the cache"} {
		got, err := loadBytes(t, dir, img, k, 1<<20, nil)
		if err != nil {
			t.Fatalf("boot %s: %v", boot, err)
		}
		e, err := kernelimage.ParseELF(got)
		if err != nil {
			t.Fatalf("boot %s: %v", boot, err)
		}
		if s := e.Segments[0]; len(got) != len(vmlinux)-zeros || !bytes.Equal(s.Data, code) || s.MemSize != uint64(len(code)+zeros) {
			t.Errorf("boot %s: %d bytes, segment of %d file bytes (%d in memory); want %d, %d (%d)",
				boot, len(got), len(s.Data), s.MemSize, len(vmlinux)-zeros, len(code), len(code)+zeros)
		}
	}
	entry := filepath.Join(dir, fmt.Sprintf("b2v4-%x.vmlinux", KeyOf(img)))
	if st, err := os.Stat(entry); err != nil || st.Size() != int64(headerLen+len(vmlinux)-zeros) {
		t.Errorf("entry: %v, want %d bytes", err, headerLen+len(vmlinux)-zeros)
	}
}

func TestLoadFallbacks(t *testing.T) {
	vmlinux := bytes.Repeat([]byte("kernel"), 1000)
	good := lz4Payload(t, vmlinux)
	corrupt := bytes.Clone(good)
	binary.LittleEndian.PutUint32(corrupt[4:], 0x7fffffff) // block size past the input
	fileDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(fileDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		compressed []byte
		dir        string // "" for a fresh one
		limit      int
		note       string // "" for none
	}{
		{name: "no payload", compressed: nil},
		{name: "bzip2", compressed: []byte("BZh91AY&SY\x00\x00\x00\x00\x10\x00\x00\x00")},
		{name: "cache under a file", compressed: good, dir: filepath.Join(fileDir, "vmlinux"), note: "kernel cache: mkdir " + fileDir},
		{name: "corrupt payload", compressed: corrupt, note: "kernel cache: lz4 kernel payload"},
		{name: "over the limit", compressed: good, limit: 100, note: "more than vmm's limit of 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, k := bzImage(t, tc.compressed)
			dir := tc.dir
			if dir == "" {
				dir = filepath.Join(t.TempDir(), "vmlinux")
			}
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 20
			}
			var n notes
			if got, err := loadBytes(t, dir, img, k, limit, n.f); err == nil {
				t.Fatalf("returned %d bytes", len(got))
			}
			switch {
			case tc.note == "" && len(n) != 0:
				t.Errorf("notes %q, want none", n)
			case tc.note != "" && (len(n) != 1 || !strings.Contains(n[0], tc.note) || strings.Contains(n[0], "\n")):
				t.Errorf("notes %q, want one line with %q", n, tc.note)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in the cache", len(ents))
			}
		})
	}
}

// keyFile writes image to a file and returns it as a Source whose
// status was taken racyWindow after now, so its ctime is old enough for
// the key index without waiting.
func keyFile(t *testing.T, path string, image []byte) *Source {
	t.Helper()
	if err := os.WriteFile(path, image, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := fileIDOf(st)
	if !ok {
		t.Fatalf("%s: no file identity", path)
	}
	return &Source{id: id, at: time.Now().Add(racyWindow)}
}

// The key index: an unchanged file's key is not hashed again; a changed
// file's is, and a file changed too recently to tell gets no index. A
// damaged or foreign index file is ignored.
func TestKeyIndex(t *testing.T) {
	c := openTemp(t)
	hashes := 0
	c.sum = func(b []byte) Key { hashes++; return KeyOf(b) }
	path := filepath.Join(t.TempDir(), "bzImage")
	img := []byte("bzImage one")
	src := keyFile(t, path, img)

	for i, want := range []int{1, 1, 1} {
		if k := c.keyOf(img, src); k != KeyOf(img) {
			t.Fatalf("call %d: wrong key", i)
		}
		if hashes != want {
			t.Fatalf("call %d: %d hashes, want %d", i, hashes, want)
		}
	}
	index := c.keyPath(src.id)

	// The file changes (new contents, new times): hashed again, and the
	// index follows.
	img2 := []byte("bzImage two, longer")
	src2 := keyFile(t, path, img2)
	if k := c.keyOf(img2, src2); k != KeyOf(img2) || hashes != 2 {
		t.Fatalf("changed file: key ok %v, %d hashes", k == KeyOf(img2), hashes)
	}
	if k := c.keyOf(img2, src2); k != KeyOf(img2) || hashes != 2 {
		t.Fatalf("changed file, again: key ok %v, %d hashes", k == KeyOf(img2), hashes)
	}
	// Only the ctime moved (a chmod, or a write that kept size and
	// mtime): hashed again.
	moved := *src2
	moved.id.ctime++
	if k := c.keyOf(img2, &moved); k != KeyOf(img2) || hashes != 3 {
		t.Fatalf("ctime moved: key ok %v, %d hashes", k == KeyOf(img2), hashes)
	}

	// A damaged or foreign index file is ignored (hashed again) and
	// rewritten.
	for name, damage := range map[string]func(){
		"truncated":     func() { os.Truncate(index, int64(keyLen)-1) },
		"bad magic":     func() { b, _ := os.ReadFile(index); b[0] ^= 1; os.WriteFile(index, b, 0o600) },
		"others' write": func() { os.Chmod(index, 0o622) },
	} {
		c.keyOf(img2, src2) // the index is src2's again
		hashes = 0
		damage()
		if k := c.keyOf(img2, src2); k != KeyOf(img2) || hashes != 1 {
			t.Errorf("%s index: key ok %v, %d hashes, want 1", name, k == KeyOf(img2), hashes)
		}
		os.Chmod(index, 0o600)
	}

	// A status taken within racyWindow of the ctime: no index written.
	hashes = 0
	os.Remove(index)
	recent := *src2
	recent.at = time.Unix(0, recent.id.ctime).Add(racyWindow - time.Millisecond)
	if k := c.keyOf(img2, &recent); k != KeyOf(img2) || hashes != 1 {
		t.Fatalf("recent file: key ok %v, %d hashes", k == KeyOf(img2), hashes)
	}
	if _, err := os.Stat(index); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("index written for a file changed under %v before its status: %v", racyWindow, err)
	}
	// No source (a pipe, an untrusted file system): always hashed.
	hashes = 0
	c.keyOf(img2, nil)
	c.keyOf(img2, nil)
	if hashes != 2 {
		t.Errorf("without a source: %d hashes, want 2", hashes)
	}
}

// OpenImage maps a regular file, with a Source on a file system whose
// ctime it trusts; it reads a pipe whole, without one. A file cut short
// while mapped is an error from Read, not a SIGBUS.
func TestOpenImage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bzImage")
	want := bytes.Repeat([]byte("bzImage "), 1<<15) // 256 KiB
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := OpenImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	var got []byte
	if err := im.Read(func(b []byte) error { got = bytes.Clone(b); return nil }); err != nil || !bytes.Equal(got, want) || im.mapping == nil {
		t.Fatalf("OpenImage: %d bytes, mapped %v, %v", len(got), im.mapping != nil, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if trusted := slices.Contains(trustedFS, int64(sfs.Type)); (im.src != nil) != trusted {
		t.Errorf("source %v on file system %#x (trusted %v)", im.src, sfs.Type, trusted)
	}
	if im.src != nil {
		if im.src.id.size != int64(len(want)) || im.src.at.IsZero() || !im.unchanged() {
			t.Errorf("source %+v, unchanged %v", im.src, im.unchanged())
		}
		b, src, err := im.stable()
		if err != nil || !bytes.Equal(b, want) || src != im.src {
			t.Errorf("stable: %d bytes, source %v, %v", len(b), src, err)
		}
	}
	// Cut short under the mapping: a changed file, and a fault on its
	// old end is an error naming the file.
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	if im.src != nil && im.unchanged() {
		t.Error("a truncated file is unchanged")
	}
	err = im.Read(func(b []byte) error {
		for i := 0; i < len(b); i += 4096 {
			_ = b[i] + 1
			if b[i] != 'b' && b[i] != ' ' && b[i] != 0 {
				return fmt.Errorf("byte %d is %q", i, b[i])
			}
		}
		return nil
	})
	if err == nil || err.Error() != "kernel "+path+" was cut short or could not be read while vmm read it" {
		t.Errorf("reading an image cut short: %v", err)
	}
	if _, _, err := im.stable(); err == nil {
		t.Error("stable copied an image cut short")
	}

	// A pipe is read whole once its header shows a kernel; one that
	// does not is refused after the header; one shorter than the header
	// is left to the parser.
	piped := bytes.Clone(want)
	copy(piped[bzImageMagicAt:], bzImageMagic)
	for _, tc := range []struct {
		name    string
		send    []byte
		wantErr string
	}{
		{"a bzImage", piped, ""},
		{"an ELF file", append([]byte("\x7fELF"), want...), ""},
		{"shorter than the header", want[:100], ""},
		{"not a kernel", want, `not a Linux bzImage or vmlinux (no "HdrS" at 0x202, no ELF magic)`},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { w.Write(tc.send); w.Close() }()
		pim, err := OpenImage(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
		r.Close()
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.HasSuffix(err.Error(), tc.wantErr) {
				t.Errorf("from a pipe, %s: %v, want %q", tc.name, err, tc.wantErr)
			}
		case err != nil || !bytes.Equal(pim.data, tc.send) || pim.src != nil || pim.mapping != nil:
			t.Errorf("from a pipe, %s: %v", tc.name, err)
		default:
			pim.Close()
		}
	}
	// A FIFO without a writer is not waited for: it gave no data; a
	// character device is refused.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoDone := make(chan error, 1)
	go func() {
		_, err := OpenImage(fifo)
		fifoDone <- err
	}()
	select {
	case err := <-fifoDone:
		if err == nil || !strings.Contains(err.Error(), "gave no data") {
			t.Errorf("a FIFO without a writer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("OpenImage waited for a FIFO's writer")
	}
	if _, err := OpenImage("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file or pipe") {
		t.Errorf("/dev/zero: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if eim, err := OpenImage(empty); err != nil || len(eim.data) != 0 {
		t.Errorf("an empty file: %v", err)
	} else {
		eim.Close()
	}
	if _, err := OpenImage(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was opened")
	}
}

// A regular file on a file system that cannot map it (sysfs says
// ENODEV) is read onto the heap instead, as before OpenImage mapped.
func TestOpenImageUnmappable(t *testing.T) {
	const path = "/sys/kernel/mm/transparent_hugepage/enabled"
	want, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no %s to try: %v", path, err)
	}
	im, err := OpenImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.mapping != nil || !bytes.Equal(im.data, want) {
		t.Errorf("OpenImage(%s): mapped %v, %q; want read, %q", path, im.mapping != nil, im.data, want)
	}
}

// A warm boot reads nothing of the bzImage but its header: with the key
// index and the entry in place, Load returns the entry even when the
// image's bytes past the header are not there to read. A file that
// changed after it was opened is an error; one that changed before is
// hashed again and finds its entry.
func TestLoadReadsOnlyTheHeader(t *testing.T) {
	vmlinux := bytes.Repeat([]byte("\x7fELF vmlinux "), 1000)
	img, k := bzImage(t, lz4Payload(t, vmlinux))
	dir := filepath.Join(t.TempDir(), "vmm", "vmlinux")
	path := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	open := func() *Image {
		t.Helper()
		im, err := OpenImage(path)
		if err != nil {
			t.Fatal(err)
		}
		if im.src == nil {
			im.Close()
			t.Skip("the temporary directory's file system is not one whose ctime the key index trusts")
		}
		im.src.at = im.src.at.Add(racyWindow) // old enough to record
		t.Cleanup(func() { im.Close() })
		return im
	}
	var n notes
	v, err := Load(dir, open(), k, inProcess, 1<<20, n.f)
	if err != nil || !bytes.Equal(contents(t, v), vmlinux) {
		t.Fatalf("first boot: %v %v", err, n)
	}
	im := open()
	im.data = im.data[:(k.SetupSects+1)*512]
	v, err = Load(dir, im, k, inProcess, 1<<20, n.f)
	if err != nil || !bytes.Equal(contents(t, v), vmlinux) || len(n) != 0 {
		t.Fatalf("warm boot with only the header readable: %v %v", err, n)
	}
	// Changed after it was opened: the index is not trusted, and the
	// copy Load would hash is not the file the header came from.
	im = open()
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, im, k, inProcess, 1<<20, n.f); err == nil || err.Error() != "kernel "+path+" changed while vmm read it" {
		t.Errorf("a file changed while read: %v", err)
	}
	// Changed before: its new times are not in the index, so it is
	// hashed, and its bytes (the same) find the entry.
	v, err = Load(dir, open(), k, inProcess, 1<<20, n.f)
	if err != nil || !bytes.Equal(contents(t, v), vmlinux) || len(n) != 0 {
		t.Fatalf("boot after the change: %v %v", err, n)
	}
}

// Index files beyond MaxKeys are evicted, least recently used first.
func TestKeyIndexEvict(t *testing.T) {
	c := openTemp(t)
	dir := t.TempDir()
	for i := range MaxKeys + 3 {
		img := []byte(fmt.Sprintf("kernel %d", i))
		c.keyOf(img, keyFile(t, filepath.Join(dir, fmt.Sprint(i)), img))
	}
	keys, _ := filepath.Glob(filepath.Join(c.dir, "*"+keySuffix))
	if len(keys) != MaxKeys {
		t.Errorf("%d index files, want %d", len(keys), MaxKeys)
	}
}

// A -kernel file larger than any kernel (a bzImage with gigabytes
// appended, a sparse file) is not copied onto the heap for the cache.
func TestStableRefusesHugeImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bzImage")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("a kernel's first bytes")); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxRead + 4096); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()
	im, err := OpenImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b, _, err := im.stable()
	if err == nil || !strings.Contains(err.Error(), "larger than any kernel") || b != nil {
		t.Errorf("stable of a %d MiB file: %d bytes, %v", (maxRead+4096)>>20, len(b), err)
	}
}
