package bootparam

import (
	"encoding/binary"
	"fmt"
)

// CompressedKernel returns the compressed vmlinux inside the protected-mode
// kernel: the bytes that payload_offset and payload_length (protocol 2.08,
// boot.rst) locate and that the kernel's own decompressor unpacks at boot.
// A loader that decompresses them itself can boot the vmlinux directly.
// The result aliases Payload.
func (k *Kernel) CompressedKernel() ([]byte, error) {
	if k.Protocol < protocol2_08 {
		return nil, fmt.Errorf("boot protocol %s has no payload_offset (added in 2.08)", protoString(k.Protocol))
	}
	if len(k.Header) < offPayloadLength+4-offSetupHeader {
		return nil, fmt.Errorf("setup header is %d bytes, too short for payload_offset and payload_length", len(k.Header))
	}
	le := binary.LittleEndian
	off := uint64(le.Uint32(k.Header[offPayloadOffset-offSetupHeader:]))
	n := uint64(le.Uint32(k.Header[offPayloadLength-offSetupHeader:]))
	if n == 0 {
		return nil, fmt.Errorf("setup header has no compressed payload (payload_length is 0)")
	}
	if off+n > uint64(len(k.Payload)) {
		return nil, fmt.Errorf("compressed payload at offset 0x%x (%d bytes) runs past the %d-byte protected-mode kernel", off, n, len(k.Payload))
	}
	return k.Payload[off : off+n], nil
}

// Values of the header VmlinuxKernel makes up, which are those of a
// current x86-64 bzImage (arch/x86/boot/header.S).
const (
	offRootFlags      = 0x1f2      // u16 root_flags
	rootReadOnly      = 1          // ROOT_RDONLY: mount root read-only unless "rw" is given
	vmlinuxCmdlineMax = 2047       // COMMAND_LINE_SIZE (2048) - 1 on x86
	vmlinuxInitrdMax  = 0x7fffffff // what x86-64 kernels put in initrd_addr_max
	vmlinuxAlign      = 0x200000   // CONFIG_PHYSICAL_ALIGN of x86-64 defconfig
	vmlinuxProtocol   = 0x020f     // 2.15, the protocol of the fields set here
	vmlinuxHeaderEnd  = 0x26c      // end of the 2.15 setup header
)

// VmlinuxKernel returns the Kernel to boot a bare vmlinux ELF, which has no
// setup header of its own, through the 64-bit entry. The kernel proper
// still reads the setup header in the zero page (command line and initrd
// pointers, root_flags, loader type), so this makes up the one a current
// x86-64 bzImage carries: protocol 2.15, loaded high, 64-bit entry, a
// 2047-byte command line. Payload is empty: the caller loads the ELF.
func VmlinuxKernel() *Kernel {
	le := binary.LittleEndian
	img := make([]byte, vmlinuxHeaderEnd)
	le.PutUint16(img[offRootFlags:], rootReadOnly)
	le.PutUint16(img[offBootFlag:], bootFlagMagic)
	img[offJump], img[offJump+1] = shortJumpOp, vmlinuxHeaderEnd-(offJump+2)
	le.PutUint32(img[offHeaderMagic:], headerMagic)
	le.PutUint16(img[offVersion:], vmlinuxProtocol)
	img[offLoadFlags] = LoadedHigh
	le.PutUint32(img[offCode32Start:], DefaultLoadAddress)
	le.PutUint32(img[offInitrdAddrMax:], vmlinuxInitrdMax)
	le.PutUint32(img[offKernelAlignment:], vmlinuxAlign)
	le.PutUint16(img[offXLoadFlags:], XLFKernel64|XLFCanBeLoadedAbove4G)
	le.PutUint32(img[offCmdlineSize:], vmlinuxCmdlineMax)
	return &Kernel{
		Protocol:        vmlinuxProtocol,
		LoadFlags:       LoadedHigh,
		XLoadFlags:      XLFKernel64 | XLFCanBeLoadedAbove4G,
		KernelAlignment: vmlinuxAlign,
		PrefAddress:     DefaultLoadAddress,
		InitrdAddrMax:   vmlinuxInitrdMax,
		CmdlineSize:     vmlinuxCmdlineMax,
		Code32Start:     DefaultLoadAddress,
		Header:          img[offSetupHeader:],
	}
}
