package nested

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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
