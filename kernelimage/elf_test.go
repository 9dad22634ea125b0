package kernelimage

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guestmem"
)

// phdr is one program header of a test ELF; data goes into the file.
type phdr struct {
	typ    uint32
	paddr  uint64
	data   []byte
	memsz  uint64 // 0: len(data)
	offset uint64 // 0: where buildELF puts data
	filesz uint64 // 0: len(data)
}

// buildELF writes an x86-64 ET_EXEC ELF with the given program headers,
// laid out as a linker would: the ELF header, the program headers, then
// each segment's data.
func buildELF(entry uint64, phdrs ...phdr) []byte {
	le := binary.LittleEndian
	b := make([]byte, elfHeaderSize+len(phdrs)*phdrSize)
	copy(b, elfMagic)
	b[eiClass], b[eiData], b[eiVersion] = elfClass64, elfData2LSB, evCurrent
	le.PutUint16(b[offType:], etExec)
	le.PutUint16(b[offMachine:], emX86_64)
	le.PutUint32(b[20:], evCurrent) // e_version
	le.PutUint64(b[offEntry:], entry)
	le.PutUint64(b[offPhoff:], elfHeaderSize)
	le.PutUint16(b[52:], elfHeaderSize) // e_ehsize
	le.PutUint16(b[offPhentsize:], phdrSize)
	le.PutUint16(b[offPhnum:], uint16(len(phdrs)))
	for i, p := range phdrs {
		off := p.offset
		if off == 0 {
			off = uint64(len(b))
			b = append(b, p.data...)
		}
		filesz, memsz := p.filesz, p.memsz
		if filesz == 0 {
			filesz = uint64(len(p.data))
		}
		if memsz == 0 {
			memsz = uint64(len(p.data))
		}
		ph := b[elfHeaderSize+i*phdrSize:]
		le.PutUint32(ph[0:], p.typ)
		le.PutUint32(ph[4:], 5)                           // p_flags: R+X
		le.PutUint64(ph[8:], off)                         // p_offset
		le.PutUint64(ph[16:], 0xffffffff80000000|p.paddr) // p_vaddr: the kernel mapping
		le.PutUint64(ph[24:], p.paddr)
		le.PutUint64(ph[32:], filesz)
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], 0x200000) // p_align
	}
	return b
}

// testVmlinux is shaped like Debian's: text at 16 MiB holding the entry,
// data after it with a zeroed tail, a note that is not loaded, and the
// per-CPU segment (p_vaddr 0) between them, listed out of order.
func testVmlinux() []byte {
	return buildELF(0x1000000,
		phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("\xf4startup_64 code")},
		phdr{typ: ptLoad, paddr: 0x1400000, data: []byte("data"), memsz: 0x3000},
		phdr{typ: 4 /* PT_NOTE */, paddr: 0x1000008, data: []byte("note")},
		phdr{typ: ptLoad, paddr: 0x1200000, data: []byte("percpu")},
	)
}

func TestParseELF(t *testing.T) {
	e, err := ParseELF(testVmlinux())
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		addr    uint64
		data    string
		memSize uint64
	}{{0x1000000, "\xf4startup_64 code", 16}, {0x1200000, "percpu", 6}, {0x1400000, "data", 0x3000}}
	if len(e.Segments) != len(want) {
		t.Fatalf("%d segments, want %d", len(e.Segments), len(want))
	}
	for i, w := range want {
		if s := e.Segments[i]; s.Addr != w.addr || string(s.Data) != w.data || s.MemSize != w.memSize {
			t.Errorf("segment %d: 0x%x %q %d, want 0x%x %q %d", i, s.Addr, s.Data, s.MemSize, w.addr, w.data, w.memSize)
		}
	}
	if e.Entry != 0x1000000 || e.Start() != 0x1000000 || e.End() != 0x1403000 {
		t.Errorf("entry 0x%x, span [0x%x, 0x%x)", e.Entry, e.Start(), e.End())
	}
}

