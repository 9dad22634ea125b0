package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestModprobeArgs(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		name  string
		quiet bool
		err   bool
	}{
		{[]string{"-q", "--", "fs-overlay"}, "fs-overlay", true, false}, // as the kernel runs it
		{[]string{"overlay"}, "overlay", false, false},
		{[]string{"-v", "virtio_blk"}, "", false, true},
		{[]string{"-r", "virtio_blk"}, "", false, true},
		{[]string{"loop", "max_loop=8"}, "", false, true},
		{[]string{"--quiet", "--", "-odd-"}, "-odd-", true, false},
		{[]string{"-q", "--"}, "", true, true},
		{nil, "", false, true},
	} {
		name, quiet, err := modprobeArgs(tt.args)
		if name != tt.name || quiet != tt.quiet || (err != nil) != tt.err {
			t.Errorf("modprobeArgs(%q) = %q, %v, %v; want %q, %v, error %v", tt.args, name, quiet, err, tt.name, tt.quiet, tt.err)
		}
	}
}

// deviceModaliases finds the modalias of every device of every bus,
// through the devices' symlinks as sysfs has them, and skips devices
// and buses without one.
func TestDeviceModaliases(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	write(root+"/devices/pci0000:00/0000:00:01.0/modalias", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00\n")
	write(root+"/devices/pci0000:00/0000:00:01.0/virtio0/modalias", "virtio:d00000001v00001AF4\n")
	write(root+"/devices/platform/serial8250/uevent", "DRIVER=serial8250\n") // no modalias
	write(root+"/devices/platform/empty/modalias", "\n")
	link("../../../devices/pci0000:00/0000:00:01.0", root+"/bus/pci/devices/0000:00:01.0")
	link("../../../devices/pci0000:00/0000:00:01.0/virtio0", root+"/bus/virtio/devices/virtio0")
	link("../../../devices/platform/serial8250", root+"/bus/platform/devices/serial8250")
	link("../../../devices/platform/empty", root+"/bus/platform/devices/empty")
	if err := os.MkdirAll(root+"/bus/workqueue", 0o755); err != nil { // a bus without devices/
		t.Fatal(err)
	}
	got := deviceModaliases(root + "/bus")
	want := []string{"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00", "virtio:d00000001v00001AF4"}
	if !slices.Equal(got, want) {
		t.Errorf("deviceModaliases = %q, want %q", got, want)
	}
	if got := deviceModaliases(root + "/missing"); len(got) != 0 {
		t.Errorf("no sysfs: %q", got)
	}
}
