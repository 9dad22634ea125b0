package machine

import "github.com/vmm-dev/vmm/kvm"

// CPUID leaves and bits adjusted per vCPU (Intel SDM vol. 2A "CPUID";
// AMD APM vol. 3 appendix E; Documentation/virt/kvm/x86/cpuid.rst).
const (
	leafFeatures      = 0x1
	leafTopology      = 0xb
	leafTopologyV2    = 0x1f
	leafKVMSignature  = 0x40000000
	leafKVMFeatures   = 0x40000001
	leafAMDExtAPICID  = 0x8000001e
	leafExtMax        = 0x80000000 // EAX: the highest extended leaf
	leafBrandFirst    = 0x80000002 // the brand string, 16 bytes a leaf
	leafBrandLast     = 0x80000004
	ecxHypervisor     = 1 << 31
	ecxTSCDeadline    = 1 << 24
	kvmSignatureEBX   = 0x4b4d564b // "KVMK"
	kvmSignatureECX   = 0x564b4d56 // "VMKV"
	kvmSignatureEDX   = 0x0000004d // "M\0\0\0"
	ebxAPICIDShift    = 24
	ebxLogicalShift   = 16
	edxHTT            = 1 << 28
	maxLogicalPerPkg  = 0xff
	kvmFeatureMissing = 0
)

// cpuidOptions are host facts KVM reports outside KVM_GET_SUPPORTED_CPUID.
type cpuidOptions struct {
	// tscDeadline is KVM_CAP_TSC_DEADLINE_TIMER: KVM emulates the LAPIC's
	// TSC-deadline mode but leaves announcing it to userspace. With it
	// Linux skips calibrating the LAPIC timer against the PIT, which
	// fails under nested emulation ("APIC timer disabled due to
	// verification failure") and leaves the guest without one-shot timers.
	tscDeadline bool
	// brand is the host's brand string (hostBrand). KVM reports leaves
	// 0x80000002-0x80000004 as zeros (arch/x86/kvm/cpuid.c,
	// __do_cpuid_func: they have no case and fall to the default that
	// clears them), so without it Linux names the guest's processor by
	// family and model alone (e.g. "17/01" in /proc/cpuinfo and lscpu)
	// where QEMU's -cpu host shows the host's name. (Firecracker writes
	// a fixed name of its own instead.)
	brand brandString
}

// brandString is CPUID leaves 0x80000002-0x80000004: EAX, EBX, ECX and
// EDX of each.
type brandString [leafBrandLast - leafBrandFirst + 1][4]uint32

// vcpuCPUID derives what vCPU apicID of n sees from what KVM supports.
// KVM reports the host's values for per-CPU fields; the guest must see
// its own APIC ID in every place the kernel reads one (leaf 1 EBX, the
// x2APIC topology leaves, AMD's extended APIC ID), or it warns about
// mismatched IDs and large vCPU counts break. The hypervisor bit and KVM's
// signature leaf make the kernel use kvm-clock and KVM's paravirtual
// features instead of calibrating the TSC against the PIT. The brand
// string leaves, zeros from KVM, get the host's (opt.brand).
func vcpuCPUID(supported []kvm.CPUIDEntry, apicID, n int, opt cpuidOptions) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, 0, len(supported)+2+len(opt.brand))
	haveSig, haveFeat := false, false
	// The host's name goes in only where KVM gave no name at all: a
	// name of its own is KVM's to give, and one half from each would
	// be neither.
	brand, extMax := opt.brand, uint32(0)
	var haveBrand [len(brandString{})]bool
	for _, e := range supported {
		if e.Function >= leafBrandFirst && e.Function <= leafBrandLast && e.EAX|e.EBX|e.ECX|e.EDX != 0 {
			brand = brandString{}
		}
	}
	for _, e := range supported {
		switch e.Function {
		case leafExtMax:
			extMax = e.EAX
		case leafBrandFirst, leafBrandFirst + 1, leafBrandLast:
			i := e.Function - leafBrandFirst
			haveBrand[i] = true
			if brand != (brandString{}) {
				r := brand[i]
				e.EAX, e.EBX, e.ECX, e.EDX = r[0], r[1], r[2], r[3]
			}
		case leafFeatures:
			e.EBX = e.EBX&0x0000ffff | uint32(apicID)<<ebxAPICIDShift | uint32(min(n, maxLogicalPerPkg))<<ebxLogicalShift
			if n > 1 {
				e.EDX |= edxHTT
			}
			e.ECX |= ecxHypervisor
			if opt.tscDeadline {
				e.ECX |= ecxTSCDeadline
			}
		case leafTopology, leafTopologyV2:
			e.EDX = uint32(apicID)
		case leafAMDExtAPICID:
			e.EAX = uint32(apicID)
		case leafKVMSignature:
			haveSig = true
			e.EBX, e.ECX, e.EDX = kvmSignatureEBX, kvmSignatureECX, kvmSignatureEDX
			if e.EAX < leafKVMFeatures {
				e.EAX = leafKVMFeatures
			}
		case leafKVMFeatures:
			haveFeat = true
		}
		out = append(out, e)
	}
	// Every KVM since 2.6.35 reports both leaves; an odd host that does
	// not still gets the signature, with no paravirtual features claimed.
	if !haveSig {
		out = append(out, kvm.CPUIDEntry{Function: leafKVMSignature, EAX: leafKVMFeatures,
			EBX: kvmSignatureEBX, ECX: kvmSignatureECX, EDX: kvmSignatureEDX})
	}
	if !haveFeat {
		out = append(out, kvm.CPUIDEntry{Function: leafKVMFeatures, EAX: kvmFeatureMissing})
	}
	// Leaves KVM left out entirely are added only below the extended
	// maximum it reports: the guest reads no leaf past it.
	if brand != (brandString{}) && extMax >= leafBrandLast {
		for i, r := range brand {
			if !haveBrand[i] {
				out = append(out, kvm.CPUIDEntry{Function: leafBrandFirst + uint32(i), EAX: r[0], EBX: r[1], ECX: r[2], EDX: r[3]})
			}
		}
	}
	return out
}
