package kernelcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/kernelimage"
	"github.com/vmm-dev/vmm/kernelimage/unpack"
)

// TestMain makes this test binary the vmm-unpack helper when it is run
// under that name (through the symbolic link fakeHelper makes), so that
// Helper's process, pipes and exit statuses are tested without a build.
//
// Under other names it is a helper gone wrong: one that floods its
// stderr, one whose output the disk refuses, one that writes less than
// the payload's size trailer says and exits 0.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case kernelimage.UnpackHelper:
		// As cmd/vmm-unpack runs it: decoding under its memory cap, but
		// for the race detector, whose shadow memory counts against it.
		capData := unpack.CapData
		if raceEnabled {
			capData = nil
		}
		os.Exit(unpack.HelperMainCapped(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, capData))
	case "vmm-unpack-floods":
		line := bytes.Repeat([]byte("x"), 1<<20)
		for range 8 {
			os.Stderr.Write(line)
		}
		os.Exit(1)
	case "vmm-unpack-full":
		os.Exit(unpack.HelperMain(os.Args[1:], os.Stdin, fullDisk{}, os.Stderr))
	case "vmm-unpack-short":
		os.Stdout.WriteString("\x7fELF, cut short")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fullDisk refuses every write, as a full disk does.
type fullDisk struct{}

func (fullDisk) Write([]byte) (int, error) {
	return 0, errors.New("write /dev/stdout: no space left on device")
}

// fakeHelper returns a link named name to this test binary.
func fakeHelper(t *testing.T, name string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHelper boots through the helper process: the first Load fills the
// cache through it, the second maps the entry; a payload the helper
// refuses, or no helper at all, leaves no file behind and boots the
// bzImage, saying so unless the format is one vmm leaves to the kernel.
func TestHelper(t *testing.T) {
	vmlinux := bytes.Repeat([]byte("\x7fELF vmlinux from the helper "), 3000)
	helper := Helper(fakeHelper(t, kernelimage.UnpackHelper))
	good := lz4Payload(t, vmlinux)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	corrupt[4] ^= 0x7f // block size past the input
	// 4 KiB in xz with ARM64's BCJ filter, newer than the decoder
	// (kernelimage/unpack's test data), and its size trailer: Plan lets
	// it through and the helper refuses it, quietly.
	xzARM64, err := os.ReadFile("../kernelimage/unpack/testdata/arm64-filter.xz")
	if err != nil {
		t.Fatal(err)
	}
	xzARM64 = binary.LittleEndian.AppendUint32(xzARM64, 4096)
	t.Setenv("PATH", t.TempDir()) // no vmm-unpack there
	for _, tc := range []struct {
		name    string
		unpack  Unpack
		payload []byte
		note    string // "" for none
	}{
		{name: "xz with a filter the decoder lacks", unpack: helper, payload: xzARM64},
		{name: "corrupt", unpack: helper, payload: corrupt, note: "kernel cache: lz4 kernel payload"},
		{name: "stderr flooded", unpack: Helper(fakeHelper(t, "vmm-unpack-floods")), payload: good, note: "kernel cache: xxxx"},
		{name: "full disk", unpack: Helper(fakeHelper(t, "vmm-unpack-full")), payload: good, note: "/.tmp-"},
		{name: "short output", unpack: Helper(fakeHelper(t, "vmm-unpack-short")), payload: good, note: "vmm-unpack wrote 15 bytes, the payload's size trailer says 87000"},
		{name: "missing", unpack: Helper(filepath.Join(t.TempDir(), "vmm-unpack")), payload: good, note: "no such file or directory"},
		{name: "not found", unpack: Helper(""), payload: good, note: "the vmm-unpack helper, which is neither next to vmm nor in $PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, k := bzImage(t, tc.payload)
			dir := filepath.Join(t.TempDir(), "vmlinux")
			var n notes
			v, err := Load(dir, &Image{mapped: mapped{data: img}}, k, tc.unpack, 1<<20, n.f)
			if err == nil {
				v.Close()
				t.Fatal("loaded a kernel")
			}
			if noDecoder := tc.note == ""; errors.Is(err, kernelimage.ErrNoDecoder) != noDecoder {
				t.Errorf("error %v: ErrNoDecoder %v, want %v", err, !noDecoder, noDecoder)
			}
			switch {
			case tc.note == "" && len(n) != 0:
				t.Errorf("notes %q, want none", n)
			case tc.note != "" && (len(n) != 1 || !strings.Contains(n[0], tc.note) || !strings.HasSuffix(n[0], "; booting the compressed kernel") || strings.Contains(n[0], "\n")):
				t.Errorf("notes %.300q, want one line with %q", n, tc.note)
			case len(n) == 1 && len(n[0]) > 2*maxStderr:
				t.Errorf("a note of %d bytes: the helper's stderr was not capped at %d", len(n[0]), maxStderr)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in the cache", len(ents))
			}
		})
	}
	// The helper's own refusal (exit 3) of what Plan lets through, run
	// directly: it must come back as ErrNoDecoder.
	t.Run("helper refuses", func(t *testing.T) {
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if err := helper(xzARM64, 1<<20, out); !errors.Is(err, kernelimage.ErrNoDecoder) || !strings.Contains(err.Error(), "compression options not supported") {
			t.Errorf("helper on xz with ARM64's filter: %v, want its line wrapping ErrNoDecoder", err)
		}
	})
	t.Run("fills the cache", func(t *testing.T) {
		img, k := bzImage(t, good)
		dir := filepath.Join(t.TempDir(), "vmlinux")
		var n notes
		for boot := range 2 {
			v, err := Load(dir, &Image{mapped: mapped{data: img}}, k, helper, 1<<20, n.f)
			if err != nil || len(n) != 0 {
				t.Fatalf("boot %d: %v, notes %q", boot, err, n)
			}
			if v.mapping == nil {
				t.Errorf("boot %d: the vmlinux is on the heap, not mapped from its entry", boot)
			}
			if got := contents(t, v); !bytes.Equal(got, vmlinux) {
				t.Fatalf("boot %d: %d bytes, not the %d compressed", boot, len(got), len(vmlinux))
			}
			helper = func([]byte, int, *os.File) error { return errors.New("decompressed again") }
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s%x%s", entryPrefix, KeyOf(img), entrySuffix)))
		if err != nil || !bytes.Equal(b, encode(vmlinux)) {
			t.Errorf("entry: %d bytes, %v; want the encoding of the vmlinux", len(b), err)
		}
	})
}
