// Package kernelimage knows a compressed Linux kernel's file formats: it
// names the compression of a bzImage's payload (the bytes
// bootparam.Kernel.CompressedKernel locates) and checks that vmm can
// decompress it (Plan), and it parses a vmlinux ELF into the segments to
// load at their physical addresses. The decoders themselves are package
// kernelimage/unpack, which only the vmm-unpack helper links.
//
// Why: a bzImage spends its first second or more decompressing itself
// inside the guest, before it makes a single exit. A CI runner booting the
// same kernel thousands of times can do that once on the host, keep the
// result, and enter startup_64 directly, as Firecracker boots a vmlinux.
//
// It is apart from bootparam, which is the boot protocol (setup header,
// zero page), because this is about the kernel's file formats:
// compression containers and ELF. Both are pure functions of their input,
// tested without KVM and fuzzed; the cache of decompressed kernels, which
// does file I/O, is package kernelcache.
//
// A vmlinux is told from other x86-64 executables by its text being linked
// in the kernel mapping (__START_KERNEL_map); its e_entry and p_paddr are
// physical addresses.
//
// A kernel booted this way is not relocated: KASLR is done by the
// decompressor, so the kernel runs at the physical addresses the ELF gives
// (LOAD_PHYSICAL_ADDR, 16 MiB on x86-64) and its virtual layout is not
// randomized. Firecracker's direct vmlinux boot has the same property.
package kernelimage
