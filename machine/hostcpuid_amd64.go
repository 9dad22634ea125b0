package machine

// hostCPUID executes the CPUID instruction on the host (Intel SDM vol. 2A
// "CPUID"). It exists for the one value KVM_GET_SUPPORTED_CPUID does not
// pass on: the processor's brand string. Only leaves that ECX does not
// index are read with it, so it takes no subleaf.
func hostCPUID(leaf uint32) (eax, ebx, ecx, edx uint32)

// hostBrand is the host processor's brand string as CPUID leaves
// 0x80000002-0x80000004 return it, twelve registers of four ASCII bytes
// each (EAX, EBX, ECX, EDX of each leaf in turn), or all zero when the
// host has no such leaves.
func hostBrand() (b brandString) {
	if max, _, _, _ := hostCPUID(leafExtMax); max < leafBrandLast {
		return b
	}
	for i := range b {
		b[i][0], b[i][1], b[i][2], b[i][3] = hostCPUID(leafBrandFirst + uint32(i))
	}
	return b
}
