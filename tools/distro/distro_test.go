package distro

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestRecipeKey(t *testing.T) {
	k := RecipeKey()
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(k) {
		t.Fatalf("RecipeKey() = %q, want 16 hex digits", k)
	}
	if k != RecipeKey() {
		t.Fatal("RecipeKey is not stable")
	}
}

// A complete cache entry is used as it is: no root, tools or network.
func TestDebian12WarmCache(t *testing.T) {
	cache := t.TempDir()
	dir := filepath.Join(cache, "debian12-"+RecipeKey())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "rootfs.ext4"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", t.TempDir()) // no debootstrap, no cp
	img, err := Debian12(context.Background(), cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Disk != filepath.Join(dir, "rootfs.ext4") || img.Kernel != filepath.Join(dir, "vmlinuz") || img.Initrd != filepath.Join(dir, "initrd.img") {
		t.Fatalf("image %+v not in %s", img, dir)
	}
}

func TestComplete(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  bool
	}{
		{"all", map[string]string{"k": "x", "i": "x", "d": "x"}, true},
		{"no disk", map[string]string{"k": "x", "i": "x"}, false},
		{"empty initrd", map[string]string{"k": "x", "i": "", "d": "x"}, false},
		{"nothing", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, s := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			img := &Image{Kernel: filepath.Join(dir, "k"), Initrd: filepath.Join(dir, "i"), Disk: filepath.Join(dir, "d")}
			if got := img.complete(); got != tc.want {
				t.Fatalf("complete() = %v, want %v", got, tc.want)
			}
		})
	}
}
