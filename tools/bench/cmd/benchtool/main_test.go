package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMkdisk(t *testing.T) {
	for _, size := range []int64{1, 1 << 20, 3<<20 + 5} {
		p := filepath.Join(t.TempDir(), "disk.img")
		os.WriteFile(p, make([]byte, 5<<20), 0o644) // truncated, not kept
		if err := mkdisk(p, size); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != size {
			t.Fatalf("size %d, want %d", len(b), size)
		}
		for i := 0; i < len(b); i += 4093 {
			if b[i] == 0 {
				t.Fatalf("size %d: zero byte at %d; the image must have no holes", size, i)
			}
		}
	}
	// The shared directory's file: its directory is made.
	dir := t.TempDir()
	if err := mkdisk(filepath.Join(dir, "share", "seq.img"), 4096); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "share", "seq.img")); err != nil || st.Size() != 4096 {
		t.Fatalf("%v %v", st, err)
	}
	// Under a file there is no directory to make.
	if err := mkdisk(filepath.Join(dir, "share", "seq.img", "x"), 1); err == nil {
		t.Error("mkdisk under a regular file succeeded")
	}
}

// rm takes a directory with everything in it (the guest's small files).
func TestRemoveTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "files")
	if err := mkdisk(filepath.Join(dir, "d000", "f00001"), 10); err != nil {
		t.Fatal(err)
	}
	if err := remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
}
