package acpi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/vmm-dev/vmm/devices/pm"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// machineConfig is the layout vmm's machine uses.
func machineConfig(cpus int) Config {
	return Config{
		Base: 0xe0000, CPUs: cpus, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, IOAPICID: 0,
		PMPort: 0x600, SCIIRQ: 9, MaxSize: 0x20000,
	}
}

// The reader below is deliberately independent of the encoder: it
// re-derives every offset from the spec tables, so a mistake in a shared
// constant cannot make both sides agree on a wrong layout.

var le = binary.LittleEndian

// parsed is the blob as an OS would see it, following pointers from the
// RSDP.
type parsed struct {
	rsdp, xsdt, fadt, facs, dsdt, madt []byte
	xsdtEntries                        []uint64
}

func sum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return s
}

// at returns the table at guest-physical address addr in blob (copied to
// base), checking the header's length and checksum.
func tableAt(blob []byte, base, addr uint64, sig string) ([]byte, error) {
	if addr < base || addr-base+36 > uint64(len(blob)) {
		return nil, fmt.Errorf("%s at %#x is outside the blob [%#x, %#x)", sig, addr, base, base+uint64(len(blob)))
	}
	off := addr - base
	h := blob[off:]
	if string(h[0:4]) != sig {
		return nil, fmt.Errorf("table at %#x has signature %q, want %q", addr, h[0:4], sig)
	}
	n := uint64(le.Uint32(h[4:]))
	if n < 36 || off+n > uint64(len(blob)) {
		return nil, fmt.Errorf("%s length %d runs outside the blob", sig, n)
	}
	t := blob[off : off+n]
	if s := sum(t); s != 0 {
		return nil, fmt.Errorf("%s checksum: bytes sum to %#x, want 0", sig, s)
	}
	return t, nil
}

func parse(blob []byte, base uint64) (*parsed, error) {
	var p parsed
	if len(blob) < 36 {
		return nil, fmt.Errorf("blob of %d bytes has no room for an RSDP", len(blob))
	}
	p.rsdp = blob[:36]
	if string(p.rsdp[:8]) != "RSD PTR " {
		return nil, fmt.Errorf("RSDP signature %q", p.rsdp[:8])
	}
	if s := sum(p.rsdp[:20]); s != 0 {
		return nil, fmt.Errorf("RSDP 20-byte checksum sums to %#x", s)
	}
	if p.rsdp[15] != 2 {
		return nil, fmt.Errorf("RSDP revision %d, want 2", p.rsdp[15])
	}
	if n := le.Uint32(p.rsdp[20:]); n != 36 {
		return nil, fmt.Errorf("RSDP length %d, want 36", n)
	}
	if s := sum(p.rsdp); s != 0 {
		return nil, fmt.Errorf("RSDP extended checksum sums to %#x", s)
	}
	var err error
	if p.xsdt, err = tableAt(blob, base, le.Uint64(p.rsdp[24:]), "XSDT"); err != nil {
		return nil, err
	}
	if (len(p.xsdt)-36)%8 != 0 {
		return nil, fmt.Errorf("XSDT length %d leaves a partial entry", len(p.xsdt))
	}
	for o := 36; o < len(p.xsdt); o += 8 {
		p.xsdtEntries = append(p.xsdtEntries, le.Uint64(p.xsdt[o:]))
	}
	for _, e := range p.xsdtEntries {
		if e < base || e-base+4 > uint64(len(blob)) {
			return nil, fmt.Errorf("XSDT entry %#x outside the blob", e)
		}
		sig := string(blob[e-base : e-base+4])
		t, err := tableAt(blob, base, e, sig)
		if err != nil {
			return nil, err
		}
		switch sig {
		case "FACP":
			p.fadt = t
		case "APIC":
			p.madt = t
		default:
			return nil, fmt.Errorf("unexpected table %q in XSDT", sig)
		}
	}
	if p.fadt == nil || p.madt == nil {
		return nil, fmt.Errorf("XSDT lacks FADT or MADT: %x", p.xsdtEntries)
	}
	if len(p.fadt) != 276 {
		return nil, fmt.Errorf("FADT length %d, want the full 276-byte ACPI 6 FADT", len(p.fadt))
	}
	xdsdt := le.Uint64(p.fadt[140:])
	if d32 := le.Uint32(p.fadt[40:]); d32 != 0 && uint64(d32) != xdsdt {
		return nil, fmt.Errorf("FADT DSDT %#x disagrees with X_DSDT %#x", d32, xdsdt)
	}
	if p.dsdt, err = tableAt(blob, base, xdsdt, "DSDT"); err != nil {
		return nil, err
	}
	xfacs := le.Uint64(p.fadt[132:])
	if xfacs < base || xfacs-base+64 > uint64(len(blob)) {
		return nil, fmt.Errorf("FACS at %#x outside the blob", xfacs)
	}
	p.facs = blob[xfacs-base : xfacs-base+64]
	return &p, nil
}

