package bootparam

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// ZeroPageSize is the size of struct boot_params.
const ZeroPageSize = 4096

// Offsets of struct boot_params fields outside the setup header
// (arch/x86/include/uapi/asm/bootparam.h; Documentation/arch/x86/zero-page.rst).
const (
	offACPIRSDPAddr    = 0x070 // u64 acpi_rsdp_addr
	offExtRamdiskImage = 0x0c0 // u32 ext_ramdisk_image: bits 32-63 of ramdisk_image
	offExtRamdiskSize  = 0x0c4 // u32 ext_ramdisk_size
	offExtCmdLinePtr   = 0x0c8 // u32 ext_cmd_line_ptr
	offE820Entries     = 0x1e8 // u8 e820_entries
	offE820Table       = 0x2d0 // struct boot_e820_entry e820_table[E820_MAX_ENTRIES_ZEROPAGE]
	e820EntrySize      = 20    // packed {u64 addr; u64 size; u32 type}
)

// MaxE820Entries is E820_MAX_ENTRIES_ZEROPAGE: the zero page has no room
// for more, and silently dropping entries would hide RAM or, worse,
// reserved ranges from the guest.
const MaxE820Entries = 128

// E820 memory types (enum e820_type, arch/x86/include/asm/e820/types.h).
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3 // ACPI tables, reclaimable once parsed
	E820NVS      = 4
	E820Unusable = 5
)

const pageSize = 4096

// E820Entry is one range of the guest physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// Params is what the VMM decided about guest memory; BootParams only
// records and checks it, the caller writes the bytes it points at.
type Params struct {
	CmdlineAddr uint64 // where the caller puts Cmdline followed by a NUL; 0 only with an empty Cmdline
	Cmdline     string // excludes the NUL

	InitrdAddr, InitrdSize uint64 // 0, 0 = no initrd

	E820 []E820Entry

	// ACPIRSDPAddr, if not 0, spares the kernel the legacy scan of the
	// EBDA and BIOS area for the RSDP. Kernels before 4.20 ignore it.
	ACPIRSDPAddr uint64
}

