package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIsDirIn: the job's directory is looked up as the chrooted job
// will see it, links resolved inside the root.
func TestIsDirIn(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir() // a directory only the unchrooted init sees
	for _, d := range []string{"home/u/src", "data/home", "usr"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"abs":    "/data/home", // absolute: from the root, not the init's /
		"rel":    "home/u",
		"escape": outside, // names a directory outside root
		"loop":   "loop",
		"up":     "../../../usr",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/home/u/src", true},
		{"/home/u/src/", true},
		{"/home/./u/../u/src", true},
		{"/abs", true},
		{"/rel/src", true},
		{"/up", true}, // .. stops at the root
		{"/../../home", true},
		{"/tmp/build", false},
		{"/file", false},
		{"/file/x", false},
		{"/escape", false},
		{"/loop", false},
	} {
		if got := isDirIn(root, tc.path); got != tc.want {
			t.Errorf("isDirIn(root, %q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
