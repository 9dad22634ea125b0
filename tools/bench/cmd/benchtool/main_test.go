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
	if err := mkdisk(filepath.Join(t.TempDir(), "no", "such", "dir"), 1); err == nil {
		t.Error("mkdisk into a missing directory succeeded")
	}
}
