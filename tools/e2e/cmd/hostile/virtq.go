//go:build linux && amd64

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dmaPage is a page of this process's memory that a device can be told
// about: locked, so its guest-physical address stays valid.
type dmaPage struct {
	b    []byte
	phys uint64
}

// Bits of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagemapPresent = 1 << 63
	pagemapPFNMask = 1<<55 - 1
)

// allocDMA maps n locked pages and finds their guest-physical addresses
// in /proc/self/pagemap (which shows PFNs to CAP_SYS_ADMIN only).
func allocDMA(n int) ([]dmaPage, error) {
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d pages: %w", n, err)
	}
	if err := unix.Mlock(mem); err != nil {
		return nil, fmt.Errorf("mlock: %w", err)
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	pages := make([]dmaPage, n)
	for i := range pages {
		b := mem[i*pageSize : (i+1)*pageSize : (i+1)*pageSize]
		b[0] = 1 // fault it in, whatever MAP_POPULATE did
		var e [8]byte
		if _, err := pm.ReadAt(e[:], int64(addrOf(b)/pageSize*8)); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		v := binary.LittleEndian.Uint64(e[:])
		if v&pagemapPresent == 0 || v&pagemapPFNMask == 0 {
			return nil, fmt.Errorf("pagemap entry %#x: page not present or PFN hidden (not root?)", v)
		}
		pages[i] = dmaPage{b: b, phys: (v & pagemapPFNMask) * pageSize}
	}
	return pages, nil
}

// virtio-mmio registers (virtio v1.2 §4.2.2), status bits (§2.1) and
// feature bits (§6) the driver side needs.
const (
	regMagic          = 0x000
	regDeviceID       = 0x008
	regDeviceFeatures = 0x010
	regDevFeatSel     = 0x014
	regDrvFeatures    = 0x020
	regDrvFeatSel     = 0x024
	regQueueSel       = 0x030
	regQueueNumMax    = 0x034
	regQueueNum       = 0x038
	regQueueReady     = 0x044
	regQueueNotify    = 0x050
	regIntStatus      = 0x060
	regIntACK         = 0x064
	regStatus         = 0x070
	regQueueDescLo    = 0x080
	regQueueDescHi    = 0x084
	regQueueDriverLo  = 0x090
	regQueueDriverHi  = 0x094
	regQueueDeviceLo  = 0x0a0
	regQueueDeviceHi  = 0x0a4
	regSHMSel         = 0x0ac
	regQueueReset     = 0x0c0
	regConfig         = 0x100

	stAck        = 1
	stDriver     = 2
	stDriverOK   = 4
	stFeaturesOK = 8
	stNeedsReset = 64
	stFailed     = 128

	featIndirect = 1 << 28
	featEventIdx = 1 << 29
	featVersion1 = 1 << 32

	magicVirt   = 0x74726976
	deviceNet   = 1
	deviceBlock = 2
)

// Split virtqueue layout (virtio v1.2 §2.7) and virtio-blk requests
// (§5.2.6).
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4

	blkIn          = 0
	blkOut         = 1
	blkFlush       = 4
	blkDiscard     = 11
	blkWriteZeroes = 13
	blkStatusOK    = 0
	blkStatusIOErr = 1
	blkStatusUnsup = 2
	sectorSize     = 512
)

// device drives one virtio-mmio window from the guest side.
type device struct {
	mmioDevice
	regs []byte // the window, mapped uncached through /dev/mem
	// id is the device ID read before the attack (deviceBlock,
	// deviceNet): negotiate checks the window still holds that device.
	id uint32
	// bus, when set, takes the register accesses instead of regs: the
	// unit tests put vmm's own virtio-mmio transport there.
	bus registers
}

// registers is a virtio-mmio window served in this process (*virtio.MMIO
// has these methods).
type registers interface {
	Read(off uint64, data []byte)
	Write(off uint64, data []byte)
}

