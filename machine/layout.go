package machine

// The guest-physical and port layout of the machine. Every address the
// guest can see is here, with the reason it is where it is.
const (
	// bootGDTAddr holds the boot GDT: just above the real-mode IVT
	// (0x0-0x3FF) and BIOS data area (0x400-0x4FF), which the kernel may
	// read, and below anything we load.
	bootGDTAddr = 0x500
	// zeroPageAddr is struct boot_params, handed to the kernel in RSI.
	// Conventional low memory, page-aligned, clear of the GDT and tables.
	zeroPageAddr = 0x7000
	// bootStackTop is the initial RSP: the 64-bit boot protocol does not
	// require a stack, but a valid one makes an early fault debuggable
	// instead of a triple fault. It grows down into 0x8000-0x8FFF.
	bootStackTop = 0x8ff0
	// pml4Addr, pdptAddr and pdAddr hold the identity page tables that
	// map the first 4 GiB with 2 MiB pages (one PML4, one PDPT, four PDs:
	// 0x9000-0xEFFF). The boot protocol wants the kernel, zero page and
	// command line identity-mapped; 4 GiB covers every placement.
	pml4Addr = 0x9000
	pdptAddr = 0xa000
	pdAddr   = 0xb000
	// cmdlineAddr is the kernel command line, below the EBDA and far
	// from the page tables; cmdlineMax bounds it to this slot.
	cmdlineAddr = 0x20000
	cmdlineMax  = 0x10000
	// ebdaStart is where the extended BIOS data area would begin. From
	// here to 1 MiB (EBDA, VGA hole, option and BIOS ROMs) is reserved in
	// e820 because that is what Linux expects on a PC.
	ebdaStart = 0x9fc00
	// acpiAddr holds the ACPI tables, RSDP first, where Linux scans for
	// the RSDP (0xE0000-0xFFFFF); the zero page's acpi_rsdp_addr points
	// at it too, as the decompressor would have set it, for a kernel
	// entered without one. acpiMax is the room left up to 1 MiB.
	acpiAddr = 0xe0000
	acpiMax  = 0x20000
	// kernelLoadAddr is where the protected-mode kernel is loaded: 1 MiB,
	// the classic bzImage address. A relocatable kernel decompresses
	// itself to LOAD_PHYSICAL_ADDR (16 MiB) or above.
	kernelLoadAddr = 0x100000
	// kernelDecompressAddr is LOAD_PHYSICAL_ADDR of x86-64 defconfigs and
	// Debian's kernels: the decompressed kernel occupies init_size bytes
	// from here, so the initrd must not sit in that range.
	kernelDecompressAddr = 0x1000000
	// mmioHoleStart begins the 32-bit MMIO hole (3 GiB to 4 GiB): RAM
	// beyond it is moved above 4 GiB so the IOAPIC, local APIC and the
	// TSS pages below can sit at their architectural addresses.
	mmioHoleStart = 0xc0000000
	// highRAMStart is where RAM resumes above the hole.
	highRAMStart = 0x100000000
	// ioapicAddr and lapicAddr are the architectural defaults the
	// in-kernel irqchip emulates, also announced in the MADT.
	ioapicAddr = 0xfec00000
	lapicAddr  = 0xfee00000
	// identityMapAddr and tssAddr are the 4 pages Intel VT-x needs for
	// real-mode emulation (one for the identity page table, three for the
	// TSS), placed in the hole just below the 4 GiB BIOS area so they hit
	// neither RAM nor any device. AMD ignores both.
	identityMapAddr = 0xfffbc000
	tssAddr         = 0xfffbd000
)

