package nested

import (
	"context"
	"fmt"
	"os"
	"os/exec"

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

// BuildVMM compiles vmm to out as the Makefile does, static and linked
// with selfmem.LDFlags, from the module rooted at root: the one build of
// vmm the benchmarks and the end-to-end suite share.
func BuildVMM(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+selfmem.LDFlags, "-o", out, VMMPackage)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nested: build %s: %w\n%s", VMMPackage, err, b)
	}
	return nil
}
