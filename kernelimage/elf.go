package kernelimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"

	"github.com/vmm-dev/vmm/guestmem"
)

// ELF64 layout and values (System V ABI, "ELF Header" and "Program
// Header"; include/uapi/linux/elf.h).
const (
	elfMagic      = "\x7fELF"
	eiClass       = 4 // e_ident[EI_CLASS]
	eiData        = 5 // e_ident[EI_DATA]
	eiVersion     = 6 // e_ident[EI_VERSION]
	elfClass64    = 2 // ELFCLASS64
	elfData2LSB   = 1 // ELFDATA2LSB
	evCurrent     = 1 // EV_CURRENT
	etExec        = 2 // ET_EXEC: vmlinux is linked at fixed addresses
	emX86_64      = 62
	elfHeaderSize = 64 // sizeof(Elf64_Ehdr)
	offType       = 16 // e_type
	offMachine    = 18 // e_machine
	offEntry      = 24 // e_entry
	offPhoff      = 32 // e_phoff
	offPhentsize  = 54 // e_phentsize
	offPhnum      = 56 // e_phnum
	phdrSize      = 56 // sizeof(Elf64_Phdr)
	ptLoad        = 1  // PT_LOAD
	// startKernelMap is __START_KERNEL_map
	// (arch/x86/include/asm/page_64_types.h): x86-64 kernel text is
	// linked from here up, which tells a vmlinux from any other x86-64
	// executable (those are linked in the lower half).
	startKernelMap = 0xffffffff80000000
	// maxPhdrs bounds e_phnum: a vmlinux has a handful of program
	// headers (5 in Debian's 6.1), and PN_XNUM (0xffff), which moves the
	// count into a section header, is never needed for one.
	maxPhdrs = 64
)

// Segment is one PT_LOAD program header's contents.
type Segment struct {
	// Addr is p_paddr, the guest-physical load address. A vmlinux's
	// p_vaddr is its address in the kernel's high mapping, meaningless
	// before the kernel has set up paging.
	Addr uint64
	// Data is the p_filesz bytes from the file; it aliases ParseELF's input.
	Data []byte
	// MemSize is p_memsz: the bytes past Data up to it are zero in
	// memory (Load leaves them as fresh guest RAM has them).
	MemSize uint64
	// virt is p_vaddr, only used to check this is a kernel.
	virt uint64
}

// End is the address just past the segment in memory.
func (s Segment) End() uint64 { return s.Addr + s.MemSize }

// ELF is a parsed vmlinux: what a loader needs to boot it.
type ELF struct {
	// Entry is e_entry, the physical address of startup_64: a vmlinux is
	// linked with ENTRY(phys_startup_64), the 64-bit boot protocol's
	// entry point for a kernel loaded at its physical addresses.
	Entry uint64
	// Segments are the PT_LOAD segments that occupy memory, sorted by
	// address and not overlapping.
	Segments []Segment
}

// IsELF reports whether b starts like an ELF file, which is how a loader
// tells a vmlinux from a bzImage (whose first bytes are the setup code).
func IsELF(b []byte) bool {
	return len(b) >= len(elfMagic) && string(b[:len(elfMagic)]) == elfMagic
}