// Port I/O layout: the legacy PC ports a distro kernel probes.
const (
	com1Port  = 0x3f8 // 16550A UART, ttyS0
	com1Size  = 8
	com1IRQ   = 4
	com2Port  = 0x2f8 // second 16550A, ttyS1: a job's own channel (vmm run)
	com2Size  = 8
	com2IRQ   = 3
	rtcPort   = 0x70 // MC146818 CMOS RTC, index and data
	rtcSize   = 2
	i8042Port = 0x60 // PS/2 controller: data 0x60, status/command 0x64
	i8042Size = 5
	// pmPort is the ACPI PM1a event/control block and reset register,
	// an otherwise unused range also described in the FADT.
	pmPort = 0x600
	// sciIRQ is the ACPI SCI, IRQ 9 as on every PC chipset.
	sciIRQ = 9
	// ioapicID is the IOAPIC's APIC ID, after the vCPUs' IDs (0..N-1)
	// would be usual, but Linux only needs it unique among IOAPICs.
	ioapicID = 0
)

// Virtio devices: one virtio-mmio transport per disk or network card,
// described to the guest in the DSDT (acpi.MMIODevice).
const (
	// virtioMMIOBase is the first transport's register window: in the
	// 32-bit MMIO hole (so any guest can reach it), far below the IOAPIC
	// at 0xFEC00000 and above any RAM (which ends at mmioHoleStart).
	virtioMMIOBase = 0xd0000000
	// virtioMMIOStride gives each transport its own 4 KiB page, though
	// its registers take only virtio.MMIOSize bytes: a page per device
	// keeps windows apart if a guest maps them with page granularity.
	virtioMMIOStride = 0x1000
	// virtioGSIBase is the first transport's interrupt: IOAPIC pins 16-23
	// are free of every ISA IRQ, and KVM's default routing sends GSI n
	// to IOAPIC pin n, so an irqfd on GSI n needs no routing table.
	virtioGSIBase = 16
	// maxVirtioDevices is what the pins 16-23 of the in-kernel IOAPIC
	// (KVM_IOAPIC_NUM_PINS = 24) allow with one line per device.
	maxVirtioDevices = 8
)

// ramGranule is what guest RAM sizes are a multiple of: the 4 KiB page
// KVM_SET_USER_MEMORY_REGION requires memory_size to be made of
// (Documentation/virt/kvm/api.rst), and mmap works in.
const ramGranule = 4 << 10

// DefaultCmdline is all a distro kernel needs on this machine: the
// console on the UART. Everything else (ACPI, kvm-clock, the RTC) is
// provided, so no noapic/noacpi/notsc workarounds.
//
// cryptomgr.notests skips the kernel's crypto self-tests at boot, work a
// CI runner would repeat at every one of its thousands of boots for the
// same kernel on the same CPU: measured nested (Debian's cloud kernel, 10
// interleaved rounds in one L1), it took 400 ms off first exit to init and
// 470 ms of guest CPU, lower in 9 and 10 rounds of 10; no other candidate
// (8250.nr_uarts, tsc=reliable) moved either beyond the noise. A kernel
// parameter given later wins, so -append cryptomgr.notests=0 restores the
// tests.
//
// It lives here, with the platform it describes, so that the command and
// the benchmarks that give every peer VMM the same line share one
// definition.
const DefaultCmdline = "console=ttyS0 cryptomgr.notests"

// PCI (VirtioPCI, with at least one device): bus 0 of a conventional PCI hierarchy as on a
// PC, holding one virtio-pci function per device.
const (
	// pciConfigPort is configuration mechanism #1's CONFIG_ADDRESS and
	// CONFIG_DATA (PCI 3.0 §3.2.2.3.2), where Linux on a PC looks.
	pciConfigPort = 0xcf8
	// pciWindowBase and pciWindowSize are the root bridge's memory
	// window, announced in the DSDT: the BARs live in it. It takes the
	// start of the 32-bit hole up to the virtio-mmio windows, room for
	// far more than maxVirtioDevices BARs of virtio.PCIBARSize.
	pciWindowBase = mmioHoleStart
	pciWindowSize = virtioMMIOBase - mmioHoleStart
	// pciFirstDevice is the first device number of a virtio function:
	// device 0 is the host bridge, which Linux's type 1 sanity check
	// looks for (arch/x86/pci/direct.c).
	pciFirstDevice = 1
	// msiGSIBase is the first GSI of the MSI routes: above the IOAPIC's
	// 24 pins (KVM_IOAPIC_NUM_PINS), so KVM's default routes for them
	// stay as they are.
	msiGSIBase = 24
)
