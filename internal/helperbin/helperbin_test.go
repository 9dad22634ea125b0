package helperbin

import (
	"os"
	"path/filepath"
	"testing"
)

// Find takes the helper beside the executable when it may be executed,
// else the one in $PATH, else says where it looked.
func TestFind(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	const name = "vmm-helperbin-test-helper"
	beside := filepath.Join(filepath.Dir(exe), name)
	t.Cleanup(func() { os.Remove(beside) })
	inPath := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(inPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := Find(name, "testing runs in"); err == nil || err.Error() != "testing runs in the "+name+" helper, which is neither next to vmm nor in $PATH (make vmm builds it)" {
		t.Fatalf("nowhere: %v", err)
	}
	// Beside the executable but not executable (a copy that lost its
	// mode): passed over for $PATH's.
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Skipf("cannot write beside the test binary: %v", err)
	}
	t.Setenv("PATH", filepath.Dir(inPath))
	if got, err := Find(name, "testing runs in"); err != nil || got != inPath {
		t.Fatalf("beside, not executable: %q, %v; want %s", got, err, inPath)
	}
	if err := os.Chmod(beside, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Find(name, "testing runs in"); err != nil || got != beside {
		t.Fatalf("beside: %q, %v; want %s", got, err, beside)
	}
}
