package kvm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// VM is one KVM virtual machine file descriptor.
type VM struct {
	f        *os.File
	mmapSize int
}

func (vm *VM) fd() uintptr { return vm.f.Fd() }

// Close releases the VM. vCPUs must be closed first.
func (vm *VM) Close() error { return vm.f.Close() }

// SetUserMemoryRegion maps mem (which must come from mmap and stay mapped
// while the VM lives) at guest-physical gpa in slot.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	if len(mem) == 0 {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d: empty region", slot)
	}
	r := userspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: uint64(len(mem)), UserspaceAddr: hostAddr(mem)}
	if _, err := ioctlPtr(vm.fd(), kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d at %#x (%d bytes): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr places the three pages Intel VT-x needs for real-mode
// emulation; AMD ignores it. It must lie outside guest RAM and MMIO.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlVal(vm.fd(), kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the page Intel VT-x uses for its identity
// page table (unrestricted-guest off). It must be called before any vCPU
// is created.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	a := addr
	if _, err := ioctlPtr(vm.fd(), kvmSetIdentityMapAddr, &a); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and per-vCPU local
// APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlVal(vm.fd(), kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT.
func (vm *VM) CreatePIT2(flags uint32) error {
	c := pitConfig{Flags: flags}
	if _, err := ioctlPtr(vm.fd(), kvmCreatePIT2, &c); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of an interrupt line (GSI) of the in-kernel
// irqchip. Safe to call from any thread.
func (vm *VM) IRQLine(gsi uint32, high bool) error {
	l := irqLevel{IRQ: gsi}
	if high {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd(), kvmIRQLine, &l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE gsi %d: %w", gsi, err)
	}
	return nil
}

// IRQFD makes a write to eventfd efd inject GSI gsi without a trip through
// userspace.
func (vm *VM) IRQFD(efd int, gsi uint32) error {
	c := irqfd{FD: uint32(efd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd(), kvmIRQFD, &c); err != nil {
		return fmt.Errorf("KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD makes a guest write of length n at addr signal eventfd efd
// instead of exiting to userspace. flags are IOEventFD*.
func (vm *VM) IOEventFD(efd int, addr uint64, n uint32, datamatch uint64, flags uint32) error {
	c := ioeventfd{Datamatch: datamatch, Addr: addr, Len: n, FD: int32(efd), Flags: flags}
	if _, err := ioctlPtr(vm.fd(), kvmIOEventFD, &c); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD at %#x: %w", addr, err)
	}
	return nil
}

// CreateVCPU creates vCPU id (its initial APIC ID) and maps its kvm_run.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	r, err := ioctlVal(vm.fd(), kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	run, err := unix.Mmap(int(r), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(r))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	if len(run) < runMinSize {
		unix.Munmap(run)
		unix.Close(int(r))
		return nil, fmt.Errorf("vCPU %d: kvm_run is %d bytes, want at least %d", id, len(run), runMinSize)
	}
	return &VCPU{f: os.NewFile(r, fmt.Sprintf("kvm-vcpu-%d", id)), id: id, run: run}, nil
}