func TestParseELFErrors(t *testing.T) {
	good := phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("code")}
	edit := func(b []byte, off int, v ...byte) []byte { copy(b[off:], v); return b }
	put16 := func(b []byte, off int, v uint16) []byte { binary.LittleEndian.PutUint16(b[off:], v); return b }
	put64 := func(b []byte, off int, v uint64) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
	for _, tc := range []struct {
		name string
		elf  []byte
		want string
	}{
		{"empty", nil, "not an ELF file"},
		{"short", buildELF(0x1000000, good)[:63], "not an ELF file"},
		{"bzImage", make([]byte, 4096), "not an ELF file"},
		{"32-bit", edit(buildELF(0x1000000, good), eiClass, 1), "ELF file is not 64-bit little-endian version 1 (class 1, data 1, version 1)"},
		{"big-endian", edit(buildELF(0x1000000, good), eiData, 2), "ELF file is not 64-bit little-endian version 1 (class 2, data 2, version 1)"},
		{"shared object", put16(buildELF(0x1000000, good), offType, 3), "ELF file has type 3, want ET_EXEC (2) as a vmlinux has"},
		{"arm64", put16(buildELF(0x1000000, good), offMachine, 183), "ELF file is for machine 183, want x86-64 (62)"},
		{"phentsize", put16(buildELF(0x1000000, good), offPhentsize, 32), "ELF program headers are 32 bytes each, want 56"},
		{"no phdrs", buildELF(0x1000000), "ELF file has 0 program headers, want 1 to 64"},
		{"PN_XNUM", put16(buildELF(0x1000000, good), offPhnum, 0xffff), "ELF file has 65535 program headers, want 1 to 64"},
		{"phdrs past end", put16(buildELF(0x1000000, good), offPhnum, 3), "ELF program headers at 0x40 (3 of them) run past the 124-byte file"},
		{"phoff huge", put64(buildELF(0x1000000, good), offPhoff, ^uint64(0)), "ELF program headers at 0xffffffffffffffff (1 of them) run past the 124-byte file"},
		{"filesz > memsz", buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("code"), memsz: 2}), "ELF segment 0 has 4 bytes in the file but only 2 in memory"},
		{"data past end", buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("code"), filesz: 5, memsz: 5}), "ELF segment 0 at file offset 0x78 (5 bytes) runs past the 124-byte file"},
		{"offset past end", buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, offset: 1 << 40, filesz: 1, memsz: 1}), "ELF segment 0 at file offset 0x10000000000 (1 bytes) runs past the 120-byte file"},
		{"offset+filesz wraps", buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, offset: 8, filesz: ^uint64(0), memsz: ^uint64(0)}), "ELF segment 0 at file offset 0x8 (18446744073709551615 bytes) runs past the 120-byte file"},
		{"address wraps", buildELF(0x1000000, phdr{typ: ptLoad, paddr: ^uint64(0) - 1, data: []byte("code")}), "ELF segment 0 at 0xfffffffffffffffe (4 bytes) wraps around the address space"},
		{"nothing to load", buildELF(0x1000000, phdr{typ: 4, paddr: 0x1000000, data: []byte("note")}), "ELF file has nothing to load (no PT_LOAD segment with a size)"},
		{"overlap", buildELF(0x1000000, good, phdr{typ: ptLoad, paddr: 0x1000003, data: []byte("more")}), "ELF segments at [0x1000000, 0x1000004) and [0x1000003, 0x1000007) overlap"},
		{"virtual entry", buildELF(0xffffffff81000000, good), "ELF entry point 0xffffffff81000000 is not in any loaded segment's contents (is it a virtual address?)"},
		{"user program", func() []byte {
			b := buildELF(0x401000, phdr{typ: ptLoad, paddr: 0x401000, data: []byte("code")})
			binary.LittleEndian.PutUint64(b[elfHeaderSize+16:], 0x401000) // p_vaddr == p_paddr
			return b
		}(), "ELF file is not a Linux kernel: its entry point's segment is linked at 0x401000, below the kernel mapping at 0xffffffff80000000"},
		{"entry in bss", buildELF(0x1000004, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("code"), memsz: 8}), "ELF entry point 0x1000004 is not in any loaded segment's contents (is it a virtual address?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseELF(tc.elf)
			if err == nil {
				t.Fatalf("accepted: %+v", e)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q\nwant  %q", err, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	mem, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: bytes.Repeat([]byte{0xaa}, 0x1500000)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseELF(testVmlinux())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(mem); err != nil {
		t.Fatal(err)
	}
	ram := mem.Regions()[0].Mem
	for _, s := range e.Segments {
		// The tail past the file's bytes is left as it was: fresh guest
		// RAM is zero there already.
		got := ram[s.Addr:s.End()]
		if !bytes.Equal(got[:len(s.Data)], s.Data) || strings.Trim(string(got[len(s.Data):]), "\xaa") != "" {
			t.Errorf("segment at 0x%x not loaded as its data with the tail untouched", s.Addr)
		}
		if ram[s.End()] != 0xaa || ram[s.Addr-1] != 0xaa {
			t.Errorf("load around segment at 0x%x touched bytes outside it", s.Addr)
		}
	}
	// A segment beyond RAM is refused before anything is written there.
	small, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: make([]byte, 0x1300000)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(small); err == nil || !strings.Contains(err.Error(), "load ELF segment at [0x1400000, 0x1403000)") {
		t.Errorf("load past RAM: %v", err)
	}
	if strings.Trim(string(small.Regions()[0].Mem), "\x00") != "" {
		t.Errorf("a load that did not fit wrote the segments that did")
	}
}

