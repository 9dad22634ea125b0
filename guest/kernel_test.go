package guest

import (
	"path/filepath"
	"testing"
)

func TestFlavorPackages(t *testing.T) {
	for _, tc := range []struct {
		flavor    Flavor
		pkg, meta string
	}{
		{FlavorCloud, "linux-image-6.1.0-56-cloud-amd64", "linux-image-cloud-amd64"},
		{FlavorGeneric, "linux-image-6.1.0-56-amd64", "linux-image-amd64"},
	} {
		pkg, err := tc.flavor.Package("6.1.0-56")
		if err != nil || pkg != tc.pkg {
			t.Errorf("%s.Package = %q, %v; want %q", tc.flavor, pkg, err, tc.pkg)
		}
		meta, err := tc.flavor.MetaPackage()
		if err != nil || meta != tc.meta {
			t.Errorf("%s.MetaPackage = %q, %v; want %q", tc.flavor, meta, err, tc.meta)
		}
	}
	if _, err := Flavor("rt").Package(PinnedABI); err == nil {
		t.Error("unknown flavor accepted")
	}
}

func TestParseAptCacheDepends(t *testing.T) {
	const cloud = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n"
	const generic = "linux-image-amd64\n" +
		"  Depends: linux-base\n" +
		" |Depends: linux-image-6.1.0-0.deb11.21-amd64\n" +
		"  Depends: linux-image-6.1.0-57-amd64\n"
	for _, tc := range []struct {
		flavor Flavor
		out    string
		want   string
	}{
		{FlavorCloud, cloud, "linux-image-6.1.0-57-cloud-amd64"},
		{FlavorGeneric, generic, "linux-image-6.1.0-0.deb11.21-amd64"},
		{FlavorGeneric, "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n", "linux-image-6.1.0-57-amd64"},
	} {
		got, err := parseAptCacheDepends([]byte(tc.out), tc.flavor)
		if err != nil || got != tc.want {
			t.Errorf("parseAptCacheDepends(%s) = %q, %v; want %q", tc.flavor, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		flavor Flavor
		out    string
	}{
		{FlavorCloud, ""},
		{FlavorCloud, "linux-image-cloud-amd64\n  Depends: linux-base\n"},
		// A generic lookup must not take the cloud package.
		{FlavorGeneric, cloud},
		{FlavorGeneric, "  Depends: linux-image-6.1.0-57-rt-amd64\n"},
		{FlavorGeneric, "  Recommends: linux-image-6.1.0-57-amd64\n"},
	} {
		if got, err := parseAptCacheDepends([]byte(tc.out), tc.flavor); err == nil {
			t.Errorf("parseAptCacheDepends(%s, %q) = %q, want an error", tc.flavor, tc.out, got)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("VMM_CACHE", "/x/vmm")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got := DefaultCacheDir(); got != "/x/vmm" {
		t.Errorf("with VMM_CACHE: %q", got)
	}
	t.Setenv("VMM_CACHE", "")
	if got := DefaultCacheDir(); got != "/xdg/vmm" {
		t.Errorf("with XDG_CACHE_HOME: %q", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got := DefaultCacheDir(); got != filepath.Join("/home/u", ".cache", "vmm") {
		t.Errorf("with HOME: %q", got)
	}
}
