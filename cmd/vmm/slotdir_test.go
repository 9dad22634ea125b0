package main

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A sweep removes what a killed vmm left (an empty slot directory nobody
// holds) and nothing else.
func TestSweepEmptyDirs(t *testing.T) {
	tmp := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(tmp, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	left := mk("vmm-slot-1")
	held := mk("vmm-slot-2")
	full := mk("vmm-slot-3")
	other := mk("other-1")
	if err := os.WriteFile(filepath.Join(full, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(tmp, "vmm-slot-4")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(held, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	sweepEmptyDirs(tmp, "vmm-slot-*")
	for p, want := range map[string]bool{left: false, held: true, full: true, other: true, filepath.Join(tmp, "vmm-slot-4"): true} {
		if _, err := os.Lstat(p); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}

// lockedEmptyDir's directory survives other runs' sweeps while it is
// held, and is gone after release; a leftover from before goes at the
// next run.
func TestLockedEmptyDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	leftover := filepath.Join(tmp, "vmm-slot-left")
	if err := os.Mkdir(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, release, err := lockedEmptyDir("vmm-slot-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the leftover is still there: %v", err)
	}
	sweepEmptyDirs(tmp, "vmm-slot-*") // another run's
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the held directory went in a sweep: %v", err)
	}
	release()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the directory is still there after release: %v", err)
	}
}

// A lock taken on a directory that a sweep removed meanwhile (and that
// another run may have made again under the same name) is seen for what
// it is: sameDir is false, and lockedEmptyDir tries again.
func TestSameDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vmm-slot-x")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if !sameDir(fd, p) {
		t.Error("sameDir false for the directory itself")
	}
	if err := unix.Rmdir(p); err != nil {
		t.Fatal(err)
	}
	if sameDir(fd, p) {
		t.Error("sameDir true after the directory was removed")
	}
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if sameDir(fd, p) {
		t.Error("sameDir true for another directory of the same name")
	}
}
