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

// NetHelperPackage is the import path of vmm-net, the helper that runs
// -nic user's network (package usernet/remote).
const NetHelperPackage = "github.com/vmm-dev/vmm/cmd/vmm-net"

// NetHelper is where BuildVMM puts vmm-net for a vmm built to vmm: next
// to it, where vmm looks. In L1 it goes to /vmm-net, beside /vmm.
func NetHelper(vmm string) string {
	return filepath.Join(filepath.Dir(vmm), "vmm-net")
}

// BuildVMM compiles vmm to out as the Makefile does, static and linked
// with selfmem.LDFlags, from the module rooted at root, and vmm-net to
// NetHelper(out): the one build of vmm the benchmarks and the end-to-end
// suite share.
func BuildVMM(ctx context.Context, root, out string) error {
	for pkg, o := range map[string]string{VMMPackage: out, NetHelperPackage: NetHelper(out)} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+selfmem.LDFlags, "-o", o, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nested: build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}