// madtEntry is one interrupt controller structure.
type madtEntry struct {
	typ  byte
	body []byte // including type and length
}

func madtEntries(t *testing.T, madt []byte) []madtEntry {
	t.Helper()
	var out []madtEntry
	for o := 44; o < len(madt); {
		if o+2 > len(madt) {
			t.Fatalf("MADT entry header at %d runs past the table", o)
		}
		n := int(madt[o+1])
		if n < 2 || o+n > len(madt) {
			t.Fatalf("MADT entry at %d has bad length %d", o, n)
		}
		out = append(out, madtEntry{madt[o], madt[o : o+n]})
		o += n
	}
	return out
}

func mustBuild(t *testing.T, c Config) []byte {
	t.Helper()
	b, err := Build(c)
	if err != nil {
		t.Fatalf("Build(%+v): %v", c, err)
	}
	return b
}

func mustParse(t *testing.T, blob []byte, base uint64) *parsed {
	t.Helper()
	p, err := parse(blob, base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildStructure(t *testing.T) {
	c := machineConfig(4)
	blob := mustBuild(t, c)
	p := mustParse(t, blob, c.Base)

	if len(p.xsdtEntries) != 2 {
		t.Errorf("XSDT has %d entries, want FADT and MADT", len(p.xsdtEntries))
	}
	if le.Uint32(p.rsdp[16:]) != 0 {
		t.Errorf("RsdtAddress = %#x, want 0 (no RSDT)", le.Uint32(p.rsdp[16:]))
	}
	// The FADT and XSDT OEM Table IDs must match (ACPI 6.4 §5.2.8).
	if !bytes.Equal(p.xsdt[16:24], p.fadt[16:24]) {
		t.Errorf("XSDT OEM Table ID %q != FADT's %q", p.xsdt[16:24], p.fadt[16:24])
	}
	revs := map[string]struct {
		tab []byte
		rev byte
	}{"XSDT": {p.xsdt, 1}, "FADT": {p.fadt, 6}, "DSDT": {p.dsdt, 2}, "MADT": {p.madt, 5}}
	for name, r := range revs {
		if r.tab[8] != r.rev {
			t.Errorf("%s revision %d, want %d", name, r.tab[8], r.rev)
		}
	}
	// Alignment: RSDP at Base (16-byte aligned), FACS 64-byte aligned.
	facsAddr := le.Uint64(p.fadt[132:])
	if facsAddr%64 != 0 {
		t.Errorf("FACS at %#x is not 64-byte aligned", facsAddr)
	}
	for _, a := range append([]uint64{le.Uint64(p.rsdp[24:]), le.Uint64(p.fadt[140:])}, p.xsdtEntries...) {
		if a%16 != 0 {
			t.Errorf("table at %#x is not 16-byte aligned", a)
		}
	}
	if string(p.facs[0:4]) != "FACS" || le.Uint32(p.facs[4:]) != 64 || p.facs[32] != 2 {
		t.Errorf("FACS header %x", p.facs[:36])
	}
	if !bytes.Equal(p.facs[8:32], make([]byte, 24)) {
		t.Errorf("FACS hardware signature, waking vectors, global lock or flags not zero: %x", p.facs[8:32])
	}

	// No two tables overlap, and the blob ends where the last one does.
	type span struct {
		name     string
		lo, size uint64
	}
	spans := []span{
		{"RSDP", c.Base, 36},
		{"XSDT", le.Uint64(p.rsdp[24:]), uint64(len(p.xsdt))},
		{"FADT", p.xsdtEntries[0], uint64(len(p.fadt))},
		{"MADT", p.xsdtEntries[1], uint64(len(p.madt))},
		{"DSDT", le.Uint64(p.fadt[140:]), uint64(len(p.dsdt))},
		{"FACS", facsAddr, 64},
	}
	var end uint64
	for i, a := range spans {
		end = max(end, a.lo+a.size)
		for _, b := range spans[i+1:] {
			if a.lo < b.lo+b.size && b.lo < a.lo+a.size {
				t.Errorf("%s [%#x+%d) overlaps %s [%#x+%d)", a.name, a.lo, a.size, b.name, b.lo, b.size)
			}
		}
	}
	if end != c.Base+uint64(len(blob)) {
		t.Errorf("blob is %d bytes but tables end at offset %d", len(blob), end-c.Base)
	}
}

func TestFADT(t *testing.T) {
	c := machineConfig(2)
	p := mustParse(t, mustBuild(t, c), c.Base)
	f := p.fadt

	u8 := func(o int) uint64 { return uint64(f[o]) }
	u16 := func(o int) uint64 { return uint64(le.Uint16(f[o:])) }
	u32 := func(o int) uint64 { return uint64(le.Uint32(f[o:])) }
	u64 := func(o int) uint64 { return le.Uint64(f[o:]) }
	checks := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"FIRMWARE_CTRL (must be 0 with X_FIRMWARE_CTRL set)", u32(36), 0},
		{"DSDT", u32(40), u64(140)},
		{"SCI_INT", u16(46), 9},
		{"SMI_CMD", u32(48), 0},
		{"ACPI_ENABLE", u8(52), 0},
		{"ACPI_DISABLE", u8(53), 0},
		{"PM1a_EVT_BLK", u32(56), 0x600},
		{"PM1b_EVT_BLK", u32(60), 0},
		{"PM1a_CNT_BLK", u32(64), 0x604},
		{"PM1b_CNT_BLK", u32(68), 0},
		{"PM2_CNT_BLK", u32(72), 0},
		{"PM_TMR_BLK", u32(76), 0},
		{"GPE0_BLK", u32(80), 0},
		{"GPE1_BLK", u32(84), 0},
		{"PM1_EVT_LEN", u8(88), 4},
		{"PM1_CNT_LEN", u8(89), 2},
		{"PM2_CNT_LEN", u8(90), 0},
		{"PM_TMR_LEN", u8(91), 0},
		{"GPE0_BLK_LEN", u8(92), 0},
		{"GPE1_BLK_LEN", u8(93), 0},
		{"P_LVL2_LAT (>100: no C2)", u16(96), 101},
		{"P_LVL3_LAT (>1000: no C3)", u16(98), 1001},
		{"CENTURY", u8(108), 0x32},
		{"RESET_REG space (System I/O)", u8(116), 1},
		{"RESET_REG bit width", u8(117), 8},
		{"RESET_REG bit offset", u8(118), 0},
		{"RESET_REG access size (byte)", u8(119), 1},
		{"RESET_REG address", u64(120), 0x608},
		{"RESET_VALUE", u8(128), pm.ResetValue},
		{"FADT minor version", u8(131), 4},
		{"X_PM1a_EVT_BLK space", u8(148), 1},
		{"X_PM1a_EVT_BLK bit width", u8(149), 32},
		{"X_PM1a_EVT_BLK address", u64(152), 0x600},
		{"X_PM1b_EVT_BLK address", u64(164), 0},
		{"X_PM1a_CNT_BLK space", u8(172), 1},
		{"X_PM1a_CNT_BLK bit width", u8(173), 16},
		{"X_PM1a_CNT_BLK address", u64(176), 0x604},
		{"X_PM_TMR_BLK address", u64(212), 0},
		{"X_GPE0_BLK address", u64(224), 0},
		{"X_GPE1_BLK address", u64(236), 0},
		{"SLEEP_CONTROL_REG address", u64(248), 0},
		{"SLEEP_STATUS_REG address", u64(260), 0},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %#x, want %#x", ck.name, ck.got, ck.want)
		}
	}

	flags := le.Uint32(f[112:])
	if flags&(1<<10) == 0 {
		t.Errorf("flags %#x: RESET_REG_SUP clear", flags)
	}
	if flags&(1<<20) != 0 {
		t.Errorf("flags %#x: HW_REDUCED_ACPI set", flags)
	}
	boot := le.Uint16(f[109:])
	if boot&(1<<1) != 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: 8042 set; Linux would probe for a PS/2 controller", boot)
	}
	if boot&(1<<2) == 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: VGA Not Present clear", boot)
	}
	if boot&(1<<5) != 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: CMOS RTC Not Present set, but we have one", boot)
	}
	// MSI Not Supported would make Linux call pci_no_msi(), and the
	// virtio-pci devices signal with MSI-X only; PCIe ASPM Controls
	// concerns a PCI Express link we do not have.
	if boot&(1<<3) != 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: MSI Not Supported set", boot)
	}
	if boot&(1<<4) != 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: PCIe ASPM Controls set", boot)
	}
	if boot != 0x0005 {
		t.Errorf("IAPC_BOOT_ARCH %#x, want 0x5 (legacy devices, no VGA)", boot)
	}
}

