package machine

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// Where softwareKVMNote looks. /proc/cpuinfo's first "flags" line is the
// host CPU's features; /sys/module/kvm_pvm is there when the /dev/kvm is
// PVM's (the Pagetable-based Virtual Machine module some sandboxes load
// instead of kvm_intel or kvm_amd).
const (
	cpuinfoPath  = "/proc/cpuinfo"
	kvmPVMModule = "/sys/module/kvm_pvm"
)

// hostKVMNote is softwareKVMNote for this host, read once when the VM is
// created (before the sandbox, which would refuse the reads later).
func hostKVMNote() string {
	f, err := os.Open(cpuinfoPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	_, err = os.Stat(kvmPVMModule)
	return softwareKVMNote(f, err == nil)
}

// KVMNote is softwareKVMNote for the KVM this machine runs on: "" on one
// with hardware virtualization, else a line for messages about a guest
// that failed or never got anywhere.
func (m *Machine) KVMNote() string { return m.kvmNote }

// softwareKVMNote explains, for the message of a guest that failed, a
// /dev/kvm without hardware virtualization behind it: a host CPU whose
// flags have neither vmx (Intel VT-x) nor svm (AMD-V) cannot be running
// kvm_intel or kvm_amd, so the device is a software or paravirtual KVM.
// PVM's runs only kernels built to be PVM guests, and a distro kernel
// fails on it early (an emulation failure, KVM_EXIT_INTERNAL_ERROR, or no
// exit at all), which without this note reads like a bug in vmm or in
// the kernel. It returns "" when the CPU has either flag, or when cpuinfo
// has no flags line to judge by.
func softwareKVMNote(cpuinfo io.Reader, pvm bool) string {
	s := bufio.NewScanner(cpuinfo)
	s.Buffer(make([]byte, 0, 4096), 1<<20) // a flags line is a few KB
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), ":")
		if !ok || strings.TrimSpace(name) != "flags" {
			continue
		}
		for _, f := range strings.Fields(value) {
			if f == "vmx" || f == "svm" {
				return ""
			}
		}
		what := "a software KVM"
		if pvm {
			what = "kvm_pvm, which runs only kernels built as PVM guests"
		}
		return "this host's CPU has no hardware virtualization (neither vmx nor svm in " + cpuinfoPath +
			"), so its /dev/kvm is " + what + ": run vmm in a nested VM (README: Nested mode)"
	}
	return ""
}