func (d *device) r32(off uintptr) uint32 {
	if d.bus != nil {
		var b [4]byte
		d.bus.Read(uint64(off), b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	return uint32(read(d.regs, off, 4))
}

func (d *device) w32(off uintptr, v uint32) {
	if d.bus != nil {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		d.bus.Write(uint64(off), b[:])
		return
	}
	write(d.regs, off, 4, uint64(v))
}

func (d *device) status() uint32 { return d.r32(regStatus) }

// reset writes 0 to Status and checks the device came back to 0, as a
// driver must (virtio v1.2 §4.2.3.1: it waits for Status to read 0).
func (d *device) reset() error {
	d.w32(regStatus, 0)
	deadline := time.Now().Add(5 * time.Second)
	for d.status() != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: status %#x after reset", d.name, d.status())
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// negotiate runs virtio v1.2 §3.1.1 up to FEATURES_OK, accepting the
// features given (VERSION_1 at least), and reports whether the device
// kept FEATURES_OK.
func (d *device) negotiate(features uint64) error {
	if m := d.r32(regMagic); m != magicVirt {
		return fmt.Errorf("%s: magic %#x", d.name, m)
	}
	if id := d.r32(regDeviceID); id != d.id {
		return fmt.Errorf("%s: device ID %d, want %d", d.name, id, d.id)
	}
	d.w32(regStatus, stAck)
	d.w32(regStatus, stAck|stDriver)
	d.w32(regDrvFeatSel, 0)
	d.w32(regDrvFeatures, uint32(features))
	d.w32(regDrvFeatSel, 1)
	d.w32(regDrvFeatures, uint32(features>>32))
	d.w32(regStatus, stAck|stDriver|stFeaturesOK)
	if st := d.status(); st&stFeaturesOK == 0 {
		return fmt.Errorf("%s: FEATURES_OK refused for features %#x (status %#x)", d.name, features, st)
	}
	return nil
}

// queueConfig is what the driver writes for one queue.
type queueConfig struct {
	size              uint32
	desc, avail, used uint64
}

// setupQueue configures queue idx and marks it ready.
func (d *device) setupQueue(idx uint32, q queueConfig) {
	d.w32(regQueueSel, idx)
	d.w32(regQueueNum, q.size)
	d.w32(regQueueDescLo, uint32(q.desc))
	d.w32(regQueueDescHi, uint32(q.desc>>32))
	d.w32(regQueueDriverLo, uint32(q.avail))
	d.w32(regQueueDriverHi, uint32(q.avail>>32))
	d.w32(regQueueDeviceLo, uint32(q.used))
	d.w32(regQueueDeviceHi, uint32(q.used>>32))
	d.w32(regQueueReady, 1)
}

func (d *device) driverOK()       { d.w32(regStatus, stAck|stDriver|stFeaturesOK|stDriverOK) }
func (d *device) kick(idx uint32) { d.w32(regQueueNotify, idx) }

// capacity reads virtio_blk_config.capacity (virtio v1.2 §5.2.4), in
// sectors.
func (d *device) capacity() uint64 {
	return uint64(d.r32(regConfig)) | uint64(d.r32(regConfig+4))<<32
}

// ring is a split virtqueue in DMA pages, written the way a driver
// writes it: descriptors, then the avail ring entry, then its index.
type ring struct {
	size        uint16
	desc        dmaPage // descriptor table at offset 0
	availOff    int     // in desc's page
	usedOff     int     // in desc's page
	nextAvail   uint16
	lastUsedIdx uint16
}

// Offsets of the rings in their page, aligned as §2.7 requires and
// apart for any size up to 64 (16*64 = 1 KiB of descriptors).
const (
	ringAvailOff = 0x400
	ringUsedOff  = 0x800
)

func newRing(page dmaPage, size uint16) *ring {
	clear(page.b)
	return &ring{size: size, desc: page, availOff: ringAvailOff, usedOff: ringUsedOff}
}

func (r *ring) config() queueConfig {
	return queueConfig{size: uint32(r.size), desc: r.desc.phys, avail: r.desc.phys + uint64(r.availOff), used: r.desc.phys + uint64(r.usedOff)}
}

// putDesc writes struct virtq_desc i of the table at b.
func putDesc(b []byte, i int, addr uint64, length uint32, flags, next uint16) {
	e := b[i*16 : i*16+16]
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], length)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

func (r *ring) setDesc(i int, addr uint64, length uint32, flags, next uint16) {
	putDesc(r.desc.b, i, addr, length, flags, next)
}

// descAt reads back descriptor i, so a case can corrupt one field of an
// honest chain and keep the others.
func (r *ring) descAt(i int) (addr uint64, length uint32, flags, next uint16) {
	e := r.desc.b[i*16 : i*16+16]
	return binary.LittleEndian.Uint64(e[0:]), binary.LittleEndian.Uint32(e[8:]),
		binary.LittleEndian.Uint16(e[12:]), binary.LittleEndian.Uint16(e[14:])
}

// offer makes head available and advances the avail index by step (1
// for an honest driver).
func (r *ring) offer(head uint16, step uint16) {
	a := r.desc.b[r.availOff:]
	binary.LittleEndian.PutUint16(a[4+2*int(r.nextAvail%r.size):], head)
	r.nextAvail += step
	binary.LittleEndian.PutUint16(a[2:], r.nextAvail)
}

func (r *ring) usedIdx() uint16 {
	return binary.LittleEndian.Uint16(r.desc.b[r.usedOff+2:])
}

// usedElem is used ring entry i: the chain head and the bytes written.
func (r *ring) usedElem(i uint16) (id, length uint32) {
	e := r.desc.b[r.usedOff+4+8*int(i%r.size):]
	return binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
}

// outcome is what a device did with a queue after a kick.
type outcome struct {
	used       bool // the used index moved
	needsReset bool // DEVICE_NEEDS_RESET was raised
}

func (o outcome) String() string {
	switch {
	case o.used && o.needsReset:
		return "completed and raised NEEDS_RESET"
	case o.used:
		return "completed"
	case o.needsReset:
		return "raised NEEDS_RESET"
	}
	return "did nothing"
}

// statusEvery is how many 1 ms polls of the used index (guest memory,
// free) wait makes between two reads of the status register (an exit to
// vmm each, which the emulator's guest crashes grow with).
const statusEvery = 8

// wait polls until the used index reaches target or the device raises
// NEEDS_RESET, for at most timeout. It waits for the exact index, not
// for any change: a request may scribble over the used ring before the
// device publishes the real index. It reads the status before the index:
// a device publishes what it completed before it fails, so an index read
// after NEEDS_RESET is final, where one read before could still be the
// scribble. The index alone is polled in between (statusEvery); once it
// reaches target, the status is read and the index read again after it.
func (r *ring) wait(d *device, target uint16, timeout time.Duration) outcome {
	deadline := time.Now().Add(timeout)
	for i := 0; ; i++ {
		if r.usedIdx() == target || i%statusEvery == 0 || time.Now().After(deadline) {
			needsReset := d.status()&stNeedsReset != 0
			o := outcome{used: r.usedIdx() == target, needsReset: needsReset}
			if o.used || o.needsReset || time.Now().After(deadline) {
				return o
			}
		}
		time.Sleep(time.Millisecond)
	}
}
