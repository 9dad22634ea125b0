package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/internal/cachedir"
)

// PinnedABI is the Debian kernel ABI we boot by default. Pinning it keeps
// every developer and CI on the same kernel (and keeps the cache valid)
// until someone bumps it on purpose; Debian drops an ABI from the archive a
// while after the next security update, which is why FetchKernel falls back
// to whatever the meta package names when this one is gone.
const PinnedABI = "6.1.0-56"

// Flavor picks which of Debian's amd64 kernel builds to use.
type Flavor string

const (
	// FlavorCloud is linux-image-*-cloud-amd64: a kernel trimmed for
	// virtual machines, with virtio as modules; the default guest.
	FlavorCloud Flavor = "cloud"
	// FlavorGeneric is linux-image-*-amd64, Debian's everything kernel.
	FlavorGeneric Flavor = "generic"
)

// suffix is what Debian appends to the ABI in package and release names.
func (f Flavor) suffix() (string, error) {
	switch f {
	case FlavorCloud:
		return "-cloud-amd64", nil
	case FlavorGeneric:
		return "-amd64", nil
	}
	return "", fmt.Errorf("unknown kernel flavor %q (want %q or %q)", string(f), FlavorCloud, FlavorGeneric)
}

// Package is the name of the Debian package holding this flavor's kernel
// for the given ABI, e.g. linux-image-6.1.0-56-cloud-amd64.
func (f Flavor) Package(abi string) (string, error) {
	s, err := f.suffix()
	if err != nil {
		return "", err
	}
	return "linux-image-" + abi + s, nil
}

// MetaPackage is the package that always depends on the current kernel of
// this flavor, e.g. linux-image-cloud-amd64.
func (f Flavor) MetaPackage() (string, error) {
	s, err := f.suffix()
	if err != nil {
		return "", err
	}
	return "linux-image" + s, nil
}

// KernelFiles is an unpacked kernel package.
type KernelFiles struct {
	// Version is the kernel release (uname -r), e.g. 6.1.0-56-cloud-amd64.
	Version string
	// BzImage is the bootable kernel image.
	BzImage string
	// ModulesDir is .../lib/modules/<Version>.
	ModulesDir string
	// Package is the Debian package and version it came from, e.g.
	// linux-image-6.1.0-56-cloud-amd64_6.1.192-2; it also names the cache
	// directory, so it identifies the kernel for build stamps.
	Package string
}

// DefaultCacheDir is where vmm keeps downloads and builds between runs
// (cachedir.Dir: $VMM_CACHE, else $XDG_CACHE_HOME/vmm, else
// ~/.cache/vmm). Kernels go in its kernels/ subdirectory.
func DefaultCacheDir() string { return cachedir.Dir() }

