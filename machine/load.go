package machine

import (
	"fmt"

	"github.com/vmm-dev/vmm/acpi"
	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/guestmem"
)

// e820Map describes guest RAM the way PC firmware would: the low region
// has the EBDA/VGA/ROM area below 1 MiB reserved (the ACPI tables live in
// it), everything else is usable.
func e820Map(mem *guestmem.Memory) []bootparam.E820Entry {
	var out []bootparam.E820Entry
	for _, r := range mem.Regions() {
		if r.GPA == 0 && r.End() > kernelLoadAddr {
			out = append(out,
				bootparam.E820Entry{Addr: 0, Size: ebdaStart, Type: bootparam.E820RAM},
				bootparam.E820Entry{Addr: ebdaStart, Size: kernelLoadAddr - ebdaStart, Type: bootparam.E820Reserved},
				bootparam.E820Entry{Addr: kernelLoadAddr, Size: r.End() - kernelLoadAddr, Type: bootparam.E820RAM})
			continue
		}
		out = append(out, bootparam.E820Entry{Addr: r.GPA, Size: uint64(len(r.Mem)), Type: bootparam.E820RAM})
	}
	return out
}

// kernelEnd is the lowest address above everything the kernel occupies
// while it boots: the loaded image at 1 MiB and the decompressed kernel
// (init_size bytes) at LOAD_PHYSICAL_ADDR. The initrd goes above it.
func kernelEnd(k *bootparam.Kernel) uint64 {
	return max(kernelLoadAddr+uint64(len(k.Payload)), kernelDecompressAddr+uint64(k.InitSize))
}

// bootLayout is what setupMemory decided, for the caller to finish the
// boot: where the initrd goes and which entry mode was chosen.
type bootLayout struct {
	initrdAddr uint64
	long       bool
}

// setupMemory writes everything the kernel needs into guest memory except
// the initrd's bytes (the caller streams those from the file to
// initrdAddr): the protected-mode kernel, command line, boot GDT, page
// tables, ACPI tables and the zero page. It is a pure function of its
// inputs, so the whole layout is tested without /dev/kvm.
func setupMemory(mem *guestmem.Memory, k *bootparam.Kernel, cmdline string, initrdSize uint64, cpus, virtioDevices int) (bootLayout, error) {
	var l bootLayout
	low := mem.Regions()[0]
	if low.GPA != 0 {
		return l, fmt.Errorf("guest RAM does not start at address 0")
	}
	need := kernelEnd(k)
	if low.End() < need {
		return l, fmt.Errorf("guest memory too small for this kernel: it needs at least %d MiB below %d MiB", (need+(1<<20)-1)>>20, mmioHoleStart>>20)
	}
	if len(cmdline) >= cmdlineMax {
		return l, fmt.Errorf("kernel command line is %d bytes; vmm has room for %d", len(cmdline), cmdlineMax-1)
	}
	if err := mem.WriteAt(k.Payload, kernelLoadAddr); err != nil {
		return l, fmt.Errorf("load kernel: %w", err)
	}
	if err := mem.WriteAt(append([]byte(cmdline), 0), cmdlineAddr); err != nil {
		return l, fmt.Errorf("write command line: %w", err)
	}
	l.long = k.Supports64BitEntry()
	if err := writeGDT(mem, l.long); err != nil {
		return l, err
	}
	if l.long {
		if err := writePageTables(mem); err != nil {
			return l, err
		}
	}
	tables, err := acpi.Build(acpi.Config{
		Base: acpiAddr, CPUs: cpus, LAPICAddr: lapicAddr, IOAPICAddr: ioapicAddr, IOAPICID: ioapicID,
		PMPort: pmPort, SCIIRQ: sciIRQ, MaxSize: acpiMax,
		VirtioMMIO: virtioACPI(virtioDevices),
	})
	if err != nil {
		return l, fmt.Errorf("build ACPI tables: %w", err)
	}
	if err := mem.WriteAt(tables, acpiAddr); err != nil {
		return l, fmt.Errorf("write ACPI tables: %w", err)
	}
	p := bootparam.Params{CmdlineAddr: cmdlineAddr, Cmdline: cmdline, E820: e820Map(mem)}
	if initrdSize > 0 {
		ramEnd := min(low.End(), mmioHoleStart)
		addr, err := k.PlaceInitrd(initrdSize, (need+pageSize-1)&^(pageSize-1), ramEnd)
		if err != nil {
			return l, fmt.Errorf("place initrd (%d MiB) in %d MiB of guest memory: %w", initrdSize>>20, low.End()>>20, err)
		}
		l.initrdAddr = addr
		p.InitrdAddr, p.InitrdSize = addr, initrdSize
	}
	zp, err := k.BootParams(p)
	if err != nil {
		return l, fmt.Errorf("build zero page: %w", err)
	}
	if err := mem.WriteAt(zp, zeroPageAddr); err != nil {
		return l, fmt.Errorf("write zero page: %w", err)
	}
	return l, nil
}

// ramRanges splits size bytes of RAM around the 32-bit MMIO hole.
func ramRanges(size uint64) []guestmem.Range {
	if size <= mmioHoleStart {
		return []guestmem.Range{{GPA: 0, Size: size}}
	}
	return []guestmem.Range{{GPA: 0, Size: mmioHoleStart}, {GPA: highRAMStart, Size: size - mmioHoleStart}}
}

// cpioAlign is the alignment of each archive in a concatenated initramfs:
// the kernel's unpacker skips zero padding to the next 4-byte boundary
// between archives (init/initramfs.c, do_start/do_skip), so an archive
// appended there is found whatever the first one's length.
const cpioAlign = 4

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
