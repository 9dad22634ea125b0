package kernelimage

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guestmem"
)

func checkError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\n\r") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
}

// FuzzParseELF checks that ParseELF never panics or reads outside its
// input, that what it accepts keeps its promises (segments sorted,
// disjoint, inside the file, the entry in one), and that loading it writes
// exactly the segments. Seeds: testdata/fuzz/FuzzParseELF.
func FuzzParseELF(f *testing.F) {
	f.Add(testVmlinux())
	f.Add(buildELF(0x100, phdr{typ: ptLoad, paddr: 0x100, data: []byte("code"), memsz: 0x1000}))
	f.Add(buildELF(0x1000000, phdr{typ: ptLoad, paddr: 0x1000000, data: []byte("code")}, phdr{typ: ptLoad, paddr: 0x1000002, data: []byte("x")}))
	const ramSize = 1 << 20
	ram := make([]byte, ramSize)
	mem, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: ram})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		e, err := ParseELF(b)
		if !bytes.Equal(orig, b) {
			t.Fatal("ParseELF modified its input")
		}
		if err != nil {
			checkError(t, err)
			return
		}
		entryOK := false
		for i, s := range e.Segments {
			switch {
			case s.MemSize == 0 || uint64(len(s.Data)) > s.MemSize || s.End() < s.Addr:
				t.Fatalf("segment %d: %d bytes of data, %d in memory at 0x%x", i, len(s.Data), s.MemSize, s.Addr)
			case len(s.Data) > 0 && !bytes.Contains(b, s.Data):
				t.Fatalf("segment %d's data is not from the file", i)
			case i > 0 && s.Addr < e.Segments[i-1].End():
				t.Fatalf("segment %d at 0x%x overlaps or precedes the one before", i, s.Addr)
			}
			entryOK = entryOK || (e.Entry >= s.Addr && e.Entry < s.Addr+uint64(len(s.Data)) && s.virt >= startKernelMap)
		}
		if !entryOK {
			t.Fatalf("entry 0x%x is in no segment's data", e.Entry)
		}
		if e.End() > ramSize {
			if err := e.Load(mem); err == nil {
				t.Fatalf("loaded [0x%x, 0x%x) into %d bytes of RAM", e.Start(), e.End(), ramSize)
			} else {
				checkError(t, err)
			}
			return
		}
		for i := range ram {
			ram[i] = 0xa5
		}
		if err := e.Load(mem); err != nil {
			t.Fatalf("segments fit in RAM but did not load: %v", err)
		}
		next := uint64(0)
		for _, s := range e.Segments {
			if strings.Trim(string(ram[next:s.Addr]), "\xa5") != "" {
				t.Fatalf("load wrote outside the segments in [0x%x, 0x%x)", next, s.Addr)
			}
			got := ram[s.Addr:s.End()]
			if !bytes.Equal(got[:len(s.Data)], s.Data) || strings.Trim(string(got[len(s.Data):]), "\xa5") != "" {
				t.Fatalf("segment at 0x%x not loaded as its data with the tail untouched", s.Addr)
			}
			next = s.End()
		}
	})
}

// FuzzPlan checks the check vmm makes of a kernel file's payload before
// it starts the decompressing helper: no input panics it, an error is
// one line, and what it accepts is a format vmm decodes with a size
// trailer within the limit. Seeds: testdata/fuzz/FuzzPlan.
func FuzzPlan(f *testing.F) {
	f.Add([]byte("\x02\x21\x4c\x18payload\x10\x00\x00\x00"), 64)
	f.Add([]byte("\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46\x01\x01....\x10\x00\x00\x00"), 64)
	f.Add([]byte("\x1f\x8b\x08\x00"), 1)
	f.Add([]byte("BZh91AY&SY"), 1<<20)
	f.Fuzz(func(t *testing.T, payload []byte, limit int) {
		format, size, err := Plan(payload, limit)
		if err != nil {
			checkError(t, err)
			return
		}
		switch format {
		case Gzip, XZ, LZ4, Zstd:
		default:
			t.Fatalf("accepted a %q payload", format)
		}
		if size > uint64(max(limit, 0)) {
			t.Fatalf("accepted a size of %d over the limit %d", size, limit)
		}
	})
}

// FuzzTrimZeroTails checks that what TrimZeroTails cuts off changes
// nothing a boot sees: the trimmed file parses, has the same entry and
// segment layout, and loads into zeroed RAM exactly as the whole file
// does; what ParseELF refuses is left alone. Seeds:
// testdata/fuzz/FuzzTrimZeroTails.
func FuzzTrimZeroTails(f *testing.F) {
	f.Add(testVmlinux())
	f.Add(zeroTailVmlinux())
	f.Add(buildELF(0x100, phdr{typ: ptLoad, paddr: 0x100, data: []byte("\x00\x00\x00")}))
	const ramSize = 1 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		n := TrimZeroTails(b)
		want, err := ParseELF(orig)
		if err != nil {
			if n != len(b) || !bytes.Equal(orig, b) {
				t.Fatalf("changed a file ParseELF refuses (%v)", err)
			}
			return
		}
		if n < 0 || n > len(b) {
			t.Fatalf("length %d for a %d-byte file", n, len(b))
		}
		got, err := ParseELF(b[:n])
		if err != nil {
			t.Fatalf("trimmed file does not parse: %v", err)
		}
		if got.Entry != want.Entry || len(got.Segments) != len(want.Segments) {
			t.Fatalf("entry or segments changed: %#x %d, want %#x %d", got.Entry, len(got.Segments), want.Entry, len(want.Segments))
		}
		for i, s := range got.Segments {
			w := want.Segments[i]
			if s.Addr != w.Addr || s.MemSize != w.MemSize || !bytes.HasPrefix(w.Data, s.Data) ||
				strings.Trim(string(w.Data[len(s.Data):]), "\x00") != "" {
				t.Fatalf("segment %d: %d file bytes at 0x%x (%d in memory), want a zero-trimmed %d at 0x%x (%d)",
					i, len(s.Data), s.Addr, s.MemSize, len(w.Data), w.Addr, w.MemSize)
			}
		}
		if want.End() > ramSize {
			return
		}
		load := func(e *ELF) []byte {
			ram := make([]byte, ramSize)
			mem, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: ram})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Load(mem); err != nil {
				t.Fatal(err)
			}
			return ram
		}
		if !bytes.Equal(load(got), load(want)) {
			t.Fatal("the trimmed file loads differently")
		}
	})
}
