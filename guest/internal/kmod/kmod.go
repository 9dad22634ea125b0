// Package kmod reads and writes depmod's modules.dep format and orders
// modules so that each one is loaded after everything it depends on.
//
// It is shared by the host side (which picks the modules to ship and writes a
// filtered modules.dep into the initramfs) and by vmm-init (which loads them
// in the guest), so both agree on names and order. It deliberately imports
// only the standard library: vmm-init is built into the initramfs and should
// stay small.
package kmod

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Name returns the kernel's name for the module file p: the base name without
// the .ko (and any compression) suffix, with '-' folded to '_' because the
// kernel treats them as the same character in module names.
func Name(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// Module is one line of modules.dep.
type Module struct {
	// Path is relative to /lib/modules/<version>, as depmod writes it.
	Path string
	// Deps are the paths of the modules this one needs, as listed by
	// depmod (all of them, not just the direct ones).
	Deps []string
}

// Index is a parsed modules.dep. Modules keep their order in the file so
// that everything derived from an Index is deterministic.
type Index struct {
	Modules []Module
	byName  map[string]int
}

// NewIndex builds an Index from modules. It fails if two modules share a
// name, because the kernel could only ever load one of them.
func NewIndex(mods []Module) (*Index, error) {
	ix := &Index{Modules: mods, byName: make(map[string]int, len(mods))}
	for i, m := range mods {
		n := Name(m.Path)
		if j, dup := ix.byName[n]; dup {
			return nil, fmt.Errorf("module %s appears twice (%s and %s)", n, mods[j].Path, m.Path)
		}
		ix.byName[n] = i
	}
	return ix, nil
}

// ParseDep parses modules.dep ("path: dep dep ..." per line). Blank lines and
// '#' comments are ignored.
func ParseDep(r io.Reader) (*Index, error) {
	var mods []Module
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		p, deps, ok := strings.Cut(t, ":")
		p = strings.TrimSpace(p)
		if !ok || p == "" {
			return nil, fmt.Errorf("modules.dep line %d: want \"path: deps\", got %q", line, t)
		}
		if Name(p) == "" {
			// ".ko" or "dir/.ko.xz": no name to load it or find it by.
			return nil, fmt.Errorf("modules.dep line %d: module %q has no name", line, p)
		}
		mods = append(mods, Module{Path: p, Deps: strings.Fields(deps)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return NewIndex(mods)
}

// Lookup returns the module called name (either spelling of '-'/'_').
func (ix *Index) Lookup(name string) (Module, bool) {
	i, ok := ix.byName[Name(name)]
	if !ok {
		return Module{}, false
	}
	return ix.Modules[i], true
}

// Closure returns the modules named by names together with everything they
// depend on, in an order in which they can be loaded: every module comes
// after all of its dependencies. A name that is not in the index is an error;
// a dependency path without its own line is an error too, since the result
// would not load.
func (ix *Index) Closure(names []string) ([]Module, error) {
	var out []Module
	state := map[string]int{} // 0 unseen, 1 in progress, 2 done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("dependency cycle through module %s", name)
		case 2:
			return nil
		}
		m, ok := ix.Lookup(name)
		if !ok {
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in modules.dep", name, from)
			}
			return fmt.Errorf("module %s is not in modules.dep", name)
		}
		state[name] = 1
		// Visit dependencies in sorted order so the result does not
		// depend on how depmod happened to list them.
		deps := make([]string, 0, len(m.Deps))
		for _, d := range m.Deps {
			deps = append(deps, Name(d))
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m)
		return nil
	}
	for _, n := range names {
		if err := visit(Name(n), ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadOrder returns every module of the index, dependencies first.
func (ix *Index) LoadOrder() ([]Module, error) {
	names := make([]string, len(ix.Modules))
	for i, m := range ix.Modules {
		names[i] = Name(m.Path)
	}
	return ix.Closure(names)
}

// WriteDep writes mods in modules.dep format. Deps are written as given.
func WriteDep(w io.Writer, mods []Module) error {
	bw := bufio.NewWriter(w)
	for _, m := range mods {
		bw.WriteString(m.Path)
		bw.WriteString(":")
		for _, d := range m.Deps {
			bw.WriteString(" ")
			bw.WriteString(d)
		}
		bw.WriteString("\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write modules.dep: %w", err)
	}
	return nil
}
