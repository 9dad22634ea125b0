package testkernel

import (
	"os"
	"path/filepath"
	"testing"
)

// RealCloud returns Debian's cloud kernel (a bzImage) from vmm's cache,
// where `make` or the nested tests put it ($VMM_CACHE, else ~/.cache/vmm;
// see guest.DefaultCacheDir), and skips the test when there is none.
func RealCloud(t testing.TB) []byte {
	t.Helper()
	dir := os.Getenv("VMM_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skipf("no real kernel: %v", err)
		}
		dir = filepath.Join(home, ".cache", "vmm")
	}
	found, _ := filepath.Glob(filepath.Join(dir, "kernels", "linux-image-*-cloud-amd64_*", "boot", "vmlinuz-*"))
	if len(found) == 0 {
		t.Skipf("no real kernel in %s/kernels", dir)
	}
	img, err := os.ReadFile(found[0])
	if err != nil {
		t.Fatal(err)
	}
	return img
}
