package machine

import (
	"errors"
	"fmt"

	"github.com/vmm-dev/vmm/kvm"
)

// VCPUState is everything KVM keeps of one vCPU that a restore must give
// back: what the guest saw of the CPU (CPUID), its registers of every
// kind, its MSRs (kvm-clock and TSC ones included), its local APIC,
// pending events and multiprocessing state.
type VCPUState struct {
	CPUID     []kvm.CPUIDEntry
	TSCKHz    uint32
	Regs      kvm.Regs
	Sregs     kvm.Sregs
	FPU       kvm.FPU
	XSave     kvm.XSave
	XCRs      kvm.XCRs
	MSRs      []kvm.MSREntry
	LAPIC     kvm.LAPICState
	Events    kvm.VCPUEvents
	MPState   kvm.MPState
	DebugRegs kvm.DebugRegs
}

// vcpuStateIO is the state ioctls of a vCPU, as *kvm.VCPU has them; the
// order they are issued in is what saveVCPU and restoreVCPU own, and
// tests check it against a fake.
type vcpuStateIO interface {
	ID() int
	SetCPUID2([]kvm.CPUIDEntry) error
	TSCKHz() (uint32, error)
	SetTSCKHz(uint32) error
	Regs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	Sregs() (kvm.Sregs, error)
	SetSregs(kvm.Sregs) error
	FPU() (kvm.FPU, error)
	SetFPU(kvm.FPU) error
	XSave() (kvm.XSave, error)
	SetXSave(kvm.XSave) error
	XCRs() (kvm.XCRs, error)
	SetXCRs(kvm.XCRs) error
	MSRs([]uint32) ([]kvm.MSREntry, error)
	SetMSRs([]kvm.MSREntry) error
	LAPIC() (kvm.LAPICState, error)
	SetLAPIC(kvm.LAPICState) error
	Events() (kvm.VCPUEvents, error)
	SetEvents(kvm.VCPUEvents) error
	MPState() (kvm.MPState, error)
	SetMPState(kvm.MPState) error
	DebugRegs() (kvm.DebugRegs, error)
	SetDebugRegs(kvm.DebugRegs) error
}

var _ vcpuStateIO = (*kvm.VCPU)(nil)

// saveVCPU reads a stopped vCPU's state. msrs is KVM's list of MSRs to
// save; the ones this vCPU cannot read (KVM lists MSRs of features the
// guest's CPUID may not have) are left out one by one, since
// KVM_GET_MSRS stops at the first it cannot read.
func saveVCPU(c vcpuStateIO, cpuid []kvm.CPUIDEntry, msrs []uint32) (VCPUState, error) {
	s := VCPUState{CPUID: cpuid}
	var err error
	get := func(name string, f func() error) {
		if err == nil {
			if e := f(); e != nil {
				err = fmt.Errorf("save vCPU %d %s: %w", c.ID(), name, e)
			}
		}
	}
	get("TSC kHz", func() (e error) { s.TSCKHz, e = c.TSCKHz(); return })
	get("registers", func() (e error) { s.Regs, e = c.Regs(); return })
	get("special registers", func() (e error) { s.Sregs, e = c.Sregs(); return })
	get("FPU", func() (e error) { s.FPU, e = c.FPU(); return })
	get("XSAVE", func() (e error) { s.XSave, e = c.XSave(); return })
	get("XCRs", func() (e error) { s.XCRs, e = c.XCRs(); return })
	get("LAPIC", func() (e error) { s.LAPIC, e = c.LAPIC(); return })
	get("events", func() (e error) { s.Events, e = c.Events(); return })
	get("MP state", func() (e error) { s.MPState, e = c.MPState(); return })
	get("debug registers", func() (e error) { s.DebugRegs, e = c.DebugRegs(); return })
	if err != nil {
		return s, err
	}
	if all, e := c.MSRs(msrs); e == nil {
		s.MSRs = all
		return s, nil
	}
	for _, idx := range msrs {
		if one, e := c.MSRs([]uint32{idx}); e == nil {
			s.MSRs = append(s.MSRs, one...)
		}
	}
	if len(s.MSRs) == 0 && len(msrs) > 0 {
		return s, fmt.Errorf("save vCPU %d: no MSR could be read", c.ID())
	}
	return s, nil
}

