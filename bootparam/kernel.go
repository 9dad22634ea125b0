// Package bootparam understands just enough of the Linux x86 boot protocol
// to boot a bzImage directly in 32-bit or 64-bit mode: the VMM loads the
// protected-mode kernel itself and never runs the 16-bit setup code, so it
// has to validate the setup header and build the zero page (struct
// boot_params) the setup code would otherwise have filled in.
//
// The authoritative references are Documentation/arch/x86/boot.rst,
// Documentation/arch/x86/zero-page.rst and
// arch/x86/include/uapi/asm/bootparam.h in the Linux tree.
package bootparam

import (
	"encoding/binary"
	"fmt"
)

// Offsets of setup_header fields, which sit at the same place in the
// bzImage file and in the zero page (struct setup_header in
// arch/x86/include/uapi/asm/bootparam.h; the table in boot.rst, "THE REAL-
// MODE KERNEL HEADER").
const (
	offSetupHeader     = 0x1f1 // start of struct setup_header
	offSetupSects      = 0x1f1 // u8 setup_sects
	offSyssize         = 0x1f4 // u32 syssize, in 16-byte paragraphs
	offBootFlag        = 0x1fe // u16 boot_flag
	offJump            = 0x200 // u16 jump: 0xEB, rel8 to the end of the header
	offHeaderMagic     = 0x202 // u32 header "HdrS"
	offVersion         = 0x206 // u16 version
	offTypeOfLoader    = 0x210 // u8 type_of_loader
	offLoadFlags       = 0x211 // u8 loadflags
	offCode32Start     = 0x214 // u32 code32_start
	offRamdiskImage    = 0x218 // u32 ramdisk_image
	offRamdiskSize     = 0x21c // u32 ramdisk_size
	offCmdLinePtr      = 0x228 // u32 cmd_line_ptr (2.02)
	offInitrdAddrMax   = 0x22c // u32 initrd_addr_max (2.03)
	offKernelAlignment = 0x230 // u32 kernel_alignment (2.05)
	offRelocatable     = 0x234 // u8 relocatable_kernel (2.05)
	offXLoadFlags      = 0x236 // u16 xloadflags (2.12)
	offCmdlineSize     = 0x238 // u32 cmdline_size (2.06)
	offPayloadOffset   = 0x248 // u32 payload_offset (2.08)
	offPayloadLength   = 0x24c // u32 payload_length (2.08)
	offPrefAddress     = 0x258 // u64 pref_address (2.10)
	offInitSize        = 0x260 // u32 init_size (2.10)

	// setupHeaderLimit is where boot_params' room for the setup header
	// ends (edd_mbr_sig_buffer follows the header's _pad7). A header
	// claiming to run past it would overwrite unrelated zero-page fields.
	setupHeaderLimit = 0x290
)

// Protocol constants from boot.rst.
const (
	bootFlagMagic   = 0xaa55
	headerMagic     = 0x53726448 // "HdrS" read little-endian
	shortJumpOp     = 0xeb
	sectorSize      = 512
	defaultSetup    = 4 // setup_sects == 0 means 4 (boot.rst, setup_sects)
	minProtocol     = 0x0206
	protocol2_08    = 0x0208
	defInitrdMax    = 0x37ffffff // initrd_addr_max before protocol 2.03, or when 0
	protocol2_10    = 0x020a
	protocol2_12    = 0x020c
	loaderUndefined = 0xff // "undefined" loader ID (boot.rst, type_of_loader)
)

// Flag bits (arch/x86/include/uapi/asm/bootparam.h).
const (
	LoadedHigh            = 1 << 0 // loadflags LOADED_HIGH: protected-mode code goes at 0x100000
	CanUseHeap            = 1 << 7 // loadflags CAN_USE_HEAP: heap_end_ptr is valid
	XLFKernel64           = 1 << 0 // xloadflags XLF_KERNEL_64: 64-bit entry at load address + 0x200
	XLFCanBeLoadedAbove4G = 1 << 1 // xloadflags XLF_CAN_BE_LOADED_ABOVE_4G: ext_ fields honoured
)

// Entry64Offset is where the 64-bit entry point sits relative to the
// protected-mode load address (boot.rst, "64-bit BOOT PROTOCOL").
const Entry64Offset = 0x200

// DefaultLoadAddress is where a bzImage's protected-mode kernel is loaded
// when it is not relocated (boot.rst, code32_start).
const DefaultLoadAddress = 0x100000

// requiredHeaderEnd is the offset just after the last setup_header field
// that protocol version defines. A header shorter than its version claims
// is corrupt, and reading fields from it would pick up setup code bytes.
func requiredHeaderEnd(version uint16) int {
	switch {
	case version >= 0x020f:
		return 0x26c // kernel_info_offset
	case version >= 0x020b:
		return 0x268 // handover_offset
	case version >= 0x020a:
		return 0x264 // pref_address, init_size
	case version >= 0x0209:
		return 0x258 // setup_data
	case version >= 0x0208:
		return 0x250 // payload_offset, payload_length
	case version >= 0x0207:
		return 0x248 // hardware_subarch, hardware_subarch_data
	default:
		return offCmdlineSize + 4
	}
}

