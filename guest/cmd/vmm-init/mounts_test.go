package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookPathIn(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "bin", "opt/tools"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, rel), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/go", 0o755)
	write("bin/notexec", 0o644)
	write("opt/tools/notexec", 0o755)
	// An absolute link that only resolves inside root after a chroot.
	if err := os.Symlink("/usr/bin/go", filepath.Join(root, "bin/golink")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
		notFound         bool
	}{
		{"go", "/bin:/usr/bin", "/usr/bin/go", false},
		{"notexec", "/bin:/opt/tools", "/opt/tools/notexec", false},
		{"golink", "/bin", "/bin/golink", false},
		{"missing", "/bin:/usr/bin", "", true},
		{"go", "relative/bin:", "", true},
		{"./script", "/bin", "./script", false},
		{"/abs/cmd", "", "/abs/cmd", false},
	}
	for _, tt := range tests {
		got, err := lookPathIn(root, tt.name, tt.path)
		if tt.notFound {
			if !errors.Is(err, exec.ErrNotFound) {
				t.Errorf("lookPathIn(%q, PATH=%q) = %q, %v; want not found", tt.name, tt.path, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("lookPathIn(%q, PATH=%q) = %q, %v; want %q", tt.name, tt.path, got, err, tt.want)
		}
	}
}

func TestEnvValue(t *testing.T) {
	env := []string{"PATH=/bin", "HOME=/", "PATH=/usr/bin:/bin", "PATHX=no"}
	if v, ok := envValue(env, "PATH"); !ok || v != "/usr/bin:/bin" {
		t.Errorf("PATH = %q, %v; want the last one", v, ok)
	}
	if _, ok := envValue(env, "TERM"); ok {
		t.Error("TERM found")
	}
}

func TestMountErrNamesTheModule(t *testing.T) {
	err := mountErr("mount virtio-fs \"share\" at /share", "virtiofs", "virtiofs", unix.ENODEV)
	if want := "is module virtiofs in the initramfs?"; !contains(err.Error(), want) {
		t.Errorf("%v lacks %q", err, want)
	}
	if err := mountErr("m", "virtiofs", "virtiofs", unix.ENOENT); !errors.Is(err, unix.ENOENT) {
		t.Errorf("%v does not wrap ENOENT", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
