package acpi

import (
	"encoding/binary"
	"testing"
)

func FuzzBuild(f *testing.F) {
	c := machineConfig(4)
	f.Add(c.Base, c.CPUs, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize)
	f.Add(uint64(0), 255, uint32(1), uint32(1), uint8(255), uint16(0xfff0), uint8(15), 1<<20)
	f.Add(uint64(1)<<40, 1, c.LAPICAddr, c.IOAPICAddr, uint8(0), uint16(4), uint8(1), 800)
	f.Add(^uint64(0)&^0xf, 2, c.LAPICAddr, c.IOAPICAddr, uint8(0), uint16(0x600), uint8(9), 1<<62)
	f.Add(uint64(0xe0008), 0, uint32(0), uint32(0), uint8(0), uint16(0x601), uint8(2), -5)
	f.Fuzz(func(t *testing.T, base uint64, cpus int, lapic, ioapic uint32, ioapicID uint8, pmPort uint16, sci uint8, maxSize int) {
		c := Config{Base: base, CPUs: cpus, LAPICAddr: lapic, IOAPICAddr: ioapic, IOAPICID: ioapicID, PMPort: pmPort, SCIIRQ: sci, MaxSize: maxSize}
		blob, err := Build(c)
		if err != nil {
			if blob != nil {
				t.Fatalf("Build returned both %d bytes and error %v", len(blob), err)
			}
			return
		}
		if len(blob) > maxSize {
			t.Fatalf("blob of %d bytes exceeds MaxSize %d", len(blob), maxSize)
		}
		p, err := parse(blob, base)
		if err != nil {
			t.Fatalf("Build(%+v) made tables that do not parse: %v", c, err)
		}
		var lapics int
		for _, e := range madtEntries(t, p.madt) {
			if e.typ == 0 {
				if int(e.body[3]) != lapics {
					t.Fatalf("local APIC entry %d has ID %d", lapics, e.body[3])
				}
				lapics++
			}
		}
		if lapics != cpus {
			t.Fatalf("%d local APIC entries for %d CPUs", lapics, cpus)
		}
		if got := binary.LittleEndian.Uint32(p.fadt[56:]); got != uint32(pmPort) {
			t.Fatalf("PM1a_EVT_BLK %#x, want %#x", got, pmPort)
		}
		if len(p.dsdt) <= 36 || p.dsdt[36] != amlNameOp {
			t.Fatalf("DSDT body does not start with \\_S5: % x", p.dsdt[36:])
		}
	})
}