// zeroTailVmlinux is laid out as the vmlinux in Debian's bzImages: the
// last segment's .bss is zeroes in the file, and the section headers
// follow the segments.
func zeroTailVmlinux() []byte {
	b := buildELF(0x1000000,
		phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("\xf4startup_64\x00\x00code")},
		phdr{typ: 4 /* PT_NOTE */, paddr: 0x1000001, data: []byte("note\x00\x00")},
		phdr{typ: ptLoad, paddr: 0x1400000, data: append([]byte("data\x00data"), make([]byte, 0x3000)...), memsz: 0x4000},
	)
	shoff := len(b)
	b = append(b, make([]byte, 3*64)...) // three section headers
	le := binary.LittleEndian
	le.PutUint64(b[offShoff:], uint64(shoff))
	le.PutUint16(b[offShentsize:], 64)
	le.PutUint16(b[offShnum:], 3)
	le.PutUint16(b[offShstrndx:], 2)
	return b
}

func TestTrimZeroTails(t *testing.T) {
	le := binary.LittleEndian
	filesz := func(b []byte, i int) uint64 { return le.Uint64(b[elfHeaderSize+i*phdrSize+32:]) }
	t.Run("zero tail and section headers cut", func(t *testing.T) {
		b := zeroTailVmlinux()
		dataEnd := elfHeaderSize + 3*phdrSize + len("\xf4startup_64\x00\x00code") + len("note\x00\x00") + len("data\x00data")
		if n := TrimZeroTails(b); n != dataEnd {
			t.Errorf("length %d, want %d (the last segment's last non-zero byte)", n, dataEnd)
		}
		if filesz(b, 0) != uint64(len("\xf4startup_64\x00\x00code")) || filesz(b, 1) != 6 || filesz(b, 2) != uint64(len("data\x00data")) {
			t.Errorf("p_filesz %d, %d, %d: only the loaded segments' zero tails go", filesz(b, 0), filesz(b, 1), filesz(b, 2))
		}
		if le.Uint64(b[offShoff:]) != 0 || le.Uint16(b[offShnum:]) != 0 || le.Uint16(b[offShstrndx:]) != 0 {
			t.Errorf("section header fields not cleared with the table cut off")
		}
		if le.Uint64(b[elfHeaderSize+2*phdrSize+40:]) != 0x4000 {
			t.Errorf("p_memsz changed")
		}
	})
	t.Run("nothing to trim", func(t *testing.T) {
		b := testVmlinux()
		orig := bytes.Clone(b)
		if n := TrimZeroTails(b); n != len(b) || !bytes.Equal(b, orig) {
			t.Errorf("changed a vmlinux without zero tails: length %d of %d", n, len(b))
		}
	})
	t.Run("entry kept in the file", func(t *testing.T) {
		// A zero byte at the entry (the last of its segment's) stays in the
		// file, so the trimmed file still passes ParseELF's entry check.
		b := buildELF(0x1000003, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("abc\x00\x00")})
		if n := TrimZeroTails(b); filesz(b, 0) != 4 || n != elfHeaderSize+phdrSize+4 {
			t.Errorf("p_filesz %d, length %d: want the entry's byte kept", filesz(b, 0), n)
		}
	})
	t.Run("not a vmlinux", func(t *testing.T) {
		for _, b := range [][]byte{nil, []byte("MZ\x00\x00"), buildELF(0x100, phdr{typ: 4, data: []byte("note")})} {
			orig := bytes.Clone(b)
			if n := TrimZeroTails(b); n != len(b) || !bytes.Equal(b, orig) {
				t.Errorf("changed %q", orig)
			}
		}
	})
	t.Run("segment holding the headers", func(t *testing.T) {
		// Its file bytes start inside the ELF header: rewriting the
		// headers would change what it loads, so nothing is trimmed.
		b := buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, offset: 29, filesz: 200, memsz: 0x1000})
		b = append(b, make([]byte, 200)...)
		b[29] = 0xf4
		orig := bytes.Clone(b)
		if n := TrimZeroTails(b); n != len(b) || !bytes.Equal(b, orig) {
			t.Errorf("changed a vmlinux whose segment holds its headers: length %d of %d", n, len(b))
		}
	})
	t.Run("bss-only segment after a trimmed one", func(t *testing.T) {
		// The second segment has no file bytes; the cut must not leave its
		// offset past the end, or the trimmed file would not parse.
		b := buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("\xf4code\x00\x00\x00\x00")},
			phdr{typ: ptLoad, paddr: 0x1400000, data: []byte("\x00\x00\x00\x00"), memsz: 0x1000})
		n := TrimZeroTails(b)
		e, err := ParseELF(b[:n])
		if err != nil || n != elfHeaderSize+2*phdrSize+5 || len(e.Segments) != 2 || len(e.Segments[1].Data) != 0 {
			t.Fatalf("length %d: %v", n, err)
		}
	})
	t.Run("note past the file", func(t *testing.T) {
		// A program header ParseELF does not read that points past the
		// file: nothing is cut.
		b := buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("\xf4code\x00\x00")},
			phdr{typ: 4, offset: 1 << 20, data: nil, filesz: 8})
		if n := TrimZeroTails(b); n != len(b) {
			t.Errorf("length %d of %d", n, len(b))
		}
	})
}
