package kernelcache

import (
	"bytes"
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
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == kernelimage.UnpackHelper {
		os.Exit(unpack.HelperMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
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
	xzBCJ := []byte("\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46\x01\x01........\x10\x00\x00\x00")
	t.Setenv("PATH", t.TempDir()) // no vmm-unpack there
	for _, tc := range []struct {
		name    string
		unpack  Unpack
		payload []byte
		note    string // "" for none
	}{
		{name: "xz with BCJ", unpack: helper, payload: xzBCJ},
		{name: "corrupt", unpack: helper, payload: corrupt, note: "kernel cache: lz4 kernel payload"},
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
			case tc.note != "" && (len(n) != 1 || !strings.Contains(n[0], tc.note) || !strings.HasSuffix(n[0], "; booting the compressed kernel")):
				t.Errorf("notes %q, want one line with %q", n, tc.note)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in the cache", len(ents))
			}
		})
	}
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
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%x%s", KeyOf(img), entrySuffix)))
		if err != nil || !bytes.Equal(b, encode(vmlinux)) {
			t.Errorf("entry: %d bytes, %v; want the encoding of the vmlinux", len(b), err)
		}
	})
}