func TestFADTAboveFourGiB(t *testing.T) {
	c := machineConfig(1)
	c.Base = 1<<32 + 0x1000
	p := mustParse(t, mustBuild(t, c), c.Base)
	if d := le.Uint32(p.fadt[40:]); d != 0 {
		t.Errorf("32-bit DSDT = %#x for a DSDT above 4 GiB, want 0", d)
	}
	if x := le.Uint64(p.fadt[140:]); x <= 0xffffffff {
		t.Errorf("X_DSDT = %#x, want the 64-bit address", x)
	}
}

func TestMADT(t *testing.T) {
	for _, n := range []int{1, 2, 7, 64, 255} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := machineConfig(n)
			c.IOAPICID = 3
			p := mustParse(t, mustBuild(t, c), c.Base)
			m := p.madt
			if got := le.Uint32(m[36:]); got != c.LAPICAddr {
				t.Errorf("local APIC address %#x, want %#x", got, c.LAPICAddr)
			}
			if got := le.Uint32(m[40:]); got != 1 {
				t.Errorf("flags %#x, want PCAT_COMPAT only", got)
			}
			var ids []int
			var ioapics, nmis int
			overrides := map[byte]madtEntry{}
			for _, e := range madtEntries(t, m) {
				switch e.typ {
				case 0:
					if len(e.body) != 8 {
						t.Fatalf("local APIC entry length %d", len(e.body))
					}
					if e.body[2] != e.body[3] {
						t.Errorf("processor UID %d != APIC ID %d", e.body[2], e.body[3])
					}
					if f := le.Uint32(e.body[4:]); f != 1 {
						t.Errorf("local APIC %d flags %#x, want enabled", e.body[3], f)
					}
					ids = append(ids, int(e.body[3]))
				case 1:
					ioapics++
					if len(e.body) != 12 || e.body[2] != 3 || le.Uint32(e.body[4:]) != c.IOAPICAddr || le.Uint32(e.body[8:]) != 0 {
						t.Errorf("I/O APIC entry %x", e.body)
					}
				case 2:
					if len(e.body) != 10 || e.body[2] != 0 {
						t.Errorf("override entry %x", e.body)
					}
					overrides[e.body[3]] = e
				case 4:
					nmis++
					if len(e.body) != 6 || e.body[2] != 0xff || le.Uint16(e.body[3:]) != 0x0005 || e.body[5] != 1 {
						t.Errorf("local APIC NMI entry %x, want all processors, edge/high, LINT1", e.body)
					}
				default:
					t.Errorf("unexpected MADT entry type %d", e.typ)
				}
			}
			if len(ids) != n {
				t.Fatalf("%d local APIC entries, want %d", len(ids), n)
			}
			for i, id := range ids {
				if id != i {
					t.Fatalf("local APIC IDs %v, want 0..%d in order", ids, n-1)
				}
			}
			if ioapics != 1 || nmis != 1 {
				t.Errorf("%d I/O APICs and %d NMI entries, want 1 each", ioapics, nmis)
			}
			if len(overrides) != 1 {
				t.Errorf("%d interrupt source overrides, want only the SCI's", len(overrides))
			}
			if _, ok := overrides[0]; ok {
				t.Error("IRQ 0 has an override; KVM routes it to pin 0")
			}
			sci, ok := overrides[9]
			if !ok {
				t.Fatal("no override for the SCI (IRQ 9)")
			}
			if gsi, fl := le.Uint32(sci.body[4:]), le.Uint16(sci.body[8:]); gsi != 9 || fl != 0x000d {
				t.Errorf("SCI override GSI %d flags %#x, want 9 and level/active-high (0xd)", gsi, fl)
			}
		})
	}
}

