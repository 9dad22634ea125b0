package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readFileMax returns a file's start, bounded, and says why it could not.
func TestReadFileMax(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "progress")
	if err := os.WriteFile(small, []byte("12 34\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		max        int64
		want       string
		wantErr    error
	}{
		{"whole", small, 64, "12 34\n", nil},
		{"bounded", big, 10, strings.Repeat("x", 10), nil},
		{"missing", filepath.Join(dir, "missing"), 64, "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readFileMax(tt.path, tt.max)
			if string(got) != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("readFileMax = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
