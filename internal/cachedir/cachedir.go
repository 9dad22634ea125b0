// Package cachedir says where vmm keeps what it reuses between runs
// (downloaded kernels, decompressed kernels): one rule, so that vmm, its
// build tools and its tests agree on the directory and $VMM_CACHE moves
// all of it at once.
package cachedir

import (
	"os"
	"path/filepath"
	"strconv"
)

// Dir is $VMM_CACHE, else $XDG_CACHE_HOME/vmm, else ~/.cache/vmm (the XDG
// base directory default), else vmm-cache-UID in the temporary directory
// when there is no home (a service without HOME): one per user, since
// the first user to make a shared one would keep every other out of it.
// It is the rule guest.DefaultCacheDir follows.
func Dir() string {
	if d := os.Getenv("VMM_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vmm")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "vmm")
	}
	return filepath.Join(os.TempDir(), "vmm-cache-"+strconv.Itoa(os.Geteuid()))
}
