package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Only the interfaces virtio-net drives are configured by DHCP: not lo
// (no device), not another driver's card.
func TestVirtioNetCards(t *testing.T) {
	root := t.TempDir()
	drivers := filepath.Join(root, "bus", "virtio", "drivers")
	class := filepath.Join(root, "class", "net")
	for name, driver := range map[string]string{"eth1": "virtio_net", "eth0": "virtio_net", "eth2": "e1000", "lo": ""} {
		dev := filepath.Join(class, name, "device")
		if err := os.MkdirAll(dev, 0o755); err != nil {
			t.Fatal(err)
		}
		if driver == "" {
			continue
		}
		os.MkdirAll(filepath.Join(drivers, driver), 0o755)
		if err := os.Symlink(filepath.Join(drivers, driver), filepath.Join(dev, "driver")); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := virtioNetCards(class), []string{"eth0", "eth1"}; !slices.Equal(got, want) {
		t.Fatalf("cards %v, want %v", got, want)
	}
	if got := virtioNetCards(filepath.Join(root, "missing")); len(got) != 0 {
		t.Fatalf("cards in a missing directory: %v", got)
	}
}

func TestDHCPDisabled(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cmdline string
		want    bool
	}{
		{"console=ttyS0 quiet\n", false},
		{"console=ttyS0 vmm.dhcp=off quiet\n", true},
		{"vmm.dhcp=off", true},
		{"vmm.dhcp=offline", false},
		{"xvmm.dhcp=off", false},
	} {
		p := filepath.Join(dir, "cmdline")
		if err := os.WriteFile(p, []byte(c.cmdline), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := dhcpDisabled(p); got != c.want {
			t.Errorf("%q: disabled = %v, want %v", c.cmdline, got, c.want)
		}
	}
	if dhcpDisabled(filepath.Join(dir, "missing")) {
		t.Error("a missing command line disables DHCP")
	}
}