// BootParams returns the zero page for p. It refuses anything the kernel
// would misread rather than boot a guest that fails in obscure ways: a
// command line it would truncate, an initrd where it may not be, an
// address it cannot see, or a memory map that does not fit.
func (k *Kernel) BootParams(p Params) ([]byte, error) {
	le := binary.LittleEndian
	if len(k.Header) < requiredHeaderEnd(minProtocol)-offSetupHeader || len(k.Header) > setupHeaderLimit-offSetupHeader {
		return nil, fmt.Errorf("setup header is %d bytes; want %d to %d", len(k.Header), requiredHeaderEnd(minProtocol)-offSetupHeader, setupHeaderLimit-offSetupHeader)
	}

	if i := strings.IndexByte(p.Cmdline, 0); i >= 0 {
		return nil, fmt.Errorf("kernel command line contains a NUL byte at offset %d", i)
	}
	if uint64(len(p.Cmdline)) > uint64(k.CmdlineSize) {
		return nil, fmt.Errorf("kernel command line is %d bytes; this kernel accepts at most %d", len(p.Cmdline), k.CmdlineSize)
	}
	cmdEnd := p.CmdlineAddr + uint64(len(p.Cmdline)) + 1
	switch {
	case p.CmdlineAddr == 0 && p.Cmdline != "":
		return nil, fmt.Errorf("kernel command line has no address (0 means none)")
	case p.CmdlineAddr != 0 && cmdEnd <= p.CmdlineAddr:
		return nil, fmt.Errorf("kernel command line at 0x%x wraps around the address space", p.CmdlineAddr)
	case p.CmdlineAddr>>32 != 0 && !k.CanLoadAbove4G():
		return nil, fmt.Errorf("kernel command line at 0x%x is above 4 GiB, which this kernel (protocol %s, xloadflags 0x%x) cannot read", p.CmdlineAddr, protoString(k.Protocol), k.XLoadFlags)
	}

	if (p.InitrdAddr == 0) != (p.InitrdSize == 0) {
		return nil, fmt.Errorf("initrd address 0x%x and size %d: both must be 0 (no initrd) or neither", p.InitrdAddr, p.InitrdSize)
	}
	if p.InitrdSize != 0 {
		end := p.InitrdAddr + p.InitrdSize
		switch {
		case end < p.InitrdAddr:
			return nil, fmt.Errorf("initrd at 0x%x (%d bytes) wraps around the address space", p.InitrdAddr, p.InitrdSize)
		case end > k.InitrdLimit():
			return nil, fmt.Errorf("initrd at 0x%x (%d bytes) extends past this kernel's initrd_addr_max 0x%x", p.InitrdAddr, p.InitrdSize, k.InitrdAddrMax)
		}
		if p.CmdlineAddr != 0 && p.CmdlineAddr < end && p.InitrdAddr < cmdEnd {
			return nil, fmt.Errorf("kernel command line at [0x%x, 0x%x) overlaps the initrd at [0x%x, 0x%x)", p.CmdlineAddr, cmdEnd, p.InitrdAddr, end)
		}
	}

	if len(p.E820) == 0 {
		return nil, fmt.Errorf("no E820 entries: the kernel needs a memory map")
	}
	if len(p.E820) > MaxE820Entries {
		return nil, fmt.Errorf("%d E820 entries; the zero page holds at most %d", len(p.E820), MaxE820Entries)
	}
	for i, e := range p.E820 {
		if e.Addr+e.Size < e.Addr {
			return nil, fmt.Errorf("E820 entry %d at 0x%x (%d bytes) wraps around the address space", i, e.Addr, e.Size)
		}
	}

	zp := make([]byte, ZeroPageSize)
	copy(zp[offSetupHeader:], k.Header)
	zp[offTypeOfLoader] = loaderUndefined
	// Without the real-mode setup code there is no setup heap, so
	// heap_end_ptr means nothing.
	zp[offLoadFlags] = k.LoadFlags &^ CanUseHeap

	le.PutUint32(zp[offCmdLinePtr:], uint32(p.CmdlineAddr))
	le.PutUint32(zp[offExtCmdLinePtr:], uint32(p.CmdlineAddr>>32))
	le.PutUint32(zp[offRamdiskImage:], uint32(p.InitrdAddr))
	le.PutUint32(zp[offExtRamdiskImage:], uint32(p.InitrdAddr>>32))
	le.PutUint32(zp[offRamdiskSize:], uint32(p.InitrdSize))
	le.PutUint32(zp[offExtRamdiskSize:], uint32(p.InitrdSize>>32))
	le.PutUint64(zp[offACPIRSDPAddr:], p.ACPIRSDPAddr)

	zp[offE820Entries] = uint8(len(p.E820))
	for i, e := range p.E820 {
		b := zp[offE820Table+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}
	return zp, nil
}

// InitrdLimit is the address the initrd must end at or below. A kernel
// that reads the zero page's ext_ fields (protocol 2.12,
// XLF_CAN_BE_LOADED_ABOVE_4G) takes its initrd anywhere in RAM: boot.rst
// says so of the flag, and the 2 GiB such kernels still put in
// initrd_addr_max is there for old boot loaders (arch/x86/boot/header.S:
// "The current kernel allows up to 4 GB, but leave it at 2 GB to avoid
// possible bootloader bugs"), as QEMU reads it too. Without this an
// initrd of 2 GiB could not boot however large -m was.
func (k *Kernel) InitrdLimit() uint64 {
	if k.CanLoadAbove4G() {
		return 1<<64 - 1
	}
	return uint64(k.InitrdAddrMax) + 1
}

// PlaceInitrd chooses where the initrd goes: as high as allowed, the way
// boot loaders do, so it stays clear of the kernel's decompression and
// early allocations near the bottom of memory. The result is page aligned,
// at least lowest (and never 0, which would mean "no initrd"), and the
// initrd ends at or below both ramEnd and the kernel's limit (InitrdLimit).
func (k *Kernel) PlaceInitrd(size, lowest, ramEnd uint64) (uint64, error) {
	if size == 0 {
		return 0, fmt.Errorf("initrd is empty")
	}
	limit := min(ramEnd, k.InitrdLimit())
	lo := max(lowest, 1)
	if lo > ^uint64(0)-(pageSize-1) {
		return 0, fmt.Errorf("initrd lower bound 0x%x is beyond the address space", lowest)
	}
	lo = (lo + pageSize - 1) &^ (pageSize - 1)
	if size > limit || (limit-size)&^(pageSize-1) < lo {
		return 0, fmt.Errorf("initrd of %d bytes does not fit between 0x%x and 0x%x (RAM end 0x%x, initrd_addr_max 0x%x)", size, lo, limit, ramEnd, k.InitrdAddrMax)
	}
	return (limit - size) &^ (pageSize - 1), nil
}
