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

// The job's /etc/resolv.conf replaces what the root has, a symlink
// above all, and never writes through it.
func TestWriteResolvConf(t *testing.T) {
	want := []byte("nameserver 10.0.2.3\n")
	tests := []struct {
		name  string
		setup func(root string) error
		err   bool
	}{
		{"none", func(root string) error { return os.Mkdir(filepath.Join(root, "etc"), 0o755) }, false},
		{"file", func(root string) error {
			os.Mkdir(filepath.Join(root, "etc"), 0o755)
			return os.WriteFile(filepath.Join(root, "etc/resolv.conf"), []byte("nameserver 127.0.0.53\n"), 0o644)
		}, false},
		{"absolute symlink", func(root string) error {
			os.Mkdir(filepath.Join(root, "etc"), 0o755)
			return os.Symlink(filepath.Join(root, "..", "outside"), filepath.Join(root, "etc/resolv.conf"))
		}, false},
		{"dangling symlink", func(root string) error {
			os.Mkdir(filepath.Join(root, "etc"), 0o755)
			return os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf"))
		}, false},
		{"no /etc", func(root string) error { return nil }, true},
		{"/etc a symlink", func(root string) error { return os.Symlink("/etc", filepath.Join(root, "etc")) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tt.setup(root); err != nil {
				t.Fatal(err)
			}
			err := writeResolvConf(root, want)
			if tt.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, "etc/resolv.conf")
			if st, err := os.Lstat(p); err != nil || !st.Mode().IsRegular() {
				t.Fatalf("%s: %v, %v; want a regular file", p, st, err)
			}
			if b, _ := os.ReadFile(p); string(b) != string(want) {
				t.Errorf("content %q", b)
			}
			if _, err := os.Lstat(filepath.Join(parent, "outside")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("written through the symlink: %v", err)
			}
		})
	}
}

// The /dev links are made once, and what is there already stays.
func TestDevLinks(t *testing.T) {
	dev := t.TempDir()
	if err := os.Symlink("/elsewhere", filepath.Join(dev, "stdin")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := devLinks(dev); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"fd": "/proc/self/fd", "stdin": "/elsewhere", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if got, err := os.Readlink(filepath.Join(dev, name)); err != nil || got != want {
			t.Errorf("/dev/%s -> %q (%v), want %q", name, got, err, want)
		}
	}
	if err := devLinks(filepath.Join(dev, "missing")); err == nil {
		t.Error("no error for a missing directory")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestBDIReadAhead(t *testing.T) {
	tests := []struct {
		dev  uint64
		want string
	}{
		{unix.Mkdev(0, 45), "/sys/class/bdi/0:45/read_ahead_kb"},
		{unix.Mkdev(0, 300), "/sys/class/bdi/0:300/read_ahead_kb"}, // minor above 255
		{unix.Mkdev(254, 1), "/sys/class/bdi/254:1/read_ahead_kb"},
	}
	for _, tc := range tests {
		if got := bdiReadAhead(tc.dev); got != tc.want {
			t.Errorf("bdiReadAhead(%#x) = %q, want %q", tc.dev, got, tc.want)
		}
	}
	if err := raiseReadAhead(filepath.Join(t.TempDir(), "missing"), 1024); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("raiseReadAhead of a missing directory: %v, want an error naming it", err)
	}
}

// TestAddHostName: the job's /etc/hosts names the guest once, after what
// the host's file had, read as the job would read it.
func TestAddHostName(t *testing.T) {
	const name = "vmm"
	ours := "127.0.1.1\t" + name + "\n"
	for _, tt := range []struct {
		name, hosts, want string
		link              bool // /etc/hosts an absolute link, as NixOS has it
	}{
		{"host's file", "127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n" + ours, false},
		{"no final newline", "127.0.0.1 localhost", "127.0.0.1 localhost\n" + ours, false},
		{"names it already", "10.0.0.5 other " + name + "\n", "10.0.0.5 other " + name + "\n", false},
		{"only in a comment", "# 127.0.1.1 " + name + "\n", "# 127.0.1.1 " + name + "\n" + ours, false},
		{"no file", "", ours, false},
		{"absolute link", "127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n" + ours, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(root, "etc", "hosts")
			file := p
			if tt.link {
				// Resolved inside root: /etc/static/hosts there, not
				// the test machine's.
				file = filepath.Join(root, "etc", "static", "hosts")
				if err := os.Mkdir(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("/etc/static/hosts", p); err != nil {
					t.Fatal(err)
				}
			}
			if tt.hosts != "" {
				if err := os.WriteFile(file, []byte(tt.hosts), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 { // a second call adds nothing
				if err := addHostName(root, name); err != nil {
					t.Fatal(err)
				}
			}
			if b, _ := os.ReadFile(p); string(b) != tt.want {
				t.Errorf("/etc/hosts %q, want %q", b, tt.want)
			}
		})
	}
	// A root without /etc is left as it is.
	root := t.TempDir()
	if err := addHostName(root, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc")); err == nil {
		t.Error("an /etc made in a root that had none")
	}
}
