package machine

import (
	"fmt"
	"math"

	"github.com/vmm-dev/vmm/acpi"
	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/guestmem"
	"github.com/vmm-dev/vmm/kernelcache"
	"github.com/vmm-dev/vmm/kernelimage"
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

// maxVmlinux caps what vmm decompresses on the host: Debian's cloud
// kernel is about 50 MiB decompressed, and a payload claiming more than
// this is a decompression bomb, not a kernel.
const maxVmlinux = 512 << 20

// bootKernel is what -kernel named, ready to load.
type bootKernel struct {
	// hdr is the setup header the zero page carries: the bzImage's, or
	// one made up for a bare vmlinux.
	hdr *bootparam.Kernel
	// elf, if not nil, is the decompressed kernel, loaded at its physical
	// addresses and entered at startup_64 (the 64-bit boot protocol, as
	// Firecracker boots a vmlinux). Without it, hdr.Payload is loaded at
	// 1 MiB and decompresses itself.
	elf *kernelimage.ELF
	// bytes holds the bytes hdr.Payload or elf alias: the -kernel
	// file, or the kernel cache's entry, each mapped from its file,
	// which loading reads through bytes.Read (see kernelcache's mapped
	// for why). Close releases it.
	bytes kernelBytes
}

// kernelBytes is a kernel file's bytes as package kernelcache hands them
// out: *kernelcache.Image or *kernelcache.Vmlinux.
type kernelBytes interface {
	Read(f func(data []byte) error) error
	Close() error
}

// Close releases the kernel's bytes, once it is loaded.
func (k bootKernel) Close() {
	if k.bytes != nil {
		k.bytes.Close()
	}
}

// read calls f with k's bytes readable (see bootKernel.bytes).
func (k bootKernel) read(f func() error) error {
	if k.bytes == nil {
		return f()
	}
	return k.bytes.Read(func([]byte) error { return f() })
}

// readKernel reads the -kernel file: a bzImage, or a vmlinux ELF. With a
// kernel cache, a bzImage's compressed vmlinux is decompressed on the host
// once (package kernelcache) and booted directly; whenever that cannot be
// done the bzImage boots as it is, so the cache never makes a boot fail.
func readKernel(cfg Config) (bootKernel, error) {
	img, err := kernelcache.OpenImage(cfg.Kernel)
	if err != nil {
		return bootKernel{}, fmt.Errorf("kernel: %w", err)
	}
	var k bootKernel
	err = img.Read(func(image []byte) error {
		if kernelimage.IsELF(image) {
			e, err := kernelimage.ParseELF(image)
			if err != nil {
				return fmt.Errorf("kernel %s: %w", cfg.Kernel, err)
			}
			k = bootKernel{hdr: bootparam.VmlinuxKernel(), elf: e, bytes: img}
			return nil
		}
		hdr, err := bootparam.ParseKernel(image)
		if err != nil {
			return fmt.Errorf("kernel %s: %w", cfg.Kernel, err)
		}
		k = bootKernel{hdr: hdr, bytes: img}
		return nil
	})
	if err != nil {
		img.Close()
		return bootKernel{}, err
	}
	if k.elf != nil || cfg.KernelCache == "" || !k.hdr.Supports64BitEntry() {
		return k, nil
	}
	notef := func(format string, args ...any) {
		if cfg.Logf != nil {
			cfg.Logf(format, args...)
		}
	}
	vmlinux, err := kernelcache.Load(cfg.KernelCache, img, k.hdr, kernelcache.Helper(cfg.UnpackHelper), maxVmlinux, notef)
	if err != nil {
		return k, nil // Load said what was worth saying
	}
	var e *kernelimage.ELF
	err = vmlinux.Read(func(b []byte) (err error) {
		e, err = kernelimage.ParseELF(b)
		return err
	})
	if err != nil {
		vmlinux.Close()
		notef("kernel %s: its decompressed payload: %v; booting the compressed kernel", cfg.Kernel, err)
		return k, nil
	}
	// The vmlinux replaces the bzImage's payload; its header was copied.
	img.Close()
	k.hdr.Payload = nil
	return bootKernel{hdr: k.hdr, elf: e, bytes: vmlinux}, nil
}

// kernelEnd is the lowest address above everything the kernel occupies
// while it boots: a vmlinux's segments, or the bzImage loaded at 1 MiB and
// the kernel it decompresses (init_size bytes) at LOAD_PHYSICAL_ADDR,
// which the header gives as pref_address (boot.rst: the kernel, loaded
// below it, decompresses itself there; a kernel built with a
// CONFIG_PHYSICAL_START above 16 MiB sits higher). The initrd goes above
// it.
func kernelEnd(k bootKernel) uint64 {
	if k.elf != nil {
		return k.elf.End()
	}
	start := max(kernelDecompressAddr, k.hdr.PrefAddress)
	end := start + uint64(k.hdr.InitSize)
	if end < start { // a pref_address near 2^64: no RAM holds it
		return math.MaxUint64
	}
	return max(kernelLoadAddr+uint64(len(k.hdr.Payload)), end)
}

// bootLayout is what setupMemory decided, for the caller to finish the
// boot: where the initrd goes, which entry mode was chosen and where the
// kernel is entered.
type bootLayout struct {
	initrdAddr uint64
	long       bool
	entry      uint64
}

// loadKernel puts the kernel in guest memory and returns its entry point:
// a vmlinux's segments where its program headers say, which must be above
// the boot data below 1 MiB; or the bzImage's protected-mode code at
// 1 MiB, entered at its 64-bit entry (boot.rst, "64-bit boot protocol")
// or its 32-bit one.
func loadKernel(mem *guestmem.Memory, k bootKernel) (entry uint64, long bool, err error) {
	if k.elf == nil {
		if err := k.read(func() error { return mem.WriteAt(k.hdr.Payload, kernelLoadAddr) }); err != nil {
			return 0, false, fmt.Errorf("load kernel: %w", err)
		}
		if k.hdr.Supports64BitEntry() {
			return kernelLoadAddr + bootparam.Entry64Offset, true, nil
		}
		return kernelLoadAddr, false, nil
	}
	if s := k.elf.Start(); s < kernelLoadAddr {
		return 0, false, fmt.Errorf("kernel loads at 0x%x, below the 1 MiB vmm keeps for boot data", s)
	}
	if err := k.read(func() error { return k.elf.Load(mem) }); err != nil {
		return 0, false, fmt.Errorf("load kernel: %w", err)
	}
	return k.elf.Entry, true, nil
}

// setupMemory writes everything the kernel needs into guest memory except
// the initrd's bytes (the caller streams those from the file to
// initrdAddr): the protected-mode kernel, command line, boot GDT, page
// tables, ACPI tables and the zero page. It is a pure function of its
// inputs, so the whole layout is tested without /dev/kvm.
func setupMemory(mem *guestmem.Memory, k bootKernel, cmdline string, initrdSize uint64, cpus, virtioDevices int, virtioPCI bool) (bootLayout, error) {
	var l bootLayout
	low := mem.Regions()[0]
	if low.GPA != 0 {
		return l, fmt.Errorf("guest RAM does not start at address 0")
	}
	need := kernelEnd(k)
	if need > mmioHoleStart {
		// No -m helps: RAM below the hole ends there (a vmlinux linked
		// above 4 GiB, a pref_address past it).
		return l, fmt.Errorf("this kernel does not fit below %d MiB, where vmm loads it: it needs guest memory up to %#x", mmioHoleStart>>20, need)
	}
	if low.End() < need {
		return l, fmt.Errorf("guest memory too small for this kernel: it needs at least %d MiB below %d MiB", (need+(1<<20)-1)>>20, mmioHoleStart>>20)
	}
	if len(cmdline) >= cmdlineMax {
		return l, fmt.Errorf("kernel command line is %d bytes; vmm has room for %d", len(cmdline), cmdlineMax-1)
	}
	var err error
	if l.entry, l.long, err = loadKernel(mem, k); err != nil {
		return l, err
	}
	if err := mem.WriteAt(append([]byte(cmdline), 0), cmdlineAddr); err != nil {
		return l, fmt.Errorf("write command line: %w", err)
	}
	if err := writeGDT(mem, l.long); err != nil {
		return l, err
	}
	if l.long {
		if err := writePageTables(mem); err != nil {
			return l, err
		}
	}
	ac := acpi.Config{
		Base: acpiAddr, CPUs: cpus, LAPICAddr: lapicAddr, IOAPICAddr: ioapicAddr, IOAPICID: ioapicID,
		PMPort: pmPort, SCIIRQ: sciIRQ, MaxSize: acpiMax,
	}
	if virtioPCI && virtioDevices > 0 {
		// No functions, no root bridge in the DSDT: the host bridge
		// alone (addHostBridge) is there for the kernel's probe of the
		// configuration ports, and the guest is spared the scan.
		ac.PCI = &acpi.PCIRoot{ConfigPort: pciConfigPort, MMIOBase: pciWindowBase, MMIOSize: pciWindowSize}
	} else {
		ac.VirtioMMIO = virtioACPI(virtioDevices)
	}
	tables, err := acpi.Build(ac)
	if err != nil {
		return l, fmt.Errorf("build ACPI tables: %w", err)
	}
	if err := mem.WriteAt(tables, acpiAddr); err != nil {
		return l, fmt.Errorf("write ACPI tables: %w", err)
	}
	// The RSDP's address spares the kernel the scan for it (the
	// decompressor would otherwise find it and pass it on itself).
	p := bootparam.Params{CmdlineAddr: cmdlineAddr, Cmdline: cmdline, E820: e820Map(mem), ACPIRSDPAddr: acpiAddr}
	if initrdSize > 0 {
		ramEnd := min(low.End(), mmioHoleStart)
		addr, err := k.hdr.PlaceInitrd(initrdSize, (need+pageSize-1)&^(pageSize-1), ramEnd)
		if err != nil {
			return l, fmt.Errorf("place initrd (%d MiB) in guest memory below %d MiB (of %d MiB): %w", initrdSize>>20, min(ramEnd, k.hdr.InitrdLimit())>>20, mem.Size()>>20, err)
		}
		l.initrdAddr = addr
		p.InitrdAddr, p.InitrdSize = addr, initrdSize
	}
	zp, err := k.hdr.BootParams(p)
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
