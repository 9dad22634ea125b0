package fdpath

import (
	"os"
	"path/filepath"
	"testing"
)

// An unlinked file is still opened, written and read through Of's path
// while its descriptor is open.
func TestOfUnlinked(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	p, ok := Of(f)
	if !ok || !Is(p) {
		t.Fatalf("Of = %q, %v; want a /proc path /proc shows", p, ok)
	}
	if err := os.WriteFile(p, []byte("still here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "still here" {
		t.Errorf("read back %q, %v", b, err)
	}
	for _, path := range []string{f.Name(), filepath.Join(t.TempDir(), "x"), "/proc/self/fdinfo/3"} {
		if Is(path) {
			t.Errorf("Is(%q) = true", path)
		}
	}
}

// A closed file has no path in /proc.
func TestOfClosed(t *testing.T) {
	dir := t.TempDir()
	a, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if p, ok := Of(a); ok {
		t.Errorf("Of(a closed file) = %q, true", p)
	}
}
