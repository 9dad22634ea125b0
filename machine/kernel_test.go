package machine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/kernelcache"
)

// hlt is the code of the test kernels: a halt at the entry point.
var hlt = []byte{0xf4}

func TestReadKernel(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vmlinux := testkernel.Vmlinux(hlt, 0x1000)
	compressed := write("bzImage", testkernel.Build(testkernel.Options{Entry64: hlt, Compressed: testkernel.LZ4(vmlinux)}))
	plain := write("bzImage-plain", testkernel.Build(testkernel.Options{Entry64: hlt}))
	only32 := write("bzImage-32", testkernel.Build(testkernel.Options{Entry64: hlt, No64Bit: true, Compressed: testkernel.LZ4(vmlinux)}))
	notELF := write("bzImage-not-elf", testkernel.Build(testkernel.Options{Entry64: hlt, Compressed: testkernel.LZ4([]byte("not an ELF file"))}))
	bare := write("vmlinux", vmlinux)
	badELF := write("vmlinux-arm64", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...))
	unwritable := filepath.Join(write("a-file", nil), "vmlinux")

	for _, tc := range []struct {
		name, kernel, cache string
		elf                 bool   // booted as a vmlinux
		noHelper            bool   // no vmm-unpack where Config says
		note                string // "" for none
		err                 string // "" for none
	}{
		{name: "bzImage without cache", kernel: compressed},
		{name: "bzImage with cache", kernel: compressed, cache: "fresh", elf: true},
		{name: "bzImage with cache, no helper", kernel: compressed, cache: "fresh", noHelper: true, note: "vmm-unpack: no such file or directory; booting the compressed kernel"},
		{name: "bzImage with no payload", kernel: plain, cache: "fresh"},
		{name: "bzImage without 64-bit entry", kernel: only32, cache: "fresh"},
		{name: "cache under a file", kernel: compressed, cache: unwritable, note: "kernel cache: mkdir "},
		{name: "payload not a vmlinux", kernel: notELF, cache: "fresh", note: "its decompressed payload: not an ELF file; booting the compressed kernel"},
		{name: "bare vmlinux", kernel: bare, elf: true},
		{name: "bare vmlinux with cache", kernel: bare, cache: "fresh", elf: true},
		{name: "bad vmlinux", kernel: badELF, err: "vmlinux-arm64: ELF file has type 0, want ET_EXEC (2) as a vmlinux has"},
		{name: "missing", kernel: filepath.Join(dir, "nonexistent"), err: "kernel: open "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := tc.cache
			if cache == "fresh" {
				cache = filepath.Join(t.TempDir(), "vmlinux")
			}
			helper := unpackHelper(t)
			if tc.noHelper {
				helper = filepath.Join(t.TempDir(), "vmm-unpack")
			}
			var notes []string
			logf := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
			k, err := readKernel(Config{Kernel: tc.kernel, KernelCache: cache, UnpackHelper: helper, Logf: logf})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if (k.elf != nil) != tc.elf {
				t.Fatalf("booted as a vmlinux: %v, want %v", k.elf != nil, tc.elf)
			}
			if k.elf != nil && (k.elf.Entry != testkernel.LoadPhysicalAddr || !k.hdr.Supports64BitEntry()) {
				t.Errorf("entry %#x, 64-bit entry %v", k.elf.Entry, k.hdr.Supports64BitEntry())
			}
			switch {
			case tc.note == "" && len(notes) > 0:
				t.Errorf("notes %q, want none", notes)
			case tc.note != "" && (len(notes) != 1 || !strings.Contains(notes[0], tc.note)):
				t.Errorf("notes %q, want one with %q", notes, tc.note)
			}
		})
	}
}