// FetchKernel returns the kernel of the given flavor, downloading it with
// apt-get and unpacking it with dpkg-deb into cacheDir the first time.
// cacheDir "" means DefaultCacheDir()/kernels.
//
// Each package is unpacked into cacheDir/<package>_<version>/, first into a
// temporary directory that is renamed into place, so an interrupted run
// never leaves a half-unpacked kernel that a later run would trust. A warm
// cache needs neither apt nor the network.
//
// The kernel is linux-image-<PinnedABI>-<flavor>. If that package can no
// longer be downloaded (after an apt-get update), FetchKernel uses the one
// the flavor's meta package depends on, says so on stderr, and remembers the
// choice in cacheDir so later runs do not ask apt again.
func FetchKernel(ctx context.Context, flavor Flavor, cacheDir string) (*KernelFiles, error) {
	if cacheDir == "" {
		cacheDir = filepath.Join(DefaultCacheDir(), "kernels")
	}
	pkg, err := flavor.Package(PinnedABI)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	removeStaleTemps(cacheDir)

	if k, err := cachedKernel(cacheDir, pkg); k != nil || err != nil {
		return k, err
	}
	fallbackNote := filepath.Join(cacheDir, "fallback-"+string(flavor))
	if b, err := os.ReadFile(fallbackNote); err == nil {
		alt := strings.TrimSpace(string(b))
		k, err := cachedKernel(cacheDir, alt)
		if err != nil {
			return nil, err
		}
		if k != nil {
			fmt.Fprintf(os.Stderr, "guest: %s is not in the archive; using cached %s instead\n", pkg, k.Package)
			return k, nil
		}
	}

	deb, fresh, err := downloadDeb(ctx, cacheDir, pkg)
	if err != nil {
		meta, merr := flavor.MetaPackage()
		if merr != nil {
			return nil, merr
		}
		out, derr := run(ctx, cacheDir, "apt-cache", "depends", meta)
		if derr != nil {
			// Neither the pinned kernel nor the meta package: apt's
			// sources are not Debian's (Ubuntu, another distribution)
			// or have no lists at all.
			return nil, fmt.Errorf("%s and %s are not in this host's apt sources: vmm's guest kernels are Debian 12's, fetched with apt (run `apt-get update` as root, or add Debian 12's archive, or boot a kernel of your own with -kernel): %w; %w", pkg, meta, err, derr)
		}
		alt, perr := parseAptCacheDepends(out, flavor)
		if perr != nil {
			return nil, fmt.Errorf("%w; and looking for a fallback: %w", err, perr)
		}
		if alt == pkg {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "guest: cannot download pinned kernel %s (%v); falling back to %s, which %s depends on\n", pkg, err, alt, meta)
		if k, cerr := cachedKernel(cacheDir, alt); k != nil || cerr != nil {
			return k, cerr
		}
		if deb, fresh, err = downloadDeb(ctx, cacheDir, alt); err != nil {
			return nil, err
		}
		pkg = alt
		if err := os.WriteFile(fallbackNote, []byte(alt+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("kernel cache: %w", err)
		}
	}
	k, err := extractDeb(ctx, cacheDir, pkg, deb)
	if err != nil && ctx.Err() == nil && !errors.Is(err, exec.ErrNotFound) && !fresh {
		// A .deb cut short stays so: an older vmm downloaded in place,
		// and apt keeps a partial file to resume. Once more, afresh
		// (not one this run downloaded, nor after Ctrl-C or without
		// dpkg-deb, where a new copy would fail the same way).
		fmt.Fprintf(os.Stderr, "guest: %v; removing %s and downloading it again\n", err, filepath.Base(deb))
		if rerr := os.Remove(deb); rerr != nil {
			return nil, err
		}
		if deb, _, err = downloadDeb(ctx, cacheDir, pkg); err != nil {
			return nil, err
		}
		return extractDeb(ctx, cacheDir, pkg, deb)
	}
	return k, err
}

// parseAptCacheDepends finds, in the output of `apt-cache depends
// <meta package>`, the versioned kernel package of the flavor.
func parseAptCacheDepends(out []byte, flavor Flavor) (string, error) {
	s, err := flavor.suffix()
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(strings.TrimSpace(sc.Text()))
		// "Depends: pkg" or, for alternatives, "|Depends: pkg".
		if len(f) != 2 || strings.TrimPrefix(f[0], "|") != "Depends:" {
			continue
		}
		name := f[1]
		abi, ok := strings.CutPrefix(name, "linux-image-")
		if !ok {
			continue
		}
		abi, ok = strings.CutSuffix(abi, s)
		if !ok || !isABI(abi) {
			continue
		}
		return name, nil
	}
	return "", fmt.Errorf("no linux-image-*%s dependency in apt-cache output %q", s, out)
}

// isABI reports whether s looks like a Debian kernel ABI (6.1.0-56, or
// 6.1.0-0.deb11.21 for backports): it starts with a digit and so does its
// last dash-separated part. That rejects another flavor's package, such as
// linux-image-6.1.0-56-cloud-amd64 when looking for a generic one.
func isABI(s string) bool {
	digit := func(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }
	return digit(s) && digit(s[strings.LastIndex(s, "-")+1:])
}

// cachedKernel returns the newest complete unpacked copy of pkg in
// cacheDir, or nil if there is none.
func cachedKernel(cacheDir, pkg string) (*KernelFiles, error) {
	dirs, err := filepath.Glob(filepath.Join(cacheDir, pkg+"_*"))
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	var best string
	var bestTime time.Time
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if best == "" || fi.ModTime().After(bestTime) {
			best, bestTime = d, fi.ModTime()
		}
	}
	if best == "" {
		return nil, nil
	}
	return kernelFilesIn(best, pkg)
}

// kernelFilesIn describes the unpacked package pkg in dir, checking that the
// files we need are really there.
func kernelFilesIn(dir, pkg string) (*KernelFiles, error) {
	version := strings.TrimPrefix(pkg, "linux-image-")
	k := &KernelFiles{
		Version:    version,
		BzImage:    filepath.Join(dir, "boot", "vmlinuz-"+version),
		ModulesDir: filepath.Join(dir, "lib", "modules", version),
		Package:    filepath.Base(dir),
	}
	for _, p := range []string{k.BzImage, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kernel cache %s is incomplete (remove it to refetch): %w", dir, err)
		}
	}
	return k, nil
}

