package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestKeptVMStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		links []string // what each fd points to
		want  string
	}{
		{"kept", []string{"/dev/null", "anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0", "/dev/kvm"}, "ok"},
		{"none", []string{"/dev/null", "/dev/kvm"}, "vms=0,vcpus=0"},
		{"vm without vcpu", []string{"anon_inode:kvm-vm"}, "vms=1,vcpus=0"},
		{"two vms", []string{"anon_inode:kvm-vm", "anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0"}, "vms=2,vcpus=1"},
		{"similar names", []string{"anon_inode:kvm-vmx", "anon_inode:kvm-vcpu-stats:0", "anon_inode:kvm-vm"}, "vms=1,vcpus=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for i, l := range tc.links {
				if err := os.Symlink(l, filepath.Join(dir, strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			if got := keptVMStatus(dir); got != tc.want {
				t.Errorf("keptVMStatus = %q, want %q", got, tc.want)
			}
		})
	}
	if got := keptVMStatus(filepath.Join(t.TempDir(), "missing")); got == "ok" {
		t.Errorf("keptVMStatus of a missing directory = ok")
	}
}
