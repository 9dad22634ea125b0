package bootparam

import (
	"encoding/binary"
	"strings"
	"testing"
)

func mustKernel(t testing.TB, edits ...func([]byte)) *Kernel {
	t.Helper()
	k, err := ParseKernel(testImage(edits...))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testE820() []E820Entry {
	return []E820Entry{
		{Addr: 0, Size: 0x9fc00, Type: E820RAM},
		{Addr: 0x9fc00, Size: 0x60400, Type: E820Reserved},
		{Addr: 0x100000, Size: 0x7ff00000, Type: E820RAM},
	}
}

func u32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

func TestBootParamsLayout(t *testing.T) {
	k := mustKernel(t)
	p := Params{
		CmdlineAddr: 0x20000, Cmdline: "console=ttyS0 panic=-1",
		InitrdAddr: 0x7f000000, InitrdSize: 0x123456,
		E820:         testE820(),
		ACPIRSDPAddr: 0xe0000,
	}
	zp, err := k.BootParams(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(zp) != ZeroPageSize {
		t.Fatalf("zero page is %d bytes, want %d", len(zp), ZeroPageSize)
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"type_of_loader", uint64(zp[0x210]), 0xff},
		{"loadflags", uint64(zp[0x211]), LoadedHigh},
		{"cmd_line_ptr", uint64(u32(zp, 0x228)), 0x20000},
		{"ext_cmd_line_ptr", uint64(u32(zp, 0x0c8)), 0},
		{"ramdisk_image", uint64(u32(zp, 0x218)), 0x7f000000},
		{"ramdisk_size", uint64(u32(zp, 0x21c)), 0x123456},
		{"ext_ramdisk_image", uint64(u32(zp, 0x0c0)), 0},
		{"ext_ramdisk_size", uint64(u32(zp, 0x0c4)), 0},
		{"acpi_rsdp_addr", le.Uint64(zp[0x070:]), 0xe0000},
		{"e820_entries", uint64(zp[0x1e8]), 3},
		{"e820[2].addr", le.Uint64(zp[0x2d0+40:]), 0x100000},
		{"e820[2].size", le.Uint64(zp[0x2d0+48:]), 0x7ff00000},
		{"e820[2].type", uint64(u32(zp, 0x2d0+56)), E820RAM},
		{"e820[1].type", uint64(u32(zp, 0x2d0+36)), E820Reserved},
		{"e820[3].type", uint64(u32(zp, 0x2d0+76)), 0},
		{"boot_flag", uint64(le.Uint16(zp[0x1fe:])), 0xaa55},
		{"version", uint64(le.Uint16(zp[0x206:])), 0x020f},
		{"cmdline_size", uint64(u32(zp, 0x238)), 2047},
		{"byte after header", uint64(zp[0x26c]), 0},
		{"sentinel", uint64(zp[0x1ef]), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = 0x%x, want 0x%x", c.name, c.got, c.want)
		}
	}
	// Everything else in the header is the kernel's, unchanged.
	written := map[int]bool{0x210: true, 0x211: true}
	for _, f := range []int{0x218, 0x21c, 0x228} {
		for i := range 4 {
			written[f+i] = true
		}
	}
	for i, b := range k.Header {
		if off := offSetupHeader + i; !written[off] && zp[off] != b {
			t.Errorf("zero page[0x%x] = 0x%02x, header has 0x%02x", off, zp[off], b)
		}
	}
}

func TestBootParamsAbove4G(t *testing.T) {
	p := Params{CmdlineAddr: 0x1_2345_6000, Cmdline: "quiet", E820: testE820()}
	zp, err := mustKernel(t).BootParams(p)
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi := u32(zp, 0x228), u32(zp, 0x0c8); lo != 0x23456000 || hi != 1 {
		t.Errorf("cmd_line_ptr 0x%x ext 0x%x, want 0x23456000 and 1", lo, hi)
	}
	for name, edits := range map[string][]func([]byte){
		"no XLF_CAN_BE_LOADED_ABOVE_4G": {put16(offXLoadFlags, XLFKernel64)},
		"protocol 2.11":                 {put16(offVersion, 0x020b)},
	} {
		_, err := mustKernel(t, edits...).BootParams(p)
		if err == nil || !strings.Contains(err.Error(), "above 4 GiB") {
			t.Errorf("%s: error %v, want cmdline above 4 GiB refused", name, err)
		}
	}
}

func TestBootParamsInitrdAddrMax(t *testing.T) {
	// A kernel without XLF_CAN_BE_LOADED_ABOVE_4G is held to initrd_addr_max.
	k := mustKernel(t, put16(offXLoadFlags, XLFKernel64))
	p := Params{E820: testE820(), InitrdAddr: 0x7ff00000, InitrdSize: 0x100000}
	if _, err := k.BootParams(p); err != nil {
		t.Errorf("initrd ending at initrd_addr_max: %v", err)
	}
	p.InitrdSize++
	const want = "initrd at 0x7ff00000 (1048577 bytes) extends past this kernel's initrd_addr_max 0x7fffffff"
	if _, err := k.BootParams(p); err == nil || err.Error() != want {
		t.Errorf("initrd one byte past initrd_addr_max: %v, want %q", err, want)
	}
}

func TestBootParamsErrors(t *testing.T) {
	k := mustKernel(t)
	atLimit := strings.Repeat("x", 2047)
	many := make([]E820Entry, MaxE820Entries+1)
	for i := range many {
		many[i] = E820Entry{Addr: uint64(i) << 20, Size: 1 << 20, Type: E820RAM}
	}
	for _, tc := range []struct {
		name string
		p    Params
		want string // "" = must succeed
	}{
		{"cmdline at limit", Params{CmdlineAddr: 0x20000, Cmdline: atLimit}, ""},
		{"cmdline one over", Params{CmdlineAddr: 0x20000, Cmdline: atLimit + "x"}, "kernel command line is 2048 bytes; this kernel accepts at most 2047"},
		{"empty cmdline, no address", Params{}, ""},
		{"cmdline without address", Params{Cmdline: "quiet"}, "kernel command line has no address (0 means none)"},
		{"cmdline with NUL", Params{CmdlineAddr: 0x20000, Cmdline: "a\x00b"}, "kernel command line contains a NUL byte at offset 1"},
		{"cmdline wraps", Params{CmdlineAddr: ^uint64(0) - 2, Cmdline: "abc"}, "kernel command line at 0xfffffffffffffffd wraps around the address space"},
		{"initrd ends at max", Params{InitrdAddr: 0x7ff00000, InitrdSize: 0x100000}, ""},
		// This kernel takes an initrd above initrd_addr_max (PlaceInitrd).
		{"initrd past max, above-4G kernel", Params{InitrdAddr: 0x7ff00000, InitrdSize: 0x100001}, ""},
		{"initrd wraps", Params{InitrdAddr: 0x1000, InitrdSize: ^uint64(0)}, "initrd at 0x1000 (18446744073709551615 bytes) wraps around the address space"},
		{"initrd without size", Params{InitrdAddr: 0x1000}, "initrd address 0x1000 and size 0: both must be 0 (no initrd) or neither"},
		{"initrd without address", Params{InitrdSize: 10}, "initrd address 0x0 and size 10: both must be 0 (no initrd) or neither"},
		{"cmdline overlaps initrd", Params{CmdlineAddr: 0x1fffff0, Cmdline: "0123456789abcdef", InitrdAddr: 0x2000000, InitrdSize: 0x1000}, "kernel command line at [0x1fffff0, 0x2000001) overlaps the initrd at [0x2000000, 0x2001000)"},
		{"cmdline NUL just before initrd", Params{CmdlineAddr: 0x1fffff0, Cmdline: "0123456789abcde", InitrdAddr: 0x2000000, InitrdSize: 0x1000}, ""},
		{"e820 128", Params{E820: many[:MaxE820Entries]}, ""},
		{"e820 129", Params{E820: many}, "129 E820 entries; the zero page holds at most 128"},
		{"e820 none", Params{E820: []E820Entry{}}, "no E820 entries: the kernel needs a memory map"},
		{"e820 wraps", Params{E820: []E820Entry{{Addr: 0, Size: 1}, {Addr: ^uint64(0), Size: 2}}}, "E820 entry 1 at 0xffffffffffffffff (2 bytes) wraps around the address space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.p.E820 == nil {
				tc.p.E820 = testE820()
			}
			zp, err := k.BootParams(tc.p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "" && len(zp) != ZeroPageSize:
				t.Fatalf("zero page is %d bytes", len(zp))
			case tc.want != "" && err == nil:
				t.Fatalf("accepted, want error %q", tc.want)
			case tc.want != "" && err.Error() != tc.want:
				t.Fatalf("error %q\nwant  %q", err, tc.want)
			}
			if err == nil && int(zp[0x1e8]) != len(tc.p.E820) {
				t.Errorf("e820_entries = %d, want %d", zp[0x1e8], len(tc.p.E820))
			}
		})
	}
}

