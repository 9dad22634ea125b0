package main

import (
	"encoding/binary"
	"fmt"
)

// The soak guest is a few dozen instructions at the 64-bit entry of a
// testkernel bzImage. It drives the first virtio-blk device the way a
// driver does (virtio v1.2 §3.1.1 initialisation, then one split-queue
// request, §2.7 and §5.2.6), reads sector 0 of the disk and writes the
// disk's first byte to the exit port. The status a VM ends with is thus
// the byte the soak program put on its disk: a status that comes back
// intact proves the device's goroutine, the queue-kick ioeventfd, guest
// RAM access and the exit port all worked in that VM, not just that it
// booted.
//
// vmm enters it in long mode with the first 4 GiB identity-mapped and
// interrupts off, so it can address the MMIO window and its own RAM
// directly and never sees the device's interrupt (the IOAPIC pin stays
// masked).

// Guest-physical addresses the code uses. RAM from 2 MiB is free: the
// kernel image sits at 1 MiB (kernelLoadAddr) and is a page long, and vmm
// places an initrd (`vmm run` always has one, its job layer) above 16 MiB
// plus the kernel's init_size.
const (
	mmioBase   = 0xd0000000 // first virtio-mmio window (machine's virtioMMIOBase)
	ringBase   = 0x200000   // descriptor table; everything below is relative to it
	availOff   = 0x1000     // available ring
	usedOff    = 0x2000     // used ring
	headerOff  = 0x3000     // struct virtio_blk_req header: type IN, sector 0 (zero RAM)
	statusOff  = 0x3200     // the request's status byte
	dataOff    = 0x4000     // 512 bytes read from sector 0
	queueSize  = 8
	exitPort   = 0xf4 // guestabi.ExitPort
	sectorSize = 512
)

// virtio-mmio registers (virtio v1.2 §4.2.2) and status bits (§2.1).
const (
	regMagic       = 0x000
	regDeviceID    = 0x008
	regDrvFeatures = 0x020
	regDrvFeatSel  = 0x024
	regQueueSel    = 0x030
	regQueueNum    = 0x038
	regQueueReady  = 0x044
	regQueueNotify = 0x050
	regStatus      = 0x070
	regQueueDesc   = 0x080
	regQueueDriver = 0x090
	regQueueDevice = 0x0a0

	magicVirt    = 0x74726976 // "virt"
	deviceBlock  = 2          // virtio v1.2 §5
	stAck        = 1
	stDriver     = 2
	stDriverOK   = 4
	stFeaturesOK = 8

	descNext  = 1 // VIRTQ_DESC_F_NEXT
	descWrite = 2 // VIRTQ_DESC_F_WRITE
)

// Statuses the guest reports when something went wrong, far above the
// range the soak puts on its disks (1-200), one per check so a failure
// says which step failed.
const (
	failMagic    = 0xe1 // no virtio-mmio window at mmioBase
	failDevice   = 0xe2 // the window is not a block device
	failFeatures = 0xe3 // the device refused VERSION_1
	failRequest  = 0xe4 // the request completed with a status other than OK
)

// guestCode returns the soak guest's machine code.
func guestCode() []byte {
	var a asm
	a.movEBX(mmioBase)
	a.movEDI(ringBase)

	a.loadEAXFromRBX(regMagic)
	a.cmpEAX(magicVirt)
	a.jne("fail-magic")
	a.loadEAXFromRBX(regDeviceID)
	a.cmpEAX(deviceBlock)
	a.jne("fail-device")

	// Reset, ACKNOWLEDGE, DRIVER, accept VERSION_1 (feature bit 32, so
	// bit 0 of feature word 1) and nothing else, FEATURES_OK, and check
	// the device kept it.
	a.storeRBX(regStatus, 0)
	a.storeRBX(regStatus, stAck)
	a.storeRBX(regStatus, stAck|stDriver)
	a.storeRBX(regDrvFeatSel, 1)
	a.storeRBX(regDrvFeatures, 1)
	a.storeRBX(regStatus, stAck|stDriver|stFeaturesOK)
	a.loadEAXFromRBX(regStatus)
	a.testEAX(stFeaturesOK)
	a.je("fail-features")

	// Queue 0: 8 entries; the high halves of the addresses stay 0.
	a.storeRBX(regQueueSel, 0)
	a.storeRBX(regQueueNum, queueSize)
	a.storeRBX(regQueueDesc, ringBase)
	a.storeRBX(regQueueDriver, ringBase+availOff)
	a.storeRBX(regQueueDevice, ringBase+usedOff)
	a.storeRBX(regQueueReady, 1)

	// One request of three descriptors (struct virtq_desc: le64 addr,
	// le32 len, le16 flags, le16 next): the 16-byte header, 512 bytes
	// for the device to fill, the status byte.
	desc := func(i int, addr, length uint32, flags, next uint16) {
		a.storeRDI(uint32(i*16), addr)
		a.storeRDI(uint32(i*16+8), length)
		a.storeRDI(uint32(i*16+12), uint32(flags)|uint32(next)<<16)
	}
	desc(0, ringBase+headerOff, 16, descNext, 1)
	desc(1, ringBase+dataOff, sectorSize, descNext|descWrite, 2)
	desc(2, ringBase+statusOff, 1, descWrite, 0)
	a.storeByteRDI(statusOff, 0xff) // a device that never answers leaves 0xff
	// avail ring: ring[0] = head 0 is already zero; idx = 1.
	a.storeWordRDI(availOff+2, 1)
	a.storeRBX(regStatus, stAck|stDriver|stFeaturesOK|stDriverOK)
	a.storeRBX(regQueueNotify, 0)

	// Wait for used idx to reach 1. There is no timeout here: the soak
	// program bounds each VM with a deadline of its own.
	a.label("poll")
	a.pause()
	a.loadWordRDI(usedOff + 2)
	a.cmpEAX(1)
	a.jne("poll")
	a.loadByteRDI(statusOff)
	a.cmpEAX(0)
	a.jne("fail-request")
	a.loadByteRDI(dataOff)
	a.exitAL()

	for _, f := range []struct {
		label string
		code  uint8
	}{{"fail-magic", failMagic}, {"fail-device", failDevice}, {"fail-features", failFeatures}, {"fail-request", failRequest}} {
		a.label(f.label)
		a.movAL(f.code)
		a.exitAL()
	}
	return a.finish()
}

