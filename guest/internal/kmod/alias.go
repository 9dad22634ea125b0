package kmod

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// Alias is one line of depmod's modules.alias: the module Module (a name,
// as Name gives it) serves whatever matches Pattern, a shell-style
// pattern (modpost writes them with * and [...] classes) over either a
// device's modalias ("pci:v00001AF4d00001042sv...", the file
// /sys/bus/*/devices/*/modalias) or a name the kernel asks for
// ("fs-overlay", "char-major-10-229").
type Alias struct {
	Pattern, Module string
}

// maxAliasLine bounds a modules.alias line: a PCI pattern is under 100
// bytes; anything far longer is not depmod's file.
const maxAliasLine = 4096

// ParseAlias reads modules.alias: "alias PATTERN MODULE" lines, with
// blank lines and #-comments ignored.
func ParseAlias(r io.Reader) ([]Alias, error) {
	var out []Alias
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxAliasLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return nil, fmt.Errorf("modules.alias line %d: want \"alias PATTERN MODULE\", have %q", n, line)
		}
		if _, err := path.Match(f[1], ""); err != nil {
			return nil, fmt.Errorf("modules.alias line %d: pattern %q: %w", n, f[1], err)
		}
		mod := Name(f[2])
		if mod == "" {
			return nil, fmt.Errorf("modules.alias line %d: module %q has no name", n, f[2])
		}
		out = append(out, Alias{Pattern: f[1], Module: mod})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.alias: %w", err)
	}
	return out, nil
}

// WriteAlias writes aliases in modules.alias format.
func WriteAlias(w io.Writer, aliases []Alias) error {
	bw := bufio.NewWriter(w)
	for _, a := range aliases {
		fmt.Fprintf(bw, "alias %s %s\n", a.Pattern, a.Module)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write modules.alias: %w", err)
	}
	return nil
}

// IsDeviceAlias reports whether an alias pattern names devices on a bus
// ("pci:...", "virtio:...", "acpi*:..."): a bus name, then a colon. The
// other kinds (a file system's "fs-overlay", a device node's
// "devname:fuse", "char-major-10-229") name things a module offers
// without any device.
func IsDeviceAlias(pattern string) bool {
	bus, _, ok := strings.Cut(pattern, ":")
	if !ok || bus == "" || bus == "devname" {
		return false
	}
	for _, c := range bus {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '*') {
			return false
		}
	}
	return true
}

// Resolve returns the modules modprobe's argument name stands for: the
// module of that name, or else every module with an alias matching it
// (the kernel asks for "fs-overlay" when a mount needs that file system),
// dependencies first.
//
// A name with a '/' or ".ko" in it is taken only as an alias: the
// kernel's requests carry a prefix ("fs-", "crypto-") precisely so that
// an unprivileged caller choosing the rest (a mount's file system type)
// cannot name any module, and Lookup would reduce "fs-x/overlay" to
// overlay.
func (ix *Index) Resolve(aliases []Alias, name string) ([]Module, error) {
	if !strings.Contains(name, "/") && !strings.Contains(name, ".ko") {
		if _, ok := ix.Lookup(name); ok {
			return ix.Closure([]string{name})
		}
	}
	var want []string
	for _, a := range aliases {
		if ok, _ := path.Match(a.Pattern, name); ok && !slices.Contains(want, a.Module) {
			want = append(want, a.Module)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("module %s not found", name)
	}
	return ix.Closure(want)
}

// Node is a device node a module serves, which Linux asks for that
// module when it is opened (a static node, as kmod's static-nodes makes
// for udev): devtmpfs creates a driver's nodes only once it is loaded,
// so without one the first open would find nothing and nothing would
// load the module.
type Node struct {
	Module       string
	Name         string // under /dev, as in "devname:fuse" or "devname:net/tun"
	Block        bool
	Major, Minor uint32
}

// StaticNodes returns the nodes of the modules that have both a
// "devname:NAME" alias and a "char-major-M-m" (or "block-major-M-m")
// alias, as kmod pairs them.
func StaticNodes(aliases []Alias) []Node {
	names := map[string]string{}
	for _, a := range aliases {
		if n, ok := strings.CutPrefix(a.Pattern, "devname:"); ok && n != "" && !strings.Contains(n, "..") && !strings.HasPrefix(n, "/") {
			names[a.Module] = n
		}
	}
	var out []Node
	for _, a := range aliases {
		name, ok := names[a.Module]
		if !ok {
			continue
		}
		var n Node
		var rest string
		if r, ok := strings.CutPrefix(a.Pattern, "char-major-"); ok {
			rest = r
		} else if r, ok := strings.CutPrefix(a.Pattern, "block-major-"); ok {
			rest, n.Block = r, true
		} else {
			continue
		}
		if _, err := fmt.Sscanf(rest, "%d-%d", &n.Major, &n.Minor); err != nil || fmt.Sprintf("%d-%d", n.Major, n.Minor) != rest {
			continue // a pattern ("char-major-10-*"), not one node
		}
		n.Module, n.Name = a.Module, name
		out = append(out, n)
		delete(names, a.Module) // one node per module, as kmod makes
	}
	return out
}

// FileSystems returns the modules with a file system alias ("fs-NAME").
func FileSystems(aliases []Alias) []string {
	var out []string
	for _, a := range aliases {
		if strings.HasPrefix(a.Pattern, "fs-") && !slices.Contains(out, a.Module) {
			out = append(out, a.Module)
		}
	}
	return out
}

// ForDevices chooses, from the modules of ix, those a machine with the
// devices whose modaliases are given can use, dependencies first:
//   - a module with a device alias (IsDeviceAlias) when one of them
//     matches a device: a driver for a device the machine lacks does
//     nothing, and loading it costs the boot its relocation and
//     initialisation;
//   - a module that other modules depend on and that has no alias of
//     its own (virtio_ring, failover) only as their dependency;
//   - a module with only other aliases (a file system's "fs-overlay",
//     fuse's "devname:fuse" and "char-major-10-229") not at all: the
//     kernel asks for it by that alias when it is needed
//     (request_module, which runs modprobe; see Resolve), on a mount
//     or on opening its static node (StaticNodes);
//   - a module with no alias, that nothing depends on: always, as
//     nothing would ever ask for it.
//
// skip names modules already chosen (or loaded); they are left out, and
// so are modules that only they need.
func (ix *Index) ForDevices(aliases []Alias, modaliases []string, skip map[string]bool) ([]Module, error) {
	device := map[string]bool{}   // has a device alias
	anyAlias := map[string]bool{} // has an alias of any kind
	matched := map[string]bool{}
	for _, a := range aliases {
		anyAlias[a.Module] = true
		if !IsDeviceAlias(a.Pattern) {
			continue
		}
		device[a.Module] = true
		for _, m := range modaliases {
			if ok, _ := path.Match(a.Pattern, m); ok {
				matched[a.Module] = true
				break
			}
		}
	}
	library := map[string]bool{}
	for _, m := range ix.Modules {
		for _, d := range m.Deps {
			library[Name(d)] = true
		}
	}
	var want []string
	for _, m := range ix.Modules {
		n := Name(m.Path)
		switch {
		case skip[n]:
		case device[n]:
			if matched[n] {
				want = append(want, n)
			}
		case anyAlias[n], library[n]:
		default:
			want = append(want, n)
		}
	}
	mods, err := ix.Closure(want)
	if err != nil {
		return nil, err
	}
	out := mods[:0]
	for _, m := range mods {
		if !skip[Name(m.Path)] {
			out = append(out, m)
		}
	}
	return out, nil
}