// Kernel is a parsed bzImage. Fields that an older protocol does not
// define hold the value the boot protocol says to assume instead, so
// callers never need to check Protocol themselves.
type Kernel struct {
	Protocol        uint16 // e.g. 0x020f for 2.15
	SetupSects      int    // as found in the header; 0 means 4
	LoadFlags       uint8
	XLoadFlags      uint16 // 0 before protocol 2.12
	Relocatable     bool
	KernelAlignment uint32
	PrefAddress     uint64 // DefaultLoadAddress before protocol 2.10 or when the header says 0
	InitSize        uint32 // bytes the kernel needs from its load address to boot; 0 (unknown) before 2.10
	InitrdAddrMax   uint32 // last byte the initrd may occupy; 0x37FFFFFF when the header says 0
	CmdlineSize     uint32 // longest command line, excluding the NUL
	Code32Start     uint32
	Header          []byte // setup_header bytes from 0x1f1 to the end given by the jump at 0x200 (a copy)
	Payload         []byte // the protected-mode kernel (aliases the input image)
}

// Supports64BitEntry reports whether the kernel can be entered in long
// mode at its load address + Entry64Offset, skipping the 32-bit startup.
func (k *Kernel) Supports64BitEntry() bool {
	return k.Protocol >= protocol2_12 && k.XLoadFlags&XLFKernel64 != 0
}

// CanLoadAbove4G reports whether the kernel reads the ext_ fields of the
// zero page, which is what lets the command line or initrd live above 4 GiB.
func (k *Kernel) CanLoadAbove4G() bool {
	return k.Protocol >= protocol2_12 && k.XLoadFlags&XLFCanBeLoadedAbove4G != 0
}

func protoString(v uint16) string {
	return fmt.Sprintf("%d.%02d", v>>8, v&0xff)
}

// ParseKernel validates image as a bzImage this VMM can boot directly and
// extracts what the loader needs. It only reads image; Payload aliases it.
func ParseKernel(image []byte) (*Kernel, error) {
	le := binary.LittleEndian
	if len(image) < offVersion+2 {
		return nil, fmt.Errorf("truncated bzImage: file has %d bytes, the setup header needs at least %d", len(image), offVersion+2)
	}
	if f := le.Uint16(image[offBootFlag:]); f != bootFlagMagic {
		return nil, fmt.Errorf("not a Linux bzImage: boot_flag at 0x%x is 0x%04x, want 0x%04x", offBootFlag, f, bootFlagMagic)
	}
	if le.Uint32(image[offHeaderMagic:]) != headerMagic {
		return nil, fmt.Errorf("not a Linux bzImage: missing HdrS magic at 0x%x", offHeaderMagic)
	}
	version := le.Uint16(image[offVersion:])
	if version < minProtocol {
		return nil, fmt.Errorf("kernel uses boot protocol %s; need %s or later", protoString(version), protoString(minProtocol))
	}
	if op := image[offJump]; op != shortJumpOp {
		return nil, fmt.Errorf("malformed setup header: expected a short jump (0x%02x) at 0x%x, found 0x%02x", shortJumpOp, offJump, op)
	}
	hdrEnd := offJump + 2 + int(image[offJump+1])
	if hdrEnd > setupHeaderLimit {
		return nil, fmt.Errorf("malformed setup header: it ends at 0x%x, past the 0x%x that boot_params has room for", hdrEnd, setupHeaderLimit)
	}
	if need := requiredHeaderEnd(version); hdrEnd < need {
		return nil, fmt.Errorf("malformed setup header: it ends at 0x%x but boot protocol %s defines fields up to 0x%x", hdrEnd, protoString(version), need)
	}
	if hdrEnd > len(image) {
		return nil, fmt.Errorf("truncated bzImage: setup header ends at 0x%x, file has %d bytes", hdrEnd, len(image))
	}
	loadFlags := image[offLoadFlags]
	if loadFlags&LoadedHigh == 0 {
		return nil, fmt.Errorf("zImage kernels are not supported: LOADED_HIGH is clear in loadflags (0x%02x)", loadFlags)
	}
	setupSects := int(image[offSetupSects])
	sects := setupSects
	if sects == 0 {
		sects = defaultSetup
	}
	setupLen := (sects + 1) * sectorSize
	if setupLen > len(image) {
		return nil, fmt.Errorf("truncated bzImage: setup needs %d bytes, file has %d", setupLen, len(image))
	}
	payload := image[setupLen:]
	if len(payload) == 0 {
		return nil, fmt.Errorf("truncated bzImage: no protected-mode kernel after the %d-byte setup", setupLen)
	}
	// syssize is 32 bits wide from protocol 2.04 on, so it is trustworthy
	// here; it catches a download cut short inside the kernel proper.
	if sys := uint64(le.Uint32(image[offSyssize:])) * 16; sys > uint64(len(payload)) {
		return nil, fmt.Errorf("truncated bzImage: header says the protected-mode kernel is %d bytes, file has %d after the setup", sys, len(payload))
	}

	k := &Kernel{
		Protocol:        version,
		SetupSects:      setupSects,
		LoadFlags:       loadFlags,
		Relocatable:     image[offRelocatable] != 0,
		KernelAlignment: le.Uint32(image[offKernelAlignment:]),
		PrefAddress:     DefaultLoadAddress,
		InitrdAddrMax:   le.Uint32(image[offInitrdAddrMax:]),
		CmdlineSize:     le.Uint32(image[offCmdlineSize:]),
		Code32Start:     le.Uint32(image[offCode32Start:]),
		Header:          append([]byte(nil), image[offSetupHeader:hdrEnd]...),
		Payload:         payload,
	}
	if k.InitrdAddrMax == 0 {
		k.InitrdAddrMax = defInitrdMax
	}
	if version >= protocol2_12 {
		k.XLoadFlags = le.Uint16(image[offXLoadFlags:])
	}
	if version >= protocol2_10 {
		if p := le.Uint64(image[offPrefAddress:]); p != 0 {
			k.PrefAddress = p
		}
		k.InitSize = le.Uint32(image[offInitSize:])
	}
	return k, nil
}
