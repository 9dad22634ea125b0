package nested

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// l1ModuleDir is where modules live inside L1. A flat directory suffices:
// the agent loads them by path in the order the host chose.
const l1ModuleDir = "/lib/modules/l1"

// moduleName is the kernel's idea of a module's name, which treats '-' and
// '_' as the same.
func moduleName(file string) string {
	base := path.Base(filepath.ToSlash(file))
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// moduleIndex knows, for one kernel's module tree, where each module is and
// what it depends on.
type moduleIndex struct {
	dir     string
	files   map[string]string   // name -> path relative to dir
	deps    map[string][]string // name -> dependency names, if known up front
	builtin map[string]bool
}

// loadModuleIndex prefers modules.dep, which depmod wrote for exactly this
// purpose, and falls back to reading each module's .modinfo: unpacked
// distribution kernels (like ours) often lack depmod's output.
func loadModuleIndex(dir string) (*moduleIndex, error) {
	ix := &moduleIndex{dir: dir, files: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			ix.builtin[moduleName(l)] = true
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.dep")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			mod, deps, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			name := moduleName(mod)
			ix.files[name] = mod
			// Present even when empty: modules.dep is authoritative.
			ix.deps[name] = []string{}
			for _, d := range strings.Fields(deps) {
				ix.deps[name] = append(ix.deps[name], moduleName(d))
				if _, ok := ix.files[moduleName(d)]; !ok {
					ix.files[moduleName(d)] = d
				}
			}
		}
		return ix, nil
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			ix.files[moduleName(d.Name())] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", dir, err)
	}
	if len(ix.files) == 0 {
		return nil, fmt.Errorf("no kernel modules under %s", dir)
	}
	return ix, nil
}

func (ix *moduleIndex) depsOf(name string) ([]string, error) {
	if d, ok := ix.deps[name]; ok {
		return d, nil
	}
	rel := ix.files[name]
	if !strings.HasSuffix(rel, ".ko") {
		return nil, fmt.Errorf("module %s (%s): cannot read dependencies of a compressed module without modules.dep", name, rel)
	}
	f, err := elf.Open(filepath.Join(ix.dir, rel))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", name)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: read .modinfo: %w", name, err)
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, moduleName(d))
				}
			}
		}
	}
	ix.deps[name] = deps
	return deps, nil
}

// resolve returns host paths of the named modules and everything they need,
// each after its dependencies, leaving out modules built into the kernel.
func (ix *moduleIndex) resolve(names []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		if ix.builtin[name] {
			state[name] = 2
			return nil
		}
		rel, ok := ix.files[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found in %s", name, strings.Join(chain, " -> "), ix.dir)
		}
		state[name] = 1
		deps, err := ix.depsOf(name)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, filepath.Join(ix.dir, rel))
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ResolveModules returns the host paths of the given modules (by name, e.g.
// "kvm-amd") and their dependencies from modulesDir, dependencies first.
func ResolveModules(modulesDir string, names []string) ([]string, error) {
	ix, err := loadModuleIndex(modulesDir)
	if err != nil {
		return nil, err
	}
	return ix.resolve(names)
}

// imageSpec is everything that goes into L1's initramfs.
type imageSpec struct {
	Init    string            // host path of the l1init binary
	Modules []string          // host paths, load order
	Files   map[string]string // L1 path -> host path
	Devices []string          // L1 device nodes the agent waits for
}

// reservedL1Paths are owned by the harness; user files must not replace
// them or the agent would not start.
func reservedL1Paths() []string {
	return []string{"init", "dev", "proc", "sys", "tmp", strings.TrimPrefix(proto.InitConfigPath, "/"), strings.TrimPrefix(l1ModuleDir, "/")}
}

func checkL1Path(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("L1 path %q is not absolute", p)
	}
	clean := strings.TrimPrefix(path.Clean(p), "/")
	if clean == "" {
		return "", fmt.Errorf("L1 path %q names the root", p)
	}
	for _, r := range reservedL1Paths() {
		if clean == r || strings.HasPrefix(clean, r+"/") || strings.HasPrefix(r, clean+"/") {
			return "", fmt.Errorf("L1 path %q collides with the harness's %q", p, "/"+r)
		}
	}
	return clean, nil
}

// writeImage writes the initramfs as an uncompressed newc archive:
// decompressing under TCG would cost more than reading the bigger file.
func writeImage(w io.Writer, spec imageSpec) (err error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	hostFile := func(l1Path, hostPath string, perm uint64) (cpio.Record, error) {
		f, err := os.Open(hostPath)
		if err != nil {
			return cpio.Record{}, fmt.Errorf("L1 file %s: %w", l1Path, err)
		}
		closers = append(closers, f)
		st, err := f.Stat()
		if err != nil {
			return cpio.Record{}, fmt.Errorf("L1 file %s: %w", l1Path, err)
		}
		if !st.Mode().IsRegular() {
			return cpio.Record{}, fmt.Errorf("L1 file %s: host path %s is not a regular file", l1Path, hostPath)
		}
		if perm == 0 {
			perm = uint64(st.Mode().Perm())
		}
		return cpio.Record{ReaderAt: f, Info: cpio.Info{
			Name: l1Path, Mode: cpio.S_IFREG | perm, FileSize: uint64(st.Size()),
		}}, nil
	}

	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o555),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
	}
	r, err := hostFile("init", spec.Init, 0o755)
	if err != nil {
		return err
	}
	recs = append(recs, r)

	cfg := proto.InitConfig{Devices: spec.Devices}
	for _, m := range spec.Modules {
		l1 := path.Join(l1ModuleDir, filepath.Base(m))
		r, err := hostFile(strings.TrimPrefix(l1, "/"), m, 0o644)
		if err != nil {
			return err
		}
		recs = append(recs, r)
		cfg.Modules = append(cfg.Modules, l1)
	}
	cfgJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode init config: %w", err)
	}
	recs = append(recs, cpio.StaticFile(strings.TrimPrefix(proto.InitConfigPath, "/"), string(cfgJSON)+"\n", 0o644))

	l1Paths := make([]string, 0, len(spec.Files))
	for p := range spec.Files {
		l1Paths = append(l1Paths, p)
	}
	sort.Strings(l1Paths)
	for _, p := range l1Paths {
		clean, err := checkL1Path(p)
		if err != nil {
			return err
		}
		r, err := hostFile(clean, spec.Files[p], 0)
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}

	for i := range recs {
		recs[i].Ino = uint64(i + 1)
		recs[i].NLink = 1
	}
	rw := cpio.NewDedupWriter(cpio.Newc.Writer(w))
	if err := cpio.WriteRecordsAndDirs(rw, recs); err != nil {
		return fmt.Errorf("write L1 initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("write L1 initramfs trailer: %w", err)
	}
	return nil
}

// buildImage writes the initramfs to a file in dir and returns its path.
func buildImage(dir string, spec imageSpec) (string, error) {
	p := filepath.Join(dir, "l1-initrd.cpio")
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("create L1 initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = writeImage(bw, spec)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close L1 initramfs: %w", cerr)
	}
	if err != nil {
		return "", errors.Join(err, os.Remove(p))
	}
	return p, nil
}
