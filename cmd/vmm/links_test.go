package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoHelperCode checks that vmm does not link what runs in its
// helpers: the user network's stack (vmm-net), the kernel decoders and
// -out's tar reader (vmm-unpack). Linked, their initializers would run and the kernel would
// map their pages in every vmm, whether a run uses them or not (package
// internal/helperbin says why they are apart). Nor Go's FIPS 140 module,
// which crypto/sha256 and crypto/rand bring for one hash and some random
// bytes (package snapshot says what vmm uses instead), nor math/big and
// the math/rand it brings, some 100 KB of code and tables that -m's
// fractions (1.5G) needed (fracBits does them exactly without).
func TestLinksNoHelperCode(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list vmm's packages")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"gvisor.dev/",
			"github.com/vmm-dev/vmm/usernet",
			"github.com/klauspost/compress",
			"github.com/ulikunitz/xz",
			"github.com/therootcompany/xz",
			"github.com/pierrec/lz4",
			"compress/gzip",
			"github.com/vmm-dev/vmm/kernelimage/unpack",
			"github.com/vmm-dev/vmm/runjob/outtar",
			"archive/tar",
			"crypto/internal/fips140",
			"math/big",
		} {
			// usernet/remote and usernet/hostfwd are vmm's end of the
			// wire and its command line's rules, usernet/vnethdr the
			// frame header both ends share.
			if strings.HasPrefix(pkg, banned) && !vmmSideOfUsernet(pkg) {
				t.Errorf("vmm links %s, which belongs in a helper", pkg)
			}
		}
	}
}

// vmmSideOfUsernet says pkg is one of usernet's packages vmm itself
// links: none of them imports the stack.
func vmmSideOfUsernet(pkg string) bool {
	for _, p := range []string{"remote", "hostfwd", "vnethdr"} {
		if pkg == "github.com/vmm-dev/vmm/usernet/"+p {
			return true
		}
	}
	return false
}
