package kmod

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
)

func imageIndex(t *testing.T) (*Index, []Alias) {
	t.Helper()
	ix := loadDep(t, "testdata/image.dep")
	b, err := os.ReadFile("testdata/image.alias")
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := ParseAlias(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return ix, aliases
}

func joinNames(mods []Module) string {
	var s []string
	for _, m := range mods {
		s = append(s, Name(m.Path))
	}
	return strings.Join(s, " ")
}

// Modaliases as Linux writes them for vmm's devices.
const (
	pciBlk  = "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"
	pciNet  = "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"
	blk     = "virtio:d00000002v0000554D"
	net     = "virtio:d00000001v0000554D"
	fs      = "virtio:d0000001Av0000554D"
	mmio    = "acpi:LNRO0005:"
	cpu     = "cpu:type:x86,ven0002fam0017mod0001:feature:,0000,0001"
	e1000   = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
	serialP = "acpi:PNP0501:PNP0500:"
)

func TestForDevices(t *testing.T) {
	ix, aliases := imageIndex(t)
	for _, tt := range []struct {
		name       string
		modaliases []string
		skip       []string
		want       string
	}{
		// Drivers only for their devices; libraries only as
		// dependencies; file systems not at all (the kernel asks for
		// them by alias).
		{"no virtio device", []string{cpu, e1000, serialP}, nil, ""},
		{"virtio-pci functions, before their driver", []string{cpu, pciBlk, pciNet}, nil,
			"virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci"},
		{"the virtio devices virtio_pci found", []string{cpu, pciBlk, pciNet, blk, net},
			[]string{"fuse", "overlay", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"},
			"virtio_blk failover net_failover virtio_net"},
		{"a share", []string{fs}, []string{"virtio_ring", "virtio"}, "fuse virtiofs"},
		{"virtio-mmio in ACPI", []string{mmio}, nil, "virtio_ring virtio virtio_mmio"},
		{"everything loaded", []string{pciBlk, blk}, []string{"virtio_pci_legacy_dev", "virtio_pci_modern_dev",
			"virtio_ring", "virtio", "virtio_pci", "virtio_blk"}, ""},
	} {
		skip := map[string]bool{}
		for _, s := range tt.skip {
			skip[s] = true
		}
		mods, err := ix.ForDevices(aliases, tt.modaliases, skip)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := joinNames(mods); got != tt.want {
			t.Errorf("%s: ForDevices = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	ix, aliases := imageIndex(t)
	for _, tt := range []struct{ name, want string }{
		{"fs-overlay", "overlay"},
		{"fs-virtiofs", "fuse virtio_ring virtio virtiofs"},
		{"char-major-10-229", "fuse"},
		{"virtio-blk", "virtio_ring virtio virtio_blk"}, // a module's name, - for _
		{"virtio:d00000001v0000554D", "failover net_failover virtio_ring virtio virtio_net"},
		{"net-pf-10", ""},
		{"fs-ext4", ""},
		// Only the kernel's prefixed names, not a path to any module.
		{"fs-x/overlay", ""},
		{"crypto-../../virtio_net", ""},
		{"virtio_net.ko", ""},
	} {
		mods, err := ix.Resolve(aliases, tt.name)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Resolve(%q) = %q, want an error", tt.name, joinNames(mods))
			}
			continue
		}
		if got := joinNames(mods); err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestStaticNodes(t *testing.T) {
	_, aliases := imageIndex(t)
	aliases = append(aliases,
		Alias{"devname:net/tun", "tun"}, Alias{"char-major-10-200", "tun"},
		Alias{"devname:loop-control", "loop"}, Alias{"char-major-10-237", "loop"}, Alias{"block-major-7-*", "loop"},
		Alias{"devname:nvme-fabrics", "nvme_fabrics"}, // no major: no node
		Alias{"devname:../evil", "evil"}, Alias{"char-major-1-1", "evil"},
		Alias{"block-major-259-3", "blk"}, Alias{"devname:blk0", "blk"})
	var got []string
	for _, n := range StaticNodes(aliases) {
		kind := "c"
		if n.Block {
			kind = "b"
		}
		got = append(got, fmt.Sprintf("%s:%s:%s%d:%d", n.Module, n.Name, kind, n.Major, n.Minor))
	}
	want := "fuse:fuse:c10:229 tun:net/tun:c10:200 loop:loop-control:c10:237 blk:blk0:b259:3"
	if strings.Join(got, " ") != want {
		t.Errorf("StaticNodes = %q, want %q", strings.Join(got, " "), want)
	}
	if got := strings.Join(FileSystems(aliases), " "); got != "virtiofs fuse overlay" {
		t.Errorf("FileSystems = %q", got)
	}
}

func TestIsDeviceAlias(t *testing.T) {
	for p, want := range map[string]bool{
		"pci:v00001AF4d*sv*sd*bc*sc*i*": true,
		"virtio:d00000002v*":            true,
		"acpi*:LNRO0005:*":              true,
		"of:N*T*Cvirtio,mmio":           true,
		"fs-overlay":                    false,
		"devname:fuse":                  false,
		"char-major-10-229":             false,
		":x":                            false,
		"Weird Bus:x":                   false,
	} {
		if got := IsDeviceAlias(p); got != want {
			t.Errorf("IsDeviceAlias(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestParseAlias(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{"# c\n\nalias fs-overlay overlay\nalias virtio:d00000004v* virtio-rng\n", "fs-overlay=overlay virtio:d00000004v*=virtio_rng", ""},
		{"alias fs-overlay\n", "", "line 1"},
		{"softdep a pre: b\n", "", "line 1"},
		{"\nalias [ x\n", "", "line 2: pattern"},
		{"alias x .ko\n", "", `line 1: module ".ko" has no name`},
		{"alias x dir/.ko\n", "", "has no name"},
	} {
		got, err := ParseAlias(strings.NewReader(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseAlias(%q) error %v, want one with %q", tt.in, err, tt.err)
			}
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.Pattern+"="+a.Module)
		}
		if err != nil || strings.Join(s, " ") != tt.want {
			t.Errorf("ParseAlias(%q) = %q, %v; want %q", tt.in, strings.Join(s, " "), err, tt.want)
		}
	}
	// What WriteAlias writes, ParseAlias reads back.
	_, aliases := imageIndex(t)
	var buf bytes.Buffer
	if err := WriteAlias(&buf, aliases); err != nil {
		t.Fatal(err)
	}
	back, err := ParseAlias(&buf)
	if err != nil || len(back) != len(aliases) {
		t.Fatalf("round trip: %d aliases, %v; want %d", len(back), err, len(aliases))
	}
	for i := range back {
		if back[i] != aliases[i] {
			t.Errorf("round trip: %v, want %v", back[i], aliases[i])
		}
	}
}

// FuzzParseAlias: modules.alias comes from an initramfs, which a user may
// build; no input may panic the parser, and what it accepts writes back
// to the same aliases.
func FuzzParseAlias(f *testing.F) {
	b, err := os.ReadFile("testdata/image.alias")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("alias [ x\n")
	f.Add("alias a b c\n")
	f.Add("alias x kernel/drivers/.ko\n")
	f.Add(strings.Repeat("x", maxAliasLine+1))
	f.Fuzz(func(t *testing.T, in string) {
		aliases, err := ParseAlias(strings.NewReader(in))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteAlias(&buf, aliases); err != nil {
			t.Fatal(err)
		}
		back, err := ParseAlias(&buf)
		if err != nil || !slices.Equal(back, aliases) {
			t.Fatalf("round trip of %q: %v, %v; want %v", in, back, err, aliases)
		}
		StaticNodes(aliases)
		FileSystems(aliases)
	})
}

// FuzzResolve: modprobe's name can come from unprivileged code (a
// mount's file system type becomes "fs-TYPE"): no name may panic, and a
// name with a '/' may not reach a module by its path.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"fs-overlay", "virtio_blk", "fs-x/overlay", "virtio:d00000001v0000554D", "[", "*", ".ko"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ix, aliases := imageIndex(t)
		mods, err := ix.Resolve(aliases, name)
		if err != nil {
			return
		}
		if len(mods) == 0 {
			t.Fatalf("Resolve(%q): no modules and no error", name)
		}
		if strings.Contains(name, "/") {
			for _, a := range aliases {
				if ok, _ := path.Match(a.Pattern, name); ok {
					return
				}
			}
			t.Fatalf("Resolve(%q) = %q by a path", name, joinNames(mods))
		}
	})
}
