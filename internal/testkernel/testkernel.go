// Package testkernel builds tiny but valid bzImages for tests: a boot
// protocol 2.15 setup header in front of a payload whose 64-bit entry
// (payload offset 0x200) is code the test chooses, optionally followed by
// a compressed vmlinux the header locates. machine's unit tests use
// it to check the memory layout, and the end-to-end suite to boot guests
// that misbehave on purpose (a triple fault) on real KVM.
package testkernel

import (
	"bytes"
	"encoding/binary"

	"github.com/pierrec/lz4/v4"
)

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

// LoadPhysicalAddr is where Vmlinux's segment and entry point are: the
// LOAD_PHYSICAL_ADDR of x86-64 kernels (16 MiB).
const LoadPhysicalAddr = 0x1000000

// ELF64 constants for Vmlinux (System V ABI; include/uapi/linux/elf.h).
const (
	elfHeaderSize = 64
	phdrSize      = 56
	ptLoad        = 1
	etExec        = 2
	emX86_64      = 62
	pfRWX         = 7
)

// Vmlinux returns a tiny x86-64 vmlinux: an ET_EXEC ELF with one PT_LOAD
// segment at LoadPhysicalAddr holding code followed by bss zero bytes
// that are not in the file, entered at its first byte as a real vmlinux
// is entered at startup_64.
func Vmlinux(code []byte, bss int) []byte {
	le := binary.LittleEndian
	off := elfHeaderSize + phdrSize
	b := make([]byte, off+len(code))
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	le.PutUint16(b[16:], etExec)
	le.PutUint16(b[18:], emX86_64)
	le.PutUint32(b[20:], 1) // e_version
	le.PutUint64(b[24:], LoadPhysicalAddr)
	le.PutUint64(b[32:], elfHeaderSize) // e_phoff
	le.PutUint16(b[52:], elfHeaderSize) // e_ehsize
	le.PutUint16(b[54:], phdrSize)
	le.PutUint16(b[56:], 1) // e_phnum
	ph := b[elfHeaderSize:]
	le.PutUint32(ph[0:], ptLoad)
	le.PutUint32(ph[4:], pfRWX)
	le.PutUint64(ph[8:], uint64(off))
	le.PutUint64(ph[16:], 0xffffffff80000000+LoadPhysicalAddr) // p_vaddr: the kernel mapping
	le.PutUint64(ph[24:], LoadPhysicalAddr)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)+bss))
	le.PutUint64(ph[48:], 0x200000)
	copy(b[off:], code)
	return b
}

// LZ4 compresses b as the kernel's Makefile does an LZ4 kernel's payload
// (scripts/Makefile.lib, cmd_lz4): a legacy LZ4 frame, as `lz4 -l`
// writes, followed by the uncompressed size as a little-endian u32.
func LZ4(b []byte) []byte {
	var out bytes.Buffer
	w := lz4.NewWriter(&out)
	// Writing to a bytes.Buffer cannot fail, nor can a valid option.
	_ = w.Apply(lz4.LegacyOption(true))
	_, _ = w.Write(b)
	_ = w.Close()
	return binary.LittleEndian.AppendUint32(out.Bytes(), uint32(len(b)))
}
