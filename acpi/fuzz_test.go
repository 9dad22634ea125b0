package acpi

import (
	"encoding/binary"
	"testing"
)

func FuzzBuild(f *testing.F) {
	c := machineConfig(4)
	f.Add(c.Base, c.CPUs, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, false, uint16(0), uint32(0), uint32(0))
	f.Add(uint64(0), 255, uint32(1), uint32(1), uint8(255), uint16(0xfff0), uint8(15), 1<<20, false, uint16(0), uint32(0), uint32(0))
	f.Add(uint64(1)<<40, 1, c.LAPICAddr, c.IOAPICAddr, uint8(0), uint16(4), uint8(1), 800, false, uint16(0), uint32(0), uint32(0))
	f.Add(^uint64(0)&^0xf, 2, c.LAPICAddr, c.IOAPICAddr, uint8(0), uint16(0x600), uint8(9), 1<<62, false, uint16(0), uint32(0), uint32(0))
	f.Add(uint64(0xe0008), 0, uint32(0), uint32(0), uint8(0), uint16(0x601), uint8(2), -5, false, uint16(0), uint32(0), uint32(0))
	// With the PCI bridge: the machine's hole, a window ending at 4 GiB,
	// one running past it, one over the IOAPIC, one empty, a wrong port.
	f.Add(c.Base, c.CPUs, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcf8), uint32(0xc0000000), uint32(0x3ec00000))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcf8), uint32(0xff000000), uint32(0x01000000))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcf8), uint32(0xffffff00), uint32(0x200))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcf8), uint32(0xfe000000), uint32(0x01000000))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcf8), uint32(0xc0000000), uint32(0))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, c.MaxSize, true, uint16(0xcfc), uint32(0xc0000000), uint32(0x1000))
	f.Add(c.Base, 1, c.LAPICAddr, c.IOAPICAddr, c.IOAPICID, c.PMPort, c.SCIIRQ, 300, true, uint16(0xcf8), uint32(0xc0000000), uint32(0x1000))
	f.Fuzz(func(t *testing.T, base uint64, cpus int, lapic, ioapic uint32, ioapicID uint8, pmPort uint16, sci uint8, maxSize int,
		pci bool, cfgPort uint16, mmioBase, mmioSize uint32) {
		c := Config{Base: base, CPUs: cpus, LAPICAddr: lapic, IOAPICAddr: ioapic, IOAPICID: ioapicID, PMPort: pmPort, SCIIRQ: sci, MaxSize: maxSize}
		if pci {
			c.PCI = &PCIRoot{ConfigPort: cfgPort, MMIOBase: mmioBase, MMIOSize: mmioSize}
		}
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
		nodes, err := decodeAML(p.dsdt[36:])
		if err != nil {
			t.Fatalf("DSDT does not decode: %v", err)
		}
		dev, ok := amlFind(nodes, `\_SB_`, "PCI0")
		if ok != pci {
			t.Fatalf("PCI0 declared: %v, want %v", ok, pci)
		}
		if !pci {
			return
		}
		lo, hi := uint64(mmioBase), uint64(mmioBase)+uint64(mmioSize)
		overlaps := func(at, size uint64) bool { return lo < at+size && at < hi }
		if mmioSize == 0 || hi > 1<<32 || cfgPort != 0xcf8 || overlaps(uint64(lapic), 0x1000) ||
			overlaps(uint64(ioapic), 0x1000) || overlaps(0xfee00000, 1<<20) {
			t.Fatalf("Build accepted PCI %+v with the local APIC at %#x and the IOAPIC at %#x", *c.PCI, lapic, ioapic)
		}
		crs, ok := amlFind(dev.children, "_CRS")
		// BufferOp, PkgLength, BytePrefix 52, WordBusNumber (16), IO (8),
		// then DWordMemory: minimum at 10 and length at 22 into it.
		if !ok || len(crs.data) != 4+52 {
			t.Fatalf("PCI0._CRS % x", crs.data)
		}
		mem := crs.data[4+16+8:]
		if first, size := binary.LittleEndian.Uint32(mem[10:]), binary.LittleEndian.Uint32(mem[22:]); first != mmioBase || size != mmioSize {
			t.Fatalf("PCI0 window %#x+%#x, want %#x+%#x", first, size, mmioBase, mmioSize)
		}
	})
}
