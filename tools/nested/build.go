package nested

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vmm-dev/vmm/internal/selfmem"
)

// InitPackage is the import path of L1's /init.
const InitPackage = "github.com/vmm-dev/vmm/tools/nested/cmd/l1init"

// BuildInit compiles l1init to out. It must run inside the vmm module;
// callers elsewhere pass a prebuilt binary as Config.Init. The binary is
// static because L1's initramfs has no libc.
func BuildInit(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, InitPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nested: build %s: %w\n%s", InitPackage, err, b)
	}
	return nil
}

// VMMPackage is the import path of vmm itself.
const VMMPackage = "github.com/vmm-dev/vmm/cmd/vmm"

// helpers are vmm's helper programs, each built next to vmm, where vmm
// looks for it (package internal/helperbin): file name to import path.
func helpers() map[string]string {
	return map[string]string{
		"vmm-net":    "github.com/vmm-dev/vmm/cmd/vmm-net",    // -nic user's network
		"vmm-unpack": "github.com/vmm-dev/vmm/cmd/vmm-unpack", // the kernel cache's decompressor, -out's unpacker
	}
}

// Helpers returns where BuildVMM puts vmm's helpers for a vmm built to
// vmm, keyed by where they go in L1: next to /vmm, as they are next to
// vmm.
func Helpers(vmm string) map[string]string {
	m := make(map[string]string)
	for name := range helpers() {
		m["/"+name] = filepath.Join(filepath.Dir(vmm), name)
	}
	return m
}

// BuildVMM compiles vmm to out as the Makefile does, static and linked
// with selfmem.LDFlags, from the module rooted at root, and its helpers
// next to it (Helpers): the one build of vmm the benchmarks and the
// end-to-end suite share.
func BuildVMM(ctx context.Context, root, out string) error {
	builds := map[string]string{VMMPackage: out}
	for name, pkg := range helpers() {
		builds[pkg] = filepath.Join(filepath.Dir(out), name)
	}
	for pkg, o := range builds {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+selfmem.LDFlags, "-o", o, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nested: build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}