func TestBootParamsBadHeader(t *testing.T) {
	for _, n := range []int{0, 0x23c - 0x1f1 - 1, 0x290 - 0x1f1 + 1} {
		k := mustKernel(t)
		k.Header = make([]byte, n)
		if _, err := k.BootParams(Params{E820: testE820()}); err == nil {
			t.Errorf("%d-byte Header accepted", n)
		}
	}
}

func TestPlaceInitrd(t *testing.T) {
	const mib = 1 << 20
	k := mustKernel(t) // initrd_addr_max 0x7fffffff, but XLF_CAN_BE_LOADED_ABOVE_4G
	// Kernels without the flag are held to initrd_addr_max.
	capped := mustKernel(t, put16(offXLoadFlags, XLFKernel64))
	low := mustKernel(t, put32(offInitrdAddrMax, 0), put16(offXLoadFlags, XLFKernel64)) // defaults to 0x37ffffff
	for _, tc := range []struct {
		name                 string
		k                    *Kernel
		size, lowest, ramEnd uint64
		want                 uint64 // 0 = must fail
	}{
		{"top of RAM", k, 10 * mib, 16 * mib, 256 * mib, 246 * mib},
		{"aligned down", k, 10*mib + 1, 16 * mib, 256 * mib, 246*mib - 4096},
		{"unaligned RAM end", k, 4096, 0, 256*mib + 100, 256*mib - 4096},
		{"exact fit", k, 240 * mib, 16 * mib, 256 * mib, 16 * mib},
		{"one byte too big", k, 240*mib + 1, 16 * mib, 256 * mib, 0},
		{"lowest rounded up", k, 240*mib - 4096, 16*mib + 1, 256 * mib, 16*mib + 4096},
		{"lowest rounded up, too big", k, 240*mib - 4095, 16*mib + 1, 256 * mib, 0},
		{"initrd_addr_max caps big RAM", capped, 10 * mib, 16 * mib, 8 << 30, 2048*mib - 10*mib},
		{"initrd_addr_max 2 GiB, capped", capped, 2048 * mib, 64 * mib, 3072 * mib, 0},
		// Above 4G's kernels read the ext_ fields and take an initrd
		// past initrd_addr_max: up to the RAM the caller gives.
		{"above-4G kernel, 2 GiB initrd", k, 2048 * mib, 64 * mib, 3072 * mib, 1024 * mib},
		{"above-4G kernel, top of big RAM", k, 10 * mib, 16 * mib, 3072 * mib, 3062 * mib},
		{"default initrd_addr_max", low, 10 * mib, 16 * mib, 8 << 30, 896*mib - 10*mib},
		{"fits below max only exactly", low, 896*mib - 16*mib, 16 * mib, 8 << 30, 16 * mib},
		{"over max", low, 896*mib - 16*mib + 1, 16 * mib, 8 << 30, 0},
		{"never address 0", k, 4096, 0, 4096, 0},
		{"page 1 with lowest 0", k, 4096, 0, 8192, 4096},
		{"larger than RAM", k, 1 << 40, 0, 256 * mib, 0},
		{"empty", k, 0, 16 * mib, 256 * mib, 0},
		{"lowest above RAM", k, 4096, 512 * mib, 256 * mib, 0},
		{"lowest near 2^64", k, 4096, ^uint64(0), ^uint64(0), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.k.PlaceInitrd(tc.size, tc.lowest, tc.ramEnd)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("placed at 0x%x, want error", got)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("multi-line error %q", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got 0x%x, %v; want 0x%x", got, err, tc.want)
			}
		})
	}
}
