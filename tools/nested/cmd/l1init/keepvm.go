package main

import (
	"fmt"

	"github.com/vmm-dev/vmm/kvm"
)

// L1's KVM rewrites its kernel's code each time the number of VMs in L1
// goes from zero to one or back: kvm_create_vm and kvm_destroy_vm flip
// the preempt_notifier_key static key (kernel/sched/core.c), whose
// branch sits in __schedule; and a vCPU's local APIC, created software-
// disabled (kvm_create_lapic) and then enabled by its guest or a restore
// (apic_set_spiv, a decrement deferred by a second), flips
// apic_sw_disabled (arch/x86/kvm/lapic.c) when it is the only one. Linux
// patches a live branch with int3 and cross-CPU syncs (text_poke_bp),
// and under QEMU TCG with emulated AMD-V that is what froze L1: every
// freeze the harness probed had L1's CPUs in the int3 handlers or at
// that branch in __schedule (RIP ffffffff81a10d9b, __schedule+0x2ab in
// Debian's 6.1.0-56 cloud kernel); snapshot restores run back to back
// froze L1 after about 40 and, in a fresh L1, about 115.
//
// keptVM holds one VM with an in-kernel interrupt controller and one
// vCPU that never runs (so its APIC stays disabled), for L1's whole
// life: it keeps both keys (and the CPUs' virtualization, which KVM
// enables with the first VM) on, so the VMs the jobs start and stop
// never patch code. It costs L1 one idle VM's kernel memory and nothing
// per job.
type keptVM struct {
	sys  *kvm.System
	vm   *kvm.VM
	vcpu *kvm.VCPU
}

// keepVM makes the VM. The returned value must stay reachable: its
// files close when collected.
func keepVM() (*keptVM, error) {
	sys, err := kvm.Open()
	if err != nil {
		return nil, fmt.Errorf("keep a VM: %w", err)
	}
	vm, err := sys.CreateVM()
	if err != nil {
		sys.Close()
		return nil, fmt.Errorf("keep a VM: %w", err)
	}
	// The interrupt controller first: without it the vCPU gets no
	// in-kernel local APIC, and apic_sw_disabled would still flip.
	if err := vm.CreateIRQChip(); err != nil {
		vm.Close()
		sys.Close()
		return nil, fmt.Errorf("keep a VM: %w", err)
	}
	vcpu, err := vm.CreateVCPU(0)
	if err != nil {
		vm.Close()
		sys.Close()
		return nil, fmt.Errorf("keep a VM: %w", err)
	}
	return &keptVM{sys: sys, vm: vm, vcpu: vcpu}, nil
}