// restoreTSCKHz gives a restored vCPU the TSC frequency its guest
// calibrated at boot (0: a snapshot that did not record it). CPUID tells
// a Linux guest its TSC is invariant, so it keeps the TSC as its clock
// and never measures the frequency again: on a host whose TSC runs at
// another rate its time would run fast or slow. KVM scales the guest's
// TSC where the CPU can (AMD's TSC ratio, Intel's TSC scaling) and takes
// a rate within its tolerance (250 ppm) without. Where it cannot scale,
// KVM runs a faster saved rate in its catch-up mode (the guest's TSC
// kept up to the saved rate at each entry) and refuses a slower one,
// which is refused here, in words, rather than restored with a wrong
// clock.
func restoreTSCKHz(c vcpuStateIO, khz uint32) error {
	if khz == 0 {
		return nil
	}
	// The host's rate is read before the set: KVM records the rate it
	// was asked for even when it then refuses it, so a read after would
	// name the saved rate twice.
	cur, curErr := c.TSCKHz()
	if curErr == nil && cur == khz {
		return nil
	}
	if err := c.SetTSCKHz(khz); err != nil {
		here := "at another rate here"
		if curErr == nil {
			here = fmt.Sprintf("at %d kHz here", cur)
		}
		return fmt.Errorf("the guest's TSC ran at %d kHz where it was saved and runs %s, which KVM cannot scale (%w): make the snapshot on this host", khz, here, err)
	}
	return nil
}

// restoreVCPU writes a saved state into a new vCPU, in the order KVM
// needs (Documentation/virt/kvm/api.rst): CPUID first, since KVM checks
// registers and MSRs against it; the TSC's frequency before the TSC
// MSRs it scales; special registers before the general
// ones (they set the mode); XSAVE after the FPU it supersedes; the LAPIC
// before the MSRs, so the TSC-deadline MSR lands on a LAPIC in
// TSC-deadline mode; events and MP state last, as they depend on all
// the rest.
func restoreVCPU(c vcpuStateIO, s VCPUState) error {
	steps := []struct {
		name string
		f    func() error
	}{
		{"CPUID", func() error { return c.SetCPUID2(s.CPUID) }},
		{"TSC frequency", func() error { return restoreTSCKHz(c, s.TSCKHz) }},
		{"special registers", func() error { return c.SetSregs(restoredSregs(s.Sregs, s.CPUID)) }},
		{"registers", func() error { return c.SetRegs(s.Regs) }},
		{"FPU", func() error { return c.SetFPU(s.FPU) }},
		{"XSAVE", func() error { return c.SetXSave(s.XSave) }},
		{"XCRs", func() error { return c.SetXCRs(s.XCRs) }},
		{"debug registers", func() error { return c.SetDebugRegs(s.DebugRegs) }},
		{"LAPIC", func() error { return c.SetLAPIC(s.LAPIC) }},
		{"MSRs", func() error { return c.SetMSRs(s.MSRs) }},
		{"events", func() error { return c.SetEvents(s.Events) }},
		{"MP state", func() error { return c.SetMPState(s.MPState) }},
	}
	for _, st := range steps {
		if err := st.f(); err != nil {
			return fmt.Errorf("restore vCPU %d %s: %w", c.ID(), st.name, err)
		}
	}
	return nil
}

// TSS descriptor types (Intel SDM vol. 3A, 3.5 table 3-2; AMD APM vol.
// 2, 4.8.3): a 64-bit TSS available, and busy.
const (
	tssAvailable = 0x9
	tssBusy      = 0xb
)