// TestReadKernelCached boots the same bzImage twice: the second boot
// takes the vmlinux from the cache, which the test proves by replacing
// the payload's entry with another intact one.
func TestReadKernelCached(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	bz := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(bz, testkernel.Build(testkernel.Options{Entry64: hlt, Compressed: testkernel.LZ4(testkernel.Vmlinux(hlt, 0))}), 0o644); err != nil {
		t.Fatal(err)
	}
	helper := unpackHelper(t)
	k, err := readKernel(Config{Kernel: bz, KernelCache: cache, UnpackHelper: helper})
	if err != nil || k.elf == nil {
		t.Fatalf("first boot: %v, vmlinux %v", err, k.elf != nil)
	}
	k.Close()
	entries, _ := filepath.Glob(filepath.Join(cache, "*.vmlinux"))
	if len(entries) != 1 {
		t.Fatalf("%d cache entries, want 1", len(entries))
	}
	k, err = readKernel(Config{Kernel: bz, KernelCache: cache, UnpackHelper: helper})
	if err != nil || k.elf == nil || !fromCache(k) || string(k.elf.Segments[0].Data) != string(hlt) {
		t.Fatalf("second boot: %v, %+v", err, k.elf)
	}
	if _, err := setupMemory(lowMem(t, 64<<20), k, "", 0, 1, 0, false); err != nil {
		t.Fatalf("second boot: %v", err)
	}
	k.Close()

	// An entry cut short after it was mapped fails the boot with a
	// line that says so: loading it faults, which must not kill vmm.
	k, err = readKernel(Config{Kernel: bz, KernelCache: cache, UnpackHelper: helper})
	if err != nil || !fromCache(k) {
		t.Fatalf("third boot: %v, from the cache %v", err, fromCache(k))
	}
	defer k.Close()
	if err := os.Truncate(entries[0], 0); err != nil {
		t.Fatal(err)
	}
	_, err = setupMemory(lowMem(t, 64<<20), k, "", 0, 1, 0, false)
	if err == nil || !strings.Contains(err.Error(), "was cut short or could not be read while vmm read it") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("loading an entry cut short: %v", err)
	}
}

// fromCache reports whether k's bytes are a kernel cache entry.
func fromCache(k bootKernel) bool {
	_, ok := k.bytes.(*kernelcache.Vmlinux)
	return ok
}

