package cachedir

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestDir(t *testing.T) {
	for _, tc := range []struct {
		vmm, xdg, home, want string
	}{
		{"/x/vmm", "/xdg", "/home/u", "/x/vmm"},
		{"", "/xdg", "/home/u", "/xdg/vmm"},
		{"", "", "/home/u", "/home/u/.cache/vmm"},
		// No home (a service without HOME): one directory per user.
		{"", "", "", filepath.Join(os.TempDir(), "vmm-cache-"+strconv.Itoa(os.Geteuid()))},
	} {
		t.Setenv("VMM_CACHE", tc.vmm)
		t.Setenv("XDG_CACHE_HOME", tc.xdg)
		t.Setenv("HOME", tc.home)
		if got := Dir(); got != filepath.FromSlash(tc.want) {
			t.Errorf("VMM_CACHE=%q XDG_CACHE_HOME=%q HOME=%q: %q, want %q", tc.vmm, tc.xdg, tc.home, got, tc.want)
		}
	}
}
