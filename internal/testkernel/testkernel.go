// Package testkernel builds tiny but valid bzImages for tests: a boot
// protocol 2.15 setup header in front of a payload whose 64-bit entry
// (payload offset 0x200) is code the test chooses, optionally followed by
// a compressed vmlinux the header locates. machine's unit tests use
// it to check the memory layout, and the end-to-end suite to boot guests
// that misbehave on purpose (a triple fault) on real KVM.
package testkernel

import "encoding/binary"

// Offsets in the setup header (Documentation/arch/x86/boot.rst).
const (
	offSetupSects      = 0x1f1
	offSyssize         = 0x1f4
	offBootFlag        = 0x1fe
	offJump            = 0x200
	offHeaderMagic     = 0x202
	offVersion         = 0x206
	offLoadFlags       = 0x211
	offCode32Start     = 0x214
	offInitrdAddrMax   = 0x22c
	offKernelAlignment = 0x230
	offRelocatable     = 0x234
	offXLoadFlags      = 0x236
	offCmdlineSize     = 0x238
	offPayloadOffset   = 0x248
	offPayloadLength   = 0x24c
	offPrefAddress     = 0x258
	offInitSize        = 0x260
	headerEnd          = 0x26c
	setupSects         = 1
	payloadStart       = (setupSects + 1) * 512
	entry64            = 0x200
)

// Options shape the image.
type Options struct {
	// Entry64 is the code at the 64-bit entry point.
	Entry64 []byte
	// InitSize is init_size: how much memory the kernel claims while it
	// boots. Zero means 1 MiB.
	InitSize uint32
	// No64Bit clears XLF_KERNEL_64, so loaders must use the 32-bit entry.
	No64Bit bool
	// Compressed, if not empty, is placed after the entry code and
	// located by payload_offset and payload_length, as a real bzImage
	// locates its compressed vmlinux: tests of loaders that decompress it
	// themselves put a compressed test vmlinux here.
	Compressed []byte
}

// Build returns the bzImage.
func Build(o Options) []byte {
	// syssize counts 16-byte paragraphs, so the payload is a whole number.
	compressedAt := entry64 + len(o.Entry64)
	payload := make([]byte, (compressedAt+len(o.Compressed)+15)/16*16)
	copy(payload[entry64:], o.Entry64)
	copy(payload[compressedAt:], o.Compressed)
	img := make([]byte, payloadStart+len(payload))
	copy(img[payloadStart:], payload)
	le := binary.LittleEndian
	img[offSetupSects] = setupSects
	le.PutUint32(img[offSyssize:], uint32((len(payload)+15)/16))
	le.PutUint16(img[offBootFlag:], 0xaa55)
	img[offJump], img[offJump+1] = 0xeb, headerEnd-(offJump+2)
	copy(img[offHeaderMagic:], "HdrS")
	le.PutUint16(img[offVersion:], 0x020f)
	img[offLoadFlags] = 1 // LOADED_HIGH
	le.PutUint32(img[offCode32Start:], 0x100000)
	le.PutUint32(img[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(img[offKernelAlignment:], 0x200000)
	img[offRelocatable] = 1
	xlf := uint16(1 | 2) // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
	if o.No64Bit {
		xlf = 0
	}
	le.PutUint16(img[offXLoadFlags:], xlf)
	le.PutUint32(img[offCmdlineSize:], 2047)
	le.PutUint64(img[offPrefAddress:], 0x1000000)
	initSize := o.InitSize
	if initSize == 0 {
		initSize = 1 << 20
	}
	le.PutUint32(img[offInitSize:], initSize)
	if len(o.Compressed) > 0 {
		le.PutUint32(img[offPayloadOffset:], uint32(compressedAt))
		le.PutUint32(img[offPayloadLength:], uint32(len(o.Compressed)))
	}
	return img
}