// asm encodes the handful of x86-64 instructions the soak guest needs
// (Intel SDM vol. 2 opcodes), with rel32 jumps to labels. Memory
// operands are [rbx+disp32] or [rdi+disp32] (ModRM mod=10); an absolute
// disp32 would be sign-extended and could not reach 0xd0000000.
type asm struct {
	b      []byte
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int // offset of the rel32 field
	label string
}

const (
	modrmRBX = 0x83 // mod=10 reg=000 rm=011: [rbx+disp32]
	modrmRDI = 0x87 // mod=10 reg=000 rm=111: [rdi+disp32]
)

func (a *asm) emit(b ...byte) { a.b = append(a.b, b...) }
func (a *asm) u32(v uint32)   { a.b = binary.LittleEndian.AppendUint32(a.b, v) }
func (a *asm) u16(v uint16)   { a.b = binary.LittleEndian.AppendUint16(a.b, v) }

func (a *asm) movEBX(v uint32) { a.emit(0xbb); a.u32(v) } // mov ebx, imm32 (zero-extends)
func (a *asm) movEDI(v uint32) { a.emit(0xbf); a.u32(v) } // mov edi, imm32
func (a *asm) movAL(v uint8)   { a.emit(0xb0, v) }        // mov al, imm8

// mov dword [rbx+disp32], imm32
func (a *asm) storeRBX(disp, v uint32) { a.emit(0xc7, modrmRBX); a.u32(disp); a.u32(v) }

// mov dword [rdi+disp32], imm32
func (a *asm) storeRDI(disp, v uint32) { a.emit(0xc7, modrmRDI); a.u32(disp); a.u32(v) }

// mov word [rdi+disp32], imm16
func (a *asm) storeWordRDI(disp uint32, v uint16) {
	a.emit(0x66, 0xc7, modrmRDI)
	a.u32(disp)
	a.u16(v)
}

// mov byte [rdi+disp32], imm8
func (a *asm) storeByteRDI(disp uint32, v uint8) { a.emit(0xc6, modrmRDI); a.u32(disp); a.emit(v) }

// mov eax, dword [rbx+disp32]
func (a *asm) loadEAXFromRBX(disp uint32) { a.emit(0x8b, modrmRBX); a.u32(disp) }

// movzx eax, word [rdi+disp32]
func (a *asm) loadWordRDI(disp uint32) { a.emit(0x0f, 0xb7, modrmRDI); a.u32(disp) }

// movzx eax, byte [rdi+disp32]
func (a *asm) loadByteRDI(disp uint32) { a.emit(0x0f, 0xb6, modrmRDI); a.u32(disp) }

func (a *asm) cmpEAX(v uint32)  { a.emit(0x3d); a.u32(v) } // cmp eax, imm32
func (a *asm) testEAX(v uint32) { a.emit(0xa9); a.u32(v) } // test eax, imm32
func (a *asm) pause()           { a.emit(0xf3, 0x90) }

// exitAL is out 0xf4, al; hlt. The hlt is never reached on vmm, which
// stops the vCPU at the port write.
func (a *asm) exitAL() { a.emit(0xe6, exitPort, 0xf4) }

func (a *asm) jne(label string) { a.emit(0x0f, 0x85); a.rel32(label) }
func (a *asm) je(label string)  { a.emit(0x0f, 0x84); a.rel32(label) }

func (a *asm) rel32(label string) {
	a.fixups = append(a.fixups, fixup{at: len(a.b), label: label})
	a.u32(0)
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	if _, dup := a.labels[name]; dup {
		panic(fmt.Sprintf("asm: label %q defined twice", name)) // a bug in guestCode, not input
	}
	a.labels[name] = len(a.b)
}

// finish resolves the jumps: rel32 counts from the end of the field,
// which ends each jump instruction.
func (a *asm) finish() []byte {
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			panic(fmt.Sprintf("asm: undefined label %q", f.label)) // a bug in guestCode, not input
		}
		binary.LittleEndian.PutUint32(a.b[f.at:], uint32(int32(to-(f.at+4))))
	}
	return a.b
}