func TestDSDT(t *testing.T) {
	c := machineConfig(1)
	p := mustParse(t, mustBuild(t, c), c.Base)
	// Name (\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero }) by hand:
	// NameOp, RootChar, "_S5_", PackageOp, PkgLength 8 (itself, NumElements
	// and six bytes of elements), NumElements 4, BytePrefix 5 twice, ZeroOp
	// twice.
	want := []byte{
		0x08, '\\', '_', 'S', '5', '_',
		0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00,
	}
	if got := p.dsdt[36:]; !bytes.Equal(got, want) {
		t.Errorf("DSDT body\n got % x\nwant % x", got, want)
	}
	if pm.SleepTypeS5 != 5 {
		t.Errorf("SleepTypeS5 = %d; the hand-encoded package above assumes 5", pm.SleepTypeS5)
	}
}

func TestBuildMaxSize(t *testing.T) {
	for _, n := range []int{1, 8, 255} {
		c := machineConfig(n)
		blob := mustBuild(t, c)
		c.MaxSize = len(blob)
		if _, err := Build(c); err != nil {
			t.Errorf("%d CPUs: MaxSize exactly %d: %v", n, len(blob), err)
		}
		c.MaxSize = len(blob) - 1
		if _, err := Build(c); err == nil || !strings.Contains(err.Error(), "available") {
			t.Errorf("%d CPUs: MaxSize %d, one byte short: err = %v, want a size error", n, c.MaxSize, err)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"0 CPUs", func(c *Config) { c.CPUs = 0 }, "CPUs"},
		{"256 CPUs", func(c *Config) { c.CPUs = 256 }, "CPUs"},
		{"negative CPUs", func(c *Config) { c.CPUs = -1 }, "CPUs"},
		{"unaligned base", func(c *Config) { c.Base = 0xe0008 }, "aligned"},
		{"no LAPIC", func(c *Config) { c.LAPICAddr = 0 }, "LAPICAddr"},
		{"PM port 0", func(c *Config) { c.PMPort = 0 }, "PMPort"},
		{"PM port unaligned", func(c *Config) { c.PMPort = 0x602 }, "PMPort"},
		{"PM block past 0xffff", func(c *Config) { c.PMPort = 0xfff4 }, "PMPort"},
		{"SCI on timer", func(c *Config) { c.SCIIRQ = 0 }, "SCIIRQ"},
		{"SCI not ISA", func(c *Config) { c.SCIIRQ = 16 }, "SCIIRQ"},
		{"negative MaxSize", func(c *Config) { c.MaxSize = -1 }, "MaxSize"},
		{"zero MaxSize", func(c *Config) { c.MaxSize = 0 }, "available"},
		{"wraps address space", func(c *Config) { c.Base = ^uint64(0) &^ 0xf }, "address space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := machineConfig(2)
			tt.edit(&c)
			_, err := Build(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build: err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// The last port that still fits the whole block is accepted.
	c := machineConfig(1)
	c.PMPort = 0x10000 - pm.Size
	mustBuild(t, c)
}

// TestBuildDeterministic guards the "pure function" promise: the machine
// may rebuild the tables (on reset) and must get the same bytes.
func TestBuildDeterministic(t *testing.T) {
	c := machineConfig(3)
	if a, b := mustBuild(t, c), mustBuild(t, c); !bytes.Equal(a, b) {
		t.Error("two builds of one config differ")
	}
}

func TestDSDTVirtioMMIO(t *testing.T) {
	c := machineConfig(2)
	c.VirtioMMIO = []MMIODevice{
		{Addr: 0xd0000000, Size: 0x200, GSI: 16},
		{Addr: 0xd0001000, Size: 0x200, GSI: 17},
	}
	p := mustParse(t, mustBuild(t, c), c.Base)
	body := p.dsdt[36:]
	// The resource template of the second device by hand: Memory32Fixed
	// (0x86, length 9, read-write, base, size), then Extended Interrupt
	// (0x89, length 6, consumer|edge, one entry, GSI 17), then the End Tag.
	crs := []byte{
		0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00,
		0x89, 0x06, 0x00, 0x03, 0x01, 0x11, 0x00, 0x00, 0x00,
		0x79, 0x00,
	}
	if !bytes.Contains(body, crs) {
		t.Errorf("DSDT has no _CRS for the second device:\n% x", body)
	}
	for _, want := range [][]byte{
		[]byte("\x5b\x82"),             // DeviceOp
		[]byte("VR00"), []byte("VR01"), // device names
		[]byte("_HID\x0dLNRO0005\x00"), // Name(_HID, "LNRO0005")
	} {
		if !bytes.Contains(body, want) {
			t.Errorf("DSDT lacks %q", want)
		}
	}

	// iasl, where installed, is the independent check: it must
	// disassemble the table without errors into the ASL we mean.
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl (acpica-tools) not installed; byte checks above only")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dsdt.dat"), p.dsdt, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(iasl, "-d", "dsdt.dat")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	asl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	norm := strings.Join(strings.Fields(string(asl)), " ")
	for _, want := range []string{
		`Device (VR00)`, `Device (VR01)`,
		`Name (_HID, "LNRO0005")`,
		`Memory32Fixed (ReadWrite, 0xD0001000, // Address Base 0x00000200, // Address Length`,
		`Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000011, }`,
	} {
		if !strings.Contains(norm, want) {
			t.Errorf("iasl output lacks %q:\n%s", want, asl)
		}
	}
}

func TestVirtioMMIOConfigErrors(t *testing.T) {
	for _, d := range []MMIODevice{
		{Addr: 0xd0000000, Size: 0, GSI: 16},
		{Addr: 0xffffff00, Size: 0x200, GSI: 16},
	} {
		c := machineConfig(1)
		c.VirtioMMIO = []MMIODevice{d}
		if _, err := Build(c); err == nil {
			t.Errorf("Build accepted virtio-mmio window %#x+%#x", d.Addr, d.Size)
		}
	}
}
