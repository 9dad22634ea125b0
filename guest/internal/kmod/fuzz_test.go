package kmod

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// FuzzParseDep: modules.dep comes from an initramfs, which a user may
// build, and vmm-init parses it at every boot. No input may panic the
// parser; what it accepts has one module per name, each found by Lookup,
// with a path and dependencies as depmod writes them, writes back (WriteDep)
// to the same modules, and either loads in an order that puts every
// dependency first or is refused for a dependency without its own line
// or a cycle.
func FuzzParseDep(f *testing.F) {
	b, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("kernel/fs/fuse/virtiofs.ko.zst:\tkernel/fs/fuse/fuse.ko.zst\r\nkernel/fs/fuse/fuse.ko.zst:\r\n")
	f.Add("a.ko: b.ko\nb.ko: a.ko\n")
	f.Add("a.ko: b.ko\n")
	f.Add("a/x.ko:\nb/x.ko:\n")
	f.Add("no colon here\n")
	f.Add(": dep.ko\n")
	f.Add("a.ko:b.ko:c.ko\n")
	f.Fuzz(func(t *testing.T, in string) {
		ix, err := ParseDep(strings.NewReader(in))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		resolved := true
		for _, m := range ix.Modules {
			if m.Path == "" || m.Path != strings.TrimSpace(m.Path) || strings.ContainsAny(m.Path, ":\n") || m.Path[0] == '#' {
				t.Fatalf("module path %q", m.Path)
			}
			n := Name(m.Path)
			if seen[n] {
				t.Fatalf("module %s twice", n)
			}
			seen[n] = true
			if got, ok := ix.Lookup(m.Path); !ok || got.Path != m.Path {
				t.Fatalf("Lookup(%q) = %q, %v", m.Path, got.Path, ok)
			}
			for _, d := range m.Deps {
				if d == "" || strings.ContainsFunc(d, unicode.IsSpace) {
					t.Fatalf("module %s: dependency %q", m.Path, d)
				}
				if _, ok := ix.Lookup(d); !ok {
					resolved = false
				}
			}
		}

		// A line is at most as long as the input, and WriteDep adds a
		// space after the colon: keep the round trip within the
		// scanner's 1 MiB.
		if len(in) < 512<<10 {
			var buf bytes.Buffer
			if err := WriteDep(&buf, ix.Modules); err != nil {
				t.Fatal(err)
			}
			back, err := ParseDep(&buf)
			if err != nil || !reflect.DeepEqual(back.Modules, ix.Modules) {
				t.Fatalf("round trip of %q: %+v, %v; want %+v", in, back, err, ix.Modules)
			}
		}

		order, err := ix.LoadOrder()
		if err != nil {
			if resolved && !strings.Contains(err.Error(), "cycle") {
				t.Fatalf("every dependency has its line, but LoadOrder: %v", err)
			}
			return
		}
		if !resolved {
			t.Fatal("LoadOrder succeeded with a dependency that has no line")
		}
		if len(order) != len(ix.Modules) {
			t.Fatalf("LoadOrder has %d modules of %d", len(order), len(ix.Modules))
		}
		pos := map[string]int{}
		for i, m := range order {
			n := Name(m.Path)
			if _, dup := pos[n]; dup {
				t.Fatalf("LoadOrder has %s twice", n)
			}
			pos[n] = i
		}
		for _, m := range order {
			for _, d := range m.Deps {
				if pos[Name(d)] >= pos[Name(m.Path)] {
					t.Fatalf("%s loads before its dependency %s", m.Path, d)
				}
			}
		}
	})
}