// downloadDeb returns a .deb of pkg in cacheDir, downloading it if there is
// none yet. When the download fails it runs apt-get update (the package
// lists may be missing or stale) and tries once more. apt-get download
// writes the file in place as it arrives, so it downloads into a
// directory of its own and the whole file is renamed into cacheDir: an
// interrupted download leaves nothing a later run would take for the
// package.
func downloadDeb(ctx context.Context, cacheDir, pkg string) (deb string, downloaded bool, err error) {
	if deb := newestDeb(cacheDir, pkg); deb != "" {
		return deb, false, nil
	}
	// Named as extractDeb's are, so that removeStaleTemps takes one a
	// killed run left.
	dl, err := os.MkdirTemp(cacheDir, fmt.Sprintf("%s%d-", tempPrefix, time.Now().Unix()))
	if err != nil {
		return "", false, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(dl)
	// apt-get drops root to _apt for downloads; in a directory _apt cannot
	// write it warns and carries on as root. Say so up front to keep the
	// output quiet.
	args := []string{"download", pkg}
	if os.Geteuid() == 0 {
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	fmt.Fprintf(os.Stderr, "guest: apt-get download %s\n", pkg)
	if _, err := run(ctx, dl, "apt-get", args...); err != nil {
		fmt.Fprintf(os.Stderr, "guest: download failed; running apt-get update and retrying\n")
		if _, uerr := run(ctx, dl, "apt-get", "update"); uerr != nil {
			return "", false, fmt.Errorf("download %s: %w (apt-get update: %w)", pkg, err, uerr)
		}
		if _, err := run(ctx, dl, "apt-get", args...); err != nil {
			return "", false, fmt.Errorf("download %s: %w", pkg, err)
		}
	}
	deb = newestDeb(dl, pkg)
	if deb == "" {
		return "", false, fmt.Errorf("download %s: apt-get succeeded but left no %s_*.deb", pkg, pkg)
	}
	dst := filepath.Join(cacheDir, filepath.Base(deb))
	if err := os.Rename(deb, dst); err != nil {
		return "", false, fmt.Errorf("kernel cache: %w", err)
	}
	return dst, true, nil
}

func newestDeb(dir, pkg string) string {
	debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	var best string
	var bestTime time.Time
	for _, d := range debs {
		if fi, err := os.Stat(d); err == nil && (best == "" || fi.ModTime().After(bestTime)) {
			best, bestTime = d, fi.ModTime()
		}
	}
	return best
}

// extractDeb unpacks deb into cacheDir/<pkg>_<version> atomically.
func extractDeb(ctx context.Context, cacheDir, pkg, deb string) (*KernelFiles, error) {
	out, err := run(ctx, cacheDir, "dpkg-deb", "--field", deb, "Version")
	if err != nil {
		return nil, fmt.Errorf("read version of %s: %w", deb, err)
	}
	version := strings.TrimSpace(string(out))
	if version == "" || strings.ContainsAny(version, "/ \n") {
		return nil, fmt.Errorf("read version of %s: odd version %q", deb, version)
	}
	final := filepath.Join(cacheDir, pkg+"_"+strings.ReplaceAll(version, ":", "%3a"))
	// The creation time goes into the name because dpkg-deb -x gives the
	// directory the package's own timestamp.
	tmp, err := os.MkdirTemp(cacheDir, fmt.Sprintf("%s%d-", tempPrefix, time.Now().Unix()))
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", deb, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if _, err := run(ctx, cacheDir, "dpkg-deb", "-x", deb, tmp); err != nil {
		return nil, fmt.Errorf("extract %s: %w", deb, err)
	}
	if _, err := kernelFilesIn(tmp, pkg); err != nil {
		return nil, fmt.Errorf("extract %s: %w", deb, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another run may have won the race; its copy is as good.
		if k, kerr := kernelFilesIn(final, pkg); kerr == nil {
			return k, nil
		}
		return nil, fmt.Errorf("extract %s: %w", deb, err)
	}
	return kernelFilesIn(final, pkg)
}

// tempPrefix starts with a dot so that no package glob matches it.
const tempPrefix = ".extract-"

// removeStaleTemps deletes unpack directories that an interrupted run left
// behind. Young ones are spared: a concurrent run may still be using them.
func removeStaleTemps(cacheDir string) {
	tmps, _ := filepath.Glob(filepath.Join(cacheDir, tempPrefix+"*"))
	for _, t := range tmps {
		stamp, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(t), tempPrefix), "-")
		created, err := strconv.ParseInt(stamp, 10, 64)
		if err == nil && time.Since(time.Unix(created, 0)) > time.Hour {
			os.RemoveAll(t)
		}
	}
}

// run runs a command in dir and returns its standard output; on failure the
// error carries the command line and its standard error.
func run(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return out, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out, nil
}
