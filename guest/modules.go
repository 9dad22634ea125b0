package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmm-dev/vmm/guest/internal/kmod"
)

// DefaultModules are the drivers the guest carries when
// InitramfsOptions.Modules is empty: the virtio transports and devices vmm
// can offer, and the file systems `vmm run` mounts (virtiofs and fuse for
// -share and -rootfs, overlay for -rootfs's writable layer). Their
// dependencies come along automatically.
func DefaultModules() []string {
	return []string{"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
		"fuse", "virtiofs", "overlay"}
}

// moduleTree is what we know about one kernel's module directory.
type moduleTree struct {
	dir     string
	index   *kmod.Index     // paths relative to dir, as found on disk
	builtin map[string]bool // modules compiled into the kernel
}

// loadModuleTree indexes dir (a lib/modules/<version> directory) well enough
// to resolve want. It prefers depmod's modules.dep; Debian's packages do not
// ship one (the postinst runs depmod), so usually it reads the "depends="
// field of each needed module's .modinfo section instead, which is where
// depmod gets the information from too.
func loadModuleTree(ctx context.Context, dir string, want []string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, builtin: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			t.builtin[kmod.Name(l)] = true
		}
	}
	if f, err := os.Open(filepath.Join(dir, "modules.dep")); err == nil {
		defer f.Close()
		ix, err := kmod.ParseDep(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		t.index = ix
		return t, nil
	}

	files := map[string]string{} // module name -> path relative to dir
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && isModuleFile(d.Name()) {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files[kmod.Name(rel)] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules: %w", err)
	}

	var mods []kmod.Module
	seen := map[string]bool{}
	queue := slices.Clone(want)
	for len(queue) > 0 {
		name := kmod.Name(queue[0])
		queue = queue[1:]
		if seen[name] || t.builtin[name] {
			continue
		}
		seen[name] = true
		rel, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("module %s: no such module in %s", name, dir)
		}
		b, err := readModule(ctx, filepath.Join(dir, rel))
		if err != nil {
			return nil, err
		}
		deps, err := modinfoDepends(b)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", name, err)
		}
		m := kmod.Module{Path: rel}
		for _, d := range deps {
			if t.builtin[d] {
				continue
			}
			dp, ok := files[d]
			if !ok {
				return nil, fmt.Errorf("module %s needs %s, which is not in %s", name, d, dir)
			}
			m.Deps = append(m.Deps, dp)
			queue = append(queue, d)
		}
		mods = append(mods, m)
	}
	ix, err := kmod.NewIndex(mods)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	t.index = ix
	return t, nil
}

// resolve returns the modules to ship for want, dependencies first. Wanted
// modules that are built into this kernel are dropped: there is nothing to
// load, and a flavor that builds virtio in should not fail the build.
func (t *moduleTree) resolve(want []string) ([]kmod.Module, error) {
	var names []string
	for _, w := range want {
		if !t.builtin[kmod.Name(w)] {
			names = append(names, w)
		}
	}
	mods, err := t.index.Closure(names)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.dir, err)
	}
	return mods, nil
}

// stageModules writes the chosen modules, uncompressed, and a modules.dep
// listing just them into dst (the image's lib/modules/<version>). Each
// module's line lists all of its dependencies, the last to be loaded first,
// as depmod does, so that modprobe-style tools could use the file too.
// Their aliases (from .modinfo) go into a modules.alias in depmod's
// format, by which vmm-init loads only the drivers of devices the machine
// has.
func (t *moduleTree) stageModules(ctx context.Context, mods []kmod.Module, dst string) error {
	var out []kmod.Module
	var aliases []kmod.Alias
	byPath := map[string]kmod.Module{}
	for _, m := range mods {
		byPath[m.Path] = m
	}
	for _, m := range mods {
		b, err := readModule(ctx, filepath.Join(t.dir, m.Path))
		if err != nil {
			return err
		}
		rel := uncompressedName(m.Path)
		p := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("stage module: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("stage module: %w", err)
		}
		patterns, err := modinfo(b, "alias")
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Path, err)
		}
		for _, pat := range patterns {
			if _, err := path.Match(pat, ""); err != nil || strings.ContainsAny(pat, " \t\n") {
				continue // not one modules.alias can hold or vmm-init match; no kernel writes one
			}
			aliases = append(aliases, kmod.Alias{Pattern: pat, Module: kmod.Name(rel)})
		}
		// All dependencies, in load order, then reversed.
		closure, err := t.index.Closure([]string{kmod.Name(m.Path)})
		if err != nil {
			return fmt.Errorf("%s: %w", t.dir, err)
		}
		var deps []string
		for i := len(closure) - 2; i >= 0; i-- { // the last one is m itself
			deps = append(deps, uncompressedName(closure[i].Path))
		}
		out = append(out, kmod.Module{Path: rel, Deps: deps})
	}
	f, err := os.Create(filepath.Join(dst, "modules.dep"))
	if err != nil {
		return fmt.Errorf("stage modules.dep: %w", err)
	}
	if err := kmod.WriteDep(f, out); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("stage modules.dep: %w", err)
	}
	var buf bytes.Buffer
	if err := kmod.WriteAlias(&buf, aliases); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.alias"), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("stage modules.alias: %w", err)
	}
	return nil
}

func isModuleFile(name string) bool {
	return strings.HasSuffix(uncompressedName(name), ".ko")
}

func uncompressedName(p string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

// readModule returns the contents of a module file, decompressed. Debian
// 12's modules are plain .ko; newer kernels compress them, and the guest's
// loader passes no decompression flag to finit_module, so we decompress
// here. xz and zstd are done by their command-line tools, to avoid a
// dependency for a case Debian 12 does not have.
func readModule(ctx context.Context, p string) ([]byte, error) {
	switch path.Ext(p) {
	case ".ko":
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return b, nil
	case ".gz":
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", p, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", p, err)
		}
		return b, nil
	case ".xz", ".zst":
		tool := map[string]string{".xz": "xz", ".zst": "zstd"}[path.Ext(p)]
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, tool, "-dc", p)
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("decompress %s with %s: %w: %s", p, tool, err, strings.TrimSpace(stderr.String()))
		}
		return b, nil
	}
	return nil, fmt.Errorf("read module %s: unknown file type", p)
}

// modinfoDepends returns the module names in the "depends=" entry of a
// module's .modinfo section.
func modinfoDepends(ko []byte) ([]string, error) {
	vals, err := modinfo(ko, "depends")
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, v := range vals {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, kmod.Name(d))
			}
		}
	}
	return deps, nil
}

// modinfo returns the values of every key= entry of a module's .modinfo
// section (NUL-separated key=value strings; "alias" appears once per
// alias).
func modinfo(ko []byte, key string) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			out = append(out, string(v))
		}
	}
	return out, nil
}
