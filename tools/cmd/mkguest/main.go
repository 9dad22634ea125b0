// Command mkguest builds vmm's default guest: it fetches a Debian kernel
// (cached) and builds a u-root initramfs for it, writing OUT/bzImage,
// OUT/initrd.cpio (the image `vmm run` jobs boot) and
// OUT/initrd-iotool.cpio (the same with vmm-iotool, which `make bench`
// and the disk and network tests drive) and printing their paths.
//
// It remembers what it built in OUT/stamp (kernel package, u-root version,
// Go version, module list, and a hash of go.mod and the guest sources) and
// does nothing when that has not changed, so a Makefile can run it every
// time.
//
//	go run ./cmd/mkguest -flavor cloud -out build/guest-cloud
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/tools/internal/flagspell"
)

func main() {
	fs := pflag.NewFlagSet("mkguest", pflag.ContinueOnError)
	flavor := fs.String("flavor", string(guest.FlavorCloud), "kernel flavor: cloud or generic")
	out := fs.String("out", "", "output directory (default build/guest-FLAVOR)")
	cache := fs.String("cache", "", "kernel cache directory (default "+filepath.Join(guest.DefaultCacheDir(), "kernels")+")")
	modules := fs.StringSlice("modules", nil, "kernel modules to include, with their dependencies (default "+strings.Join(guest.DefaultModules(), ",")+")")
	force := fs.BoolP("force", "f", false, "rebuild even if the stamp says nothing changed")
	if err := fs.Parse(flagspell.SingleDashLong(fs, os.Args[1:])); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		os.Exit(2) // pflag has printed the error and usage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "mkguest: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if *out == "" {
		*out = filepath.Join("build", "guest-"+*flavor)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, guest.Flavor(*flavor), *out, *cache, *modules, *force); err != nil {
		fmt.Fprintf(os.Stderr, "mkguest: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, flavor guest.Flavor, out, cache string, modules []string, force bool) error {
	start := time.Now()
	k, err := guest.FetchKernel(ctx, flavor, cache)
	if err != nil {
		return err
	}
	if len(modules) == 0 {
		modules = guest.DefaultModules()
	}
	stamp, err := makeStamp(ctx, k, modules)
	if err != nil {
		return err
	}
	bz := filepath.Join(out, "bzImage")
	initrd := filepath.Join(out, "initrd.cpio")
	withIotool := filepath.Join(out, "initrd-iotool.cpio")
	stampFile := filepath.Join(out, "stamp")
	outputs := []string{bz, initrd, withIotool}

	if !force && upToDate(stampFile, stamp, outputs...) {
		for _, o := range outputs {
			fmt.Println(o)
		}
		return nil
	}
	// Invalidate first: if we die half way, the next run must rebuild,
	// and no image of the last build may sit beside a new one.
	if err := os.Remove(stampFile); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale stamp: %w", err)
	}
	if err := os.Remove(withIotool); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale %s: %w", withIotool, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	if err := copyFile(k.BzImage, bz); err != nil {
		return err
	}
	if err := guest.BuildInitramfs(ctx, guest.InitramfsOptions{Out: initrd, Kernel: k, Modules: modules}); err != nil {
		return err
	}
	if err := guest.AddIotool(ctx, initrd, withIotool); err != nil {
		return err
	}
	if err := os.WriteFile(stampFile, []byte(stamp), 0o644); err != nil {
		return fmt.Errorf("write stamp: %w", err)
	}
	fmt.Fprintf(os.Stderr, "mkguest: built %s guest (kernel %s) in %s\n", flavor, k.Version, time.Since(start).Round(100*time.Millisecond))
	for _, o := range outputs {
		fmt.Println(o)
	}
	return nil
}

// upToDate reports whether the outputs exist and were built from the inputs
// that stamp describes.
func upToDate(stampFile, stamp string, outputs ...string) bool {
	b, err := os.ReadFile(stampFile)
	if err != nil || string(b) != stamp {
		return false
	}
	for _, o := range outputs {
		if _, err := os.Stat(o); err != nil {
			return false
		}
	}
	return true
}

// makeStamp describes everything the outputs are built from. It is text so
// that a person can see why a rebuild happened by diffing two stamps.
func makeStamp(ctx context.Context, k *guest.KernelFiles, modules []string) (string, error) {
	root, err := guest.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	uroot, err := guest.UrootVersion(ctx)
	if err != nil {
		return "", err
	}
	gover, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	deps, err := guest.ImageSources(ctx)
	if err != nil {
		return "", err
	}
	src, err := hashSources(root, deps)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stamp-format: 1\n")
	fmt.Fprintf(&b, "kernel: %s\n", k.Package)
	fmt.Fprintf(&b, "u-root: %s\n", uroot)
	fmt.Fprintf(&b, "go: %s\n", strings.TrimSpace(string(gover)))
	fmt.Fprintf(&b, "modules: %s\n", strings.Join(modules, ","))
	fmt.Fprintf(&b, "sources: %s\n", src)
	return b.String(), nil
}

// hashSources hashes go.mod, go.sum, the non-test files under guest/ and
// deps, the sources of every vmm package compiled into the image (some
// live outside guest/): everything of ours that ends up in the image.
func hashSources(root string, deps []string) (string, error) {
	files := append([]string{"go.mod", "go.sum"}, deps...)
	err := filepath.WalkDir(filepath.Join(root, "guest"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && !strings.HasSuffix(d.Name(), "_test.go") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash guest sources: %w", err)
	}
	sort.Strings(files)
	files = slices.Compact(files)
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", fmt.Errorf("hash guest sources: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyFile copies src to dst through a temporary file, so dst is never
// half written.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".copy-")
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}
