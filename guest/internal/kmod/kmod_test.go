package kmod

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
)

func loadTestdata(t *testing.T) *Index { return loadDep(t, "testdata/modules.dep") }

// loadDep parses the modules.dep file p.
func loadDep(t *testing.T, p string) *Index {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ix, err := ParseDep(f)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, Name(m.Path))
	}
	return out
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko": "virtio_rng",
		"virtio_blk.ko.xz":                            "virtio_blk",
		"virtio_net":                                  "virtio_net",
		"a/b/c-d.ko.zst":                              "c_d",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseDep(t *testing.T) {
	ix := loadTestdata(t)
	if len(ix.Modules) != 15 {
		t.Fatalf("parsed %d modules, want 15", len(ix.Modules))
	}
	m, ok := ix.Lookup("virtio-rng")
	if !ok || m.Path != "kernel/drivers/char/hw_random/virtio-rng.ko" {
		t.Fatalf("Lookup(virtio-rng) = %+v, %v", m, ok)
	}
	m, _ = ix.Lookup("virtio_pci")
	if len(m.Deps) != 4 {
		t.Errorf("virtio_pci deps = %v, want 4", m.Deps)
	}
	if _, ok := ix.Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
}

func TestParseDepErrors(t *testing.T) {
	for _, in := range []string{
		"no colon here\n",
		": dep.ko\n",
		"a/x.ko:\nb/x.ko:\n", // same module name twice
		".ko:\n",             // no name (found by FuzzParseDep)
		"kernel/fs/.ko.xz: kernel/fs/fuse.ko.xz\n",
	} {
		if _, err := ParseDep(strings.NewReader(in)); err == nil {
			t.Errorf("ParseDep(%q) succeeded", in)
		}
	}
}

func TestClosure(t *testing.T) {
	ix := loadTestdata(t)
	got, err := ix.Closure([]string{"virtio_pci", "virtio_net", "virtio-rng", "virtio_pci"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring", "virtio_pci",
		"failover", "net_failover", "virtio_net",
		"virtio_rng",
	}
	if !reflect.DeepEqual(names(got), want) {
		t.Errorf("Closure = %v\nwant %v", names(got), want)
	}
}

func TestLoadOrderDepsFirst(t *testing.T) {
	ix := loadTestdata(t)
	order, err := ix.LoadOrder()
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != len(ix.Modules) {
		t.Fatalf("LoadOrder has %d modules, want %d", len(order), len(ix.Modules))
	}
	pos := map[string]int{}
	for i, m := range order {
		pos[m.Path] = i
	}
	for _, m := range order {
		for _, d := range m.Deps {
			if pos[d] >= pos[m.Path] {
				t.Errorf("%s loads before its dependency %s", m.Path, d)
			}
		}
	}
}

func TestClosureErrors(t *testing.T) {
	ix := loadTestdata(t)
	if _, err := ix.Closure([]string{"missing"}); err == nil {
		t.Error("Closure(missing) succeeded")
	}
	broken, err := ParseDep(strings.NewReader("a.ko: b.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broken.Closure([]string{"a"}); err == nil || !strings.Contains(err.Error(), "needed by a") {
		t.Errorf("Closure with a dangling dependency: err = %v", err)
	}
	cyclic, err := ParseDep(strings.NewReader("a.ko: b.ko\nb.ko: a.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cyclic.Closure([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("Closure with a cycle: err = %v", err)
	}
}

func TestWriteDepRoundTrip(t *testing.T) {
	ix := loadTestdata(t)
	mods, err := ix.Closure([]string{"virtio_blk", "virtio_mmio"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteDep(&buf, mods); err != nil {
		t.Fatal(err)
	}
	want := "kernel/drivers/virtio/virtio.ko:\n" +
		"kernel/drivers/virtio/virtio_ring.ko:\n" +
		"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n" +
		"kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
	if buf.String() != want {
		t.Errorf("WriteDep wrote\n%s\nwant\n%s", buf.String(), want)
	}
	back, err := ParseDep(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Modules, mods) {
		t.Errorf("round trip changed modules: %+v", back.Modules)
	}
}