// ParseELF validates b as an x86-64 vmlinux (ELF64, little-endian,
// ET_EXEC) and returns its loadable segments and entry point. It reads
// only b; every offset and size is checked against it, and every address
// range for overflow, so the result can be loaded without further checks
// other than where guest memory is.
func ParseELF(b []byte) (*ELF, error) {
	le := binary.LittleEndian
	if len(b) < elfHeaderSize || string(b[:len(elfMagic)]) != elfMagic {
		return nil, fmt.Errorf("not an ELF file")
	}
	if b[eiClass] != elfClass64 || b[eiData] != elfData2LSB || b[eiVersion] != evCurrent {
		return nil, fmt.Errorf("ELF file is not 64-bit little-endian version 1 (class %d, data %d, version %d)", b[eiClass], b[eiData], b[eiVersion])
	}
	if t := le.Uint16(b[offType:]); t != etExec {
		return nil, fmt.Errorf("ELF file has type %d, want ET_EXEC (%d) as a vmlinux has", t, etExec)
	}
	if m := le.Uint16(b[offMachine:]); m != emX86_64 {
		return nil, fmt.Errorf("ELF file is for machine %d, want x86-64 (%d)", m, emX86_64)
	}
	phoff := le.Uint64(b[offPhoff:])
	phentsize := le.Uint16(b[offPhentsize:])
	phnum := uint64(le.Uint16(b[offPhnum:]))
	if phentsize != phdrSize {
		return nil, fmt.Errorf("ELF program headers are %d bytes each, want %d", phentsize, phdrSize)
	}
	if phnum == 0 || phnum > maxPhdrs {
		return nil, fmt.Errorf("ELF file has %d program headers, want 1 to %d", phnum, maxPhdrs)
	}
	if phoff > uint64(len(b)) || phnum*phdrSize > uint64(len(b))-phoff {
		return nil, fmt.Errorf("ELF program headers at 0x%x (%d of them) run past the %d-byte file", phoff, phnum, len(b))
	}
	e := &ELF{Entry: le.Uint64(b[offEntry:])}
	for i := range phnum {
		ph := b[phoff+i*phdrSize:][:phdrSize]
		if le.Uint32(ph[0:]) != ptLoad {
			continue
		}
		off, vaddr, paddr := le.Uint64(ph[8:]), le.Uint64(ph[16:]), le.Uint64(ph[24:])
		filesz, memsz := le.Uint64(ph[32:]), le.Uint64(ph[40:])
		switch {
		case filesz > memsz:
			return nil, fmt.Errorf("ELF segment %d has %d bytes in the file but only %d in memory", i, filesz, memsz)
		case off > uint64(len(b)) || filesz > uint64(len(b))-off:
			return nil, fmt.Errorf("ELF segment %d at file offset 0x%x (%d bytes) runs past the %d-byte file", i, off, filesz, len(b))
		case paddr+memsz < paddr:
			return nil, fmt.Errorf("ELF segment %d at 0x%x (%d bytes) wraps around the address space", i, paddr, memsz)
		case memsz == 0:
			continue
		}
		e.Segments = append(e.Segments, Segment{Addr: paddr, Data: b[off : off+filesz], MemSize: memsz, virt: vaddr})
	}
	if len(e.Segments) == 0 {
		return nil, fmt.Errorf("ELF file has nothing to load (no PT_LOAD segment with a size)")
	}
	// sort.Slice, not slices.SortFunc: a generic sort is about 10 KB of
	// code per element type in every vmm, for a handful of segments.
	sort.Slice(e.Segments, func(i, j int) bool { return e.Segments[i].Addr < e.Segments[j].Addr })
	for i := 1; i < len(e.Segments); i++ {
		if p, s := e.Segments[i-1], e.Segments[i]; s.Addr < p.End() {
			return nil, fmt.Errorf("ELF segments at [0x%x, 0x%x) and [0x%x, 0x%x) overlap", p.Addr, p.End(), s.Addr, s.End())
		}
	}
	// The kernel starts executing at Entry, so it must be code from the
	// file, not zeroed memory or a hole; and that code must be linked
	// where a kernel's is.
	i := slices.IndexFunc(e.Segments, func(s Segment) bool {
		return e.Entry >= s.Addr && e.Entry-s.Addr < uint64(len(s.Data))
	})
	if i < 0 {
		return nil, fmt.Errorf("ELF entry point 0x%x is not in any loaded segment's contents (is it a virtual address?)", e.Entry)
	}
	if v := e.Segments[i].virt; v < startKernelMap {
		return nil, fmt.Errorf("ELF file is not a Linux kernel: its entry point's segment is linked at 0x%x, below the kernel mapping at 0x%x", v, uint64(startKernelMap))
	}
	return e, nil
}

// Start is the lowest address the kernel occupies.
func (e *ELF) Start() uint64 { return e.Segments[0].Addr }

// End is the address just past the highest byte the kernel occupies.
func (e *ELF) End() uint64 { return e.Segments[len(e.Segments)-1].End() }

// Load copies the segments' file bytes into guest memory at their
// physical addresses. The rest of each segment, up to MemSize, must
// already be zero, as a fresh guest RAM mapping is: Load does not write
// it, because writing zeroes there would only fault in pages the kernel
// clears or fills itself (.bss, .brk), and in a nested L1 that costs as
// much as copying them (see TrimZeroTails). Each segment must lie
// within guest RAM; where in RAM is the caller's to check (Start, End)
// before calling, and nothing is written unless all of them fit.
func (e *ELF) Load(mem *guestmem.Memory) error {
	for _, s := range e.Segments {
		if _, err := mem.Slice(s.Addr, s.MemSize); err != nil {
			return fmt.Errorf("load ELF segment at [0x%x, 0x%x): %w", s.Addr, s.End(), err)
		}
	}
	for _, s := range e.Segments {
		dst, _ := mem.Slice(s.Addr, s.MemSize)
		copy(dst, s.Data)
	}
	return nil
}

