package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guest/internal/kmod"
)

// fakeKO returns a minimal ELF relocatable object whose .modinfo section
// holds the given key=value strings, which is all loadModuleTree reads.
func fakeKO(t *testing.T, modinfo ...string) []byte {
	t.Helper()
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := uint64(ehsize)
	strOff := infoOff + uint64(len(info))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(binary.Write(&b, binary.LittleEndian, hdr))
	b.Write(info)
	b.Write(shstr)
	b.Write(make([]byte, int(shOff)-b.Len()))
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: infoOff, Size: uint64(len(info)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		must(binary.Write(&b, binary.LittleEndian, s))
	}
	return b.Bytes()
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestModinfoDepends(t *testing.T) {
	deps, err := modinfoDepends(fakeKO(t, "license=GPL", "depends=virtio_ring,virtio,net-failover", "name=virtio_net"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"virtio_ring", "virtio", "net_failover"}; !reflect.DeepEqual(deps, want) {
		t.Errorf("depends = %v, want %v", deps, want)
	}
	deps, err = modinfoDepends(fakeKO(t, "depends=", "name=virtio"))
	if err != nil || len(deps) != 0 {
		t.Errorf("empty depends = %v, %v", deps, err)
	}
	if _, err := modinfoDepends([]byte("not an ELF file")); err == nil {
		t.Error("garbage parsed as a module")
	}
}

// fakeTree lays out a kernel module directory the way Debian's package
// does: modules and modules.builtin, but no modules.dep.
func fakeTree(t *testing.T) string {
	dir := t.TempDir()
	mods := map[string][]byte{
		"kernel/drivers/virtio/virtio.ko":               fakeKO(t, "depends=", "name=virtio"),
		"kernel/drivers/virtio/virtio_ring.ko":          fakeKO(t, "depends=", "name=virtio_ring"),
		"kernel/drivers/block/virtio_blk.ko.gz":         gz(t, fakeKO(t, "alias=virtio:d00000002v*", "depends=virtio_ring,virtio", "name=virtio_blk")),
		"kernel/net/core/failover.ko":                   fakeKO(t, "depends=", "name=failover"),
		"kernel/drivers/net/net_failover.ko":            fakeKO(t, "depends=failover", "name=net_failover"),
		"kernel/drivers/net/virtio_net.ko":              fakeKO(t, "depends=virtio_ring,virtio,net_failover", "name=virtio_net"),
		"kernel/drivers/char/hw_random/virtio-rng.ko":   fakeKO(t, "alias=virtio:d00000004v*", "depends=virtio_ring,virtio,rng_core", "name=virtio_rng"),
		"kernel/drivers/virtio/virtio_unrelated.ko":     []byte("never read"),
		"kernel/drivers/char/hw_random/not_a_module.so": []byte("ignored"),
	}
	for p, b := range mods {
		writeFile(t, filepath.Join(dir, p), b)
	}
	writeFile(t, filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/char/hw_random/rng-core.ko\nkernel/drivers/virtio/virtio_mmio.ko\n"))
	return dir
}

func TestStageModulesFromModinfo(t *testing.T) {
	ctx := context.Background()
	dir := fakeTree(t)
	// virtio_mmio is built in: asked for, but silently not shipped.
	want := []string{"virtio_net", "virtio-rng", "virtio_blk", "virtio_mmio"}
	tree, err := loadModuleTree(ctx, dir, want)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tree.resolve(want)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := tree.stageModules(ctx, mods, dst); err != nil {
		t.Fatal(err)
	}
	dep, err := os.ReadFile(filepath.Join(dst, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	const wantDep = "kernel/net/core/failover.ko:\n" +
		"kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n" +
		"kernel/drivers/virtio/virtio.ko:\n" +
		"kernel/drivers/virtio/virtio_ring.ko:\n" +
		"kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n" +
		"kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n" +
		"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
	if string(dep) != wantDep {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", dep, wantDep)
	}
	// Aliases in depmod's modules.alias, named as the kernel names the
	// module (virtio-rng is virtio_rng).
	alias, err := os.ReadFile(filepath.Join(dst, "modules.alias"))
	if err != nil {
		t.Fatal(err)
	}
	const wantAlias = "alias virtio:d00000004v* virtio_rng\n" +
		"alias virtio:d00000002v* virtio_blk\n"
	if string(alias) != wantAlias {
		t.Errorf("modules.alias:\n%s\nwant:\n%s", alias, wantAlias)
	}
	// The compressed module is shipped decompressed, under its .ko name.
	b, err := os.ReadFile(filepath.Join(dst, "kernel/drivers/block/virtio_blk.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if deps, err := modinfoDepends(b); err != nil || len(deps) != 2 {
		t.Errorf("staged virtio_blk.ko: depends %v, %v", deps, err)
	}
	// vmm-init's view: the staged file loads in dependency order.
	ix, err := kmod.ParseDep(bytes.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.LoadOrder(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "kernel/drivers/virtio/virtio_unrelated.ko")); err == nil {
		t.Error("an unrequested module was staged")
	}
}

func TestLoadModuleTreeErrors(t *testing.T) {
	ctx := context.Background()
	dir := fakeTree(t)
	if _, err := loadModuleTree(ctx, dir, []string{"no_such_driver"}); err == nil || !strings.Contains(err.Error(), "no_such_driver") {
		t.Errorf("missing module: err = %v", err)
	}
	writeFile(t, filepath.Join(dir, "kernel/x/needs_ghost.ko"), fakeKO(t, "depends=ghost"))
	if _, err := loadModuleTree(ctx, dir, []string{"needs_ghost"}); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("missing dependency: err = %v", err)
	}
}

func TestLoadModuleTreePrefersModulesDep(t *testing.T) {
	ctx := context.Background()
	dir := fakeTree(t)
	// depmod says virtio_blk needs only virtio; .modinfo would say more.
	writeFile(t, filepath.Join(dir, "modules.dep"), []byte(
		"kernel/drivers/virtio/virtio.ko:\nkernel/drivers/block/virtio_blk.ko.gz: kernel/drivers/virtio/virtio.ko\n"))
	tree, err := loadModuleTree(ctx, dir, []string{"virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tree.resolve([]string{"virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range mods {
		got = append(got, m.Path)
	}
	if want := []string{"kernel/drivers/virtio/virtio.ko", "kernel/drivers/block/virtio_blk.ko.gz"}; !reflect.DeepEqual(got, want) {
		t.Errorf("resolve = %v, want %v", got, want)
	}
}