// A -kernel file is mapped, not read (kernelcache.Image): one cut short
// between its header's parse and its load fails the boot with a line
// instead of a SIGBUS that kills vmm, and one rewritten in place there
// fails it instead of loading the new bytes under the old header.
func TestReadKernelChangedWhileRead(t *testing.T) {
	bzImage := testkernel.Build(testkernel.Options{Entry64: hlt, Compressed: make([]byte, 64<<10)})
	vmlinux := testkernel.Vmlinux(bytes.Repeat(hlt, 64<<10), 0) // code past the first page
	for _, tc := range []struct {
		name   string
		image  []byte
		change func(path string) error
		want   string
	}{
		{"bzImage cut short", bzImage, func(p string) error { return os.Truncate(p, 4096) }, "was cut short"},
		{"vmlinux cut short", vmlinux, func(p string) error { return os.Truncate(p, 4096) }, "was cut short"},
		{"bzImage rewritten", bzImage, func(p string) error {
			later := time.Now().Add(time.Hour) // a rewrite within the file system's clock tick moves no time
			if err := os.WriteFile(p, bytes.Repeat([]byte{0x90}, len(bzImage)), 0o644); err != nil {
				return err
			}
			return os.Chtimes(p, later, later)
		}, "changed while vmm read it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kernel")
			if err := os.WriteFile(path, tc.image, 0o644); err != nil {
				t.Fatal(err)
			}
			k, err := readKernel(Config{Kernel: path})
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if err := tc.change(path); err != nil {
				t.Fatal(err)
			}
			_, err = setupMemory(lowMem(t, 64<<20), k, "", 0, 1, 0, false)
			if err == nil || !strings.Contains(err.Error(), "kernel "+path+" "+tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("loading a kernel that changed: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSetupMemoryVmlinux(t *testing.T) {
	code := []byte{0xf4, 1, 2, 3}
	k, err := readKernelBytes(t, testkernel.Vmlinux(code, 0x2000))
	if err != nil {
		t.Fatal(err)
	}
	mem := lowMem(t, 64<<20)
	ram := mem.Regions()[0].Mem
	for i := testkernel.LoadPhysicalAddr; i < testkernel.LoadPhysicalAddr+0x3000; i++ {
		// Only the file's bytes are written: the bss is left as fresh
		// guest RAM has it (zero), so a sentinel there stays.
		ram[i] = 0xaa
	}
	const initrdSize = 1 << 20
	l, err := setupMemory(mem, k, "console=ttyS0", initrdSize, 1, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !l.long || l.entry != testkernel.LoadPhysicalAddr {
		t.Errorf("entered at %#x, long mode %v; want %#x in long mode", l.entry, l.long, testkernel.LoadPhysicalAddr)
	}
	seg := ram[testkernel.LoadPhysicalAddr:]
	if !bytes.Equal(seg[:4], code) || !bytes.Equal(seg[4:0x3000], bytes.Repeat([]byte{0xaa}, 0x3000-4)) {
		t.Errorf("segment not loaded as its code, with the bss and what follows untouched")
	}
	if l.initrdAddr < k.elf.End() {
		t.Errorf("initrd at %#x overlaps the kernel, which ends at %#x", l.initrdAddr, k.elf.End())
	}
	zp := ram[zeroPageAddr:][:4096]
	le := binary.LittleEndian
	if string(zp[0x202:0x206]) != "HdrS" || le.Uint16(zp[0x206:]) != 0x020f || le.Uint32(zp[0x228:]) != cmdlineAddr ||
		uint64(le.Uint32(zp[0x218:])) != l.initrdAddr || le.Uint64(zp[0x70:]) != acpiAddr {
		t.Errorf("zero page lacks the made-up header, command line, initrd or RSDP address")
	}
	// Nothing was loaded at 1 MiB, where a bzImage would go.
	if !bytes.Equal(ram[kernelLoadAddr:kernelLoadAddr+0x1000], make([]byte, 0x1000)) {
		t.Error("something was written at 1 MiB")
	}

	if _, err := setupMemory(lowMem(t, 16<<20), k, "", 0, 1, 0, false); err == nil || !strings.Contains(err.Error(), "too small for this kernel") {
		t.Errorf("16 MiB of RAM: %v", err)
	}
}

func TestSetupMemoryVmlinuxTooLow(t *testing.T) {
	elf := testkernel.Vmlinux(hlt, 0)
	// Move the segment and the entry to 64 KiB, over vmm's boot data.
	le := binary.LittleEndian
	le.PutUint64(elf[24:], 0x10000)
	le.PutUint64(elf[64+24:], 0x10000)
	k, err := readKernelBytes(t, elf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setupMemory(lowMem(t, 64<<20), k, "", 0, 1, 0, false); err == nil || !strings.Contains(err.Error(), "kernel loads at 0x10000, below the 1 MiB vmm keeps for boot data") {
		t.Errorf("kernel at 64 KiB: %v", err)
	}
}

// TestLoadBootsCachedVmlinux checks the whole of load with a cache: the
// vCPU will be entered at the vmlinux's entry, not at the bzImage's.
func TestLoadBootsCachedVmlinux(t *testing.T) {
	dir := t.TempDir()
	bz := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(bz, testkernel.Build(testkernel.Options{Entry64: hlt, Compressed: testkernel.LZ4(testkernel.Vmlinux(hlt, 0))}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cache := range []string{"", filepath.Join(dir, "cache")} {
		m, err := load(Config{Kernel: bz, KernelCache: cache, UnpackHelper: unpackHelper(t), MemSize: 64 << 20, CPUs: 1})
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(kernelLoadAddr + 0x200)
		if cache != "" {
			want = testkernel.LoadPhysicalAddr
		}
		if m.layout.entry != want || !m.layout.long {
			t.Errorf("cache %q: entry %#x, long mode %v; want %#x in long mode", cache, m.layout.entry, m.layout.long, want)
		}
		m.Close()
	}
}

func readKernelBytes(t *testing.T, b []byte) (bootKernel, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return readKernel(Config{Kernel: p})
}