// ELF64 header fields TrimZeroTails clears when it cuts the section
// header table off (System V ABI, "ELF Header").
const (
	offShoff     = 40 // e_shoff
	offShnum     = 60 // e_shnum
	offShstrndx  = 62 // e_shstrndx
	offShentsize = 58 // e_shentsize
)

// TrimZeroTails rewrites, in place, the program headers of the vmlinux in
// b so that no PT_LOAD segment keeps zero bytes at the end of its file
// contents: they become memory-only (p_filesz lowered, p_memsz kept), as
// .bss is in a vmlinux a linker writes. It returns the length b can then
// be cut to: the end of the furthest program header's contents, the
// section header table dropped (its fields zeroed) if it lay beyond.
// The loaded kernel is the same, since Load relies on zeroed memory past
// each segment's file bytes. A b that ParseELF refuses, or whose trimmed
// form would not parse to the same segments (a segment whose file bytes
// hold the headers being rewritten), is left as it is and its whole
// length returned.
//
// Why: the vmlinux in Debian's bzImages carries its last segment's
// zeroes in the file (of 46.3 MB of segments, 11.9 MB is the last one's
// zero tail, 16 MB zero pages in all). Cut off in the kernel cache, they
// are neither checksummed nor copied into guest RAM at each boot.
func TrimZeroTails(b []byte) int {
	want, err := ParseELF(b)
	if err != nil {
		return len(b)
	}
	le := binary.LittleEndian
	phoff := le.Uint64(b[offPhoff:])
	phnum := uint64(le.Uint16(b[offPhnum:]))
	headers := phoff + phnum*phdrSize // ParseELF checked it is within b
	// What is rewritten: the ELF header's section fields and the program
	// headers. Kept to be put back if the result does not check out.
	saved := [2][]byte{bytes.Clone(b[:elfHeaderSize]), bytes.Clone(b[phoff:headers])}
	undo := func() int {
		copy(b, saved[0])
		copy(b[phoff:], saved[1])
		return len(b)
	}
	end := max(headers, elfHeaderSize)
	for i := range phnum {
		ph := b[phoff+i*phdrSize:][:phdrSize]
		typ, off, paddr, filesz := le.Uint32(ph[0:]), le.Uint64(ph[8:]), le.Uint64(ph[24:]), le.Uint64(ph[32:])
		if off > uint64(len(b)) || filesz > uint64(len(b))-off {
			// A header ParseELF does not read (a note) pointing past the
			// file: nothing is cut, so no reader finds less than before.
			return undo()
		}
		if typ == ptLoad && filesz > 0 && (off < elfHeaderSize || (off < headers && off+filesz > phoff)) {
			// A segment whose file bytes hold the headers: rewriting
			// them would change what it loads.
			return undo()
		}
		if typ == ptLoad && le.Uint64(ph[40:]) != 0 {
			n := uint64(len(bytes.TrimRight(b[off:off+filesz], "\x00")))
			if want.Entry >= paddr && want.Entry-paddr < filesz {
				n = max(n, want.Entry-paddr+1) // ParseELF's check of the entry stays true
			}
			le.PutUint64(ph[32:], n)
			if filesz = n; n == 0 {
				le.PutUint64(ph[8:], 0) // no file bytes: no offset that could lie past the end
				off = 0
			}
		}
		if filesz > 0 {
			end = max(end, off+filesz)
		}
	}
	shoff := le.Uint64(b[offShoff:])
	shsize := uint64(le.Uint16(b[offShentsize:])) * uint64(le.Uint16(b[offShnum:]))
	if shoff != 0 && (shoff > end || shsize > end-shoff) {
		le.PutUint64(b[offShoff:], 0)
		le.PutUint16(b[offShnum:], 0)
		le.PutUint16(b[offShstrndx:], 0)
	}
	// The promise, checked: the same entry and segments, each one's
	// file bytes a prefix of what they were, followed by zeroes only.
	got, err := ParseELF(b[:end])
	if err != nil || got.Entry != want.Entry || len(got.Segments) != len(want.Segments) {
		return undo()
	}
	for i, s := range got.Segments {
		w := want.Segments[i]
		if s.Addr != w.Addr || s.MemSize != w.MemSize || !bytes.HasPrefix(w.Data, s.Data) ||
			len(bytes.TrimRight(w.Data[len(s.Data):], "\x00")) != 0 {
			return undo()
		}
	}
	return int(end)
}