// restoredSregs is the special registers a snapshot saved, as they are
// to be written back. On AMD (cpuid's vendor, the saving host's) KVM
// reports TR as busy whatever the VMCB holds (svm_get_segment sets the
// bit, since SVM does not keep it), so writing that back changes the
// guest's hidden TR to busy. Real CPUs do not look at TR's type again
// once it is loaded, but QEMU's TCG, under which our nested tests run
// SVM, checks the I/O permission bitmap only through an available TSS
// (check_io) and so raised #GP on every ioperm'd OUT in a restored
// guest: vmm-init could not write the exit port. The type the guest's
// own LTR left, available, goes back. Intel's VMX requires busy, and
// gets what KVM reported.
func restoredSregs(s kvm.Sregs, cpuid []kvm.CPUIDEntry) kvm.Sregs {
	if isAMD(cpuid) && s.TR.Type == tssBusy {
		s.TR.Type = tssAvailable
	}
	return s
}

// isAMD reports whether cpuid's vendor is AMD's or Hygon's, whose
// virtualization is SVM.
func isAMD(cpuid []kvm.CPUIDEntry) bool {
	switch describeCPU(cpuid) {
	case "AuthenticAMD", "HygonGenuine":
		return true
	}
	return false
}

// featureRegs are the CPUID words of feature flags a guest may rely on
// once it booted (Intel SDM vol. 2A "CPUID"; AMD APM vol. 3 appendix E):
// a host that lacks a bit the guest saw cannot run it.
var featureRegs = []struct {
	leaf, index uint32
	reg         string
}{
	{0x1, 0, "ecx"}, {0x1, 0, "edx"},
	{0x7, 0, "ebx"}, {0x7, 0, "ecx"}, {0x7, 0, "edx"},
	{0x7, 1, "eax"},
	{0xd, 1, "eax"},
	{0x80000001, 0, "ecx"}, {0x80000001, 0, "edx"},
}

// vmmSetBits are bits vmm itself sets in leaf 1 whatever the host
// reports (cpuid.go), so they are not the host's to lack.
const vmmSetECX1 = ecxHypervisor | ecxTSCDeadline

// errCPUFeatures is wrapped by missingCPUFeatures' error.
var errCPUFeatures = errors.New("this host's CPU lacks features the snapshot's guest saw")

// missingCPUFeatures compares the CPUID a snapshot's guest saw with what
// this host's KVM supports, and names what is missing.
func missingCPUFeatures(saw, supported []kvm.CPUIDEntry) error {
	find := func(es []kvm.CPUIDEntry, leaf, index uint32) (kvm.CPUIDEntry, bool) {
		for _, e := range es {
			if e.Function == leaf && (e.Index == index || (index == 0 && e.Flags&kvm.CPUIDFlagSignificantIndex == 0)) {
				return e, true
			}
		}
		return kvm.CPUIDEntry{}, false
	}
	word := func(e kvm.CPUIDEntry, reg string) uint32 {
		switch reg {
		case "eax":
			return e.EAX
		case "ebx":
			return e.EBX
		case "ecx":
			return e.ECX
		}
		return e.EDX
	}
	var missing []string
	for _, f := range featureRegs {
		s, ok := find(saw, f.leaf, f.index)
		if !ok {
			continue
		}
		h, _ := find(supported, f.leaf, f.index)
		lack := word(s, f.reg) &^ word(h, f.reg)
		if f.leaf == 1 && f.reg == "ecx" {
			lack &^= vmmSetECX1
		}
		if f.leaf == 1 && f.reg == "edx" {
			lack &^= edxHTT
		}
		if lack != 0 {
			missing = append(missing, fmt.Sprintf("CPUID %#x.%d %s bits %#x", f.leaf, f.index, f.reg, lack))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %v", errCPUFeatures, missing)
	}
	return nil
}
