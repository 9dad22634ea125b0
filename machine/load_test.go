package machine

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/internal/testkernel"
)

func testKernel(t *testing.T, o testkernel.Options) bootKernel {
	t.Helper()
	k, err := bootparam.ParseKernel(testkernel.Build(o))
	if err != nil {
		t.Fatal(err)
	}
	return bootKernel{hdr: k}
}

func TestSetupMemoryLayout(t *testing.T) {
	k := testKernel(t, testkernel.Options{Entry64: []byte{0xf4}})
	mem := lowMem(t, 64<<20)
	const initrdSize = 3<<20 + 5
	l, err := setupMemory(mem, k, "console=ttyS0 quiet", initrdSize, 2, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !l.long || l.entry != kernelLoadAddr+0x200 {
		t.Errorf("64-bit kernel entered at %#x, long mode %v; want %#x in long mode", l.entry, l.long, kernelLoadAddr+0x200)
	}
	if l.initrdAddr < kernelEnd(k) || l.initrdAddr+initrdSize > 64<<20 || l.initrdAddr%pageSize != 0 {
		t.Errorf("initrd at %#x: must be page-aligned, above the kernel (%#x) and inside RAM", l.initrdAddr, kernelEnd(k))
	}
	read := func(addr, n uint64) []byte {
		b, err := mem.Slice(addr, n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := read(kernelLoadAddr+0x200, 1)[0]; got != 0xf4 {
		t.Errorf("entry byte %#x, want the payload's", got)
	}
	if got := read(cmdlineAddr, 20); string(got) != "console=ttyS0 quiet\x00" {
		t.Errorf("command line %q", got)
	}
	zp := read(zeroPageAddr, 4096)
	le := binary.LittleEndian
	if string(zp[0x202:0x206]) != "HdrS" || le.Uint32(zp[0x228:]) != cmdlineAddr ||
		uint64(le.Uint32(zp[0x218:])) != l.initrdAddr || le.Uint32(zp[0x21c:]) != initrdSize {
		t.Errorf("zero page: magic %q cmdline %#x initrd %#x+%#x", zp[0x202:0x206], le.Uint32(zp[0x228:]), le.Uint32(zp[0x218:]), le.Uint32(zp[0x21c:]))
	}
	if n := zp[0x1e8]; n != 3 {
		t.Errorf("%d e820 entries, want 3 (low RAM, reserved BIOS area, RAM from 1 MiB)", n)
	}
	if !bytes.Equal(read(acpiAddr, 8), []byte("RSD PTR ")) {
		t.Error("no RSDP where Linux scans for it")
	}
	if le.Uint64(zp[0x70:]) != acpiAddr {
		t.Errorf("zero page acpi_rsdp_addr %#x, want %#x", le.Uint64(zp[0x70:]), acpiAddr)
	}
}

// Exactly enough memory for the kernel boots; one byte less is refused
// with a message, and so is an initrd that no longer fits.
func TestSetupMemoryTooSmall(t *testing.T) {
	k := testKernel(t, testkernel.Options{Entry64: []byte{0xf4}, InitSize: 4 << 20})
	need := kernelEnd(k)
	if _, err := setupMemory(lowMem(t, need), k, "", 0, 1, 0, false); err != nil {
		t.Fatalf("exactly %#x bytes: %v", need, err)
	}
	_, err := setupMemory(lowMem(t, need-1), k, "", 0, 1, 0, false)
	if err == nil || !strings.Contains(err.Error(), "too small for this kernel") {
		t.Fatalf("one byte too small: %v", err)
	}
	if _, err := setupMemory(lowMem(t, need+pageSize), k, "", pageSize, 1, 0, false); err != nil {
		t.Fatalf("initrd filling the last page: %v", err)
	}
	if _, err := setupMemory(lowMem(t, need+pageSize), k, "", pageSize+1, 1, 0, false); err == nil || !strings.Contains(err.Error(), "initrd") {
		t.Fatalf("initrd one byte too big: %v", err)
	}
}

// A kernel whose pref_address (LOAD_PHYSICAL_ADDR) is above 16 MiB
// decompresses itself there: the initrd goes above that, and a
// pref_address no RAM below the 32-bit hole holds is refused in words.
func TestSetupMemoryPrefAddress(t *testing.T) {
	k := testKernel(t, testkernel.Options{Entry64: []byte{0xf4}, InitSize: 4 << 20})
	k.hdr.PrefAddress = 64 << 20
	if got, want := kernelEnd(k), uint64(68<<20); got != want {
		t.Fatalf("kernelEnd with pref_address 64 MiB: %#x, want %#x", got, want)
	}
	l, err := setupMemory(lowMem(t, 96<<20), k, "", 1<<20, 1, 0, false)
	if err != nil || l.initrdAddr < 68<<20 {
		t.Fatalf("initrd at %#x (%v), want above the kernel's 64-68 MiB", l.initrdAddr, err)
	}
	if _, err := setupMemory(lowMem(t, 66<<20), k, "", 0, 1, 0, false); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("66 MiB for a kernel decompressed to 64-68 MiB: %v", err)
	}
	for _, p := range []uint64{math.MaxUint64 - 4096, 4 << 30} {
		k.hdr.PrefAddress = p
		if _, err := setupMemory(lowMem(t, 96<<20), k, "", 0, 1, 0, false); err == nil || !strings.Contains(err.Error(), "does not fit below") {
			t.Errorf("pref_address %#x: %v", p, err)
		}
	}
}

func TestSetupMemoryRefusesBadInput(t *testing.T) {
	k := testKernel(t, testkernel.Options{Entry64: []byte{0xf4}})
	tests := []struct {
		name    string
		cmdline string
		cpus    int
		want    string
	}{
		{"cmdline over the kernel's limit", strings.Repeat("a", 2048), 1, "command line"},
		{"cmdline over vmm's slot", strings.Repeat("a", cmdlineMax), 1, "command line"},
		{"no CPUs", "", 0, "ACPI"},
	}
	for _, tt := range tests {
		if _, err := setupMemory(lowMem(t, 32<<20), k, tt.cmdline, 0, tt.cpus, 0, false); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestThirtyTwoBitKernel(t *testing.T) {
	k := testKernel(t, testkernel.Options{Entry64: []byte{0xf4}, No64Bit: true})
	l, err := setupMemory(lowMem(t, 32<<20), k, "", 0, 1, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if l.long || l.entry != kernelLoadAddr {
		t.Fatalf("kernel without XLF_KERNEL_64 entered at %#x, long mode %v", l.entry, l.long)
	}
}

func TestRAMAroundTheHole(t *testing.T) {
	tests := []struct {
		size uint64
		want []guestmem.Range
	}{
		{512 << 20, []guestmem.Range{{GPA: 0, Size: 512 << 20}}},
		{mmioHoleStart, []guestmem.Range{{GPA: 0, Size: mmioHoleStart}}},
		{4 << 30, []guestmem.Range{{GPA: 0, Size: mmioHoleStart}, {GPA: highRAMStart, Size: 1 << 30}}},
	}
	for _, tt := range tests {
		got := ramRanges(tt.size)
		if len(got) != len(tt.want) {
			t.Fatalf("%d: %+v", tt.size, got)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%d: range %d = %+v, want %+v", tt.size, i, got[i], tt.want[i])
			}
		}
	}
	mem, err := guestmem.FromRegions(guestmem.Region{GPA: 0, Mem: make([]byte, 2<<20)}, guestmem.Region{GPA: highRAMStart, Mem: make([]byte, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	e := e820Map(mem)
	if len(e) != 4 || e[1].Type != bootparam.E820Reserved || e[1].Addr != ebdaStart || e[3].Addr != highRAMStart || e[3].Type != bootparam.E820RAM {
		t.Errorf("e820 %+v", e)
	}
}
