// The virtio-mmio transport (virtio v1.2 §4.2), modern interface
// (Version 2) only.
//
// vmm uses virtio-mmio rather than virtio-pci because it is the smallest
// transport a guest can discover without PCI: a device is a 512-byte
// register window plus one interrupt line, so there is no PCI host bridge,
// configuration space, capability list or BAR emulation to write. The
// machine describes each device to the guest in the ACPI DSDT as a
// LNRO0005 device with a Memory32Fixed (the window) and an Interrupt
// resource, which Linux's virtio_mmio driver binds to; the kernel command
// line alternative (virtio_mmio.device=) needs
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, which Debian's kernels lack.
//
// Queue notifications are register writes to QueueNotify; the machine
// catches them in the kernel with an ioeventfd on base+MMIOQueueNotify
// (datamatch = queue index), so a kick costs no exit to user space, and
// Write handles only the ones no ioeventfd caught. Interrupts go out on
// one edge-triggered line per device through an irqfd; InterruptStatus
// tells the driver why it fired.

package virtio

import (
	"encoding/binary"
	"fmt"
)

// MMIOSize is the size of one device's register window: the registers
// below MMIOConfig and a device-specific configuration space after them
// (virtio v1.2 §4.2.2). 0x100 bytes of configuration are more than
// virtio-blk (60) or virtio-net (24) have.
const MMIOSize = 0x200

// Register offsets within the window (virtio v1.2 §4.2.2, Table 4.1;
// Linux include/uapi/linux/virtio_mmio.h). Every register is 32 bits wide
// and little-endian.
const (
	MMIOMagicValue        = 0x000 // R: "virt"
	MMIOVersion           = 0x004 // R: 2, the modern interface
	MMIODeviceID          = 0x008 // R: the DeviceType
	MMIOVendorID          = 0x00c // R
	MMIODeviceFeatures    = 0x010 // R: word DeviceFeaturesSel of the offered features
	MMIODeviceFeaturesSel = 0x014 // W
	MMIODriverFeatures    = 0x020 // W: word DriverFeaturesSel of the accepted features
	MMIODriverFeaturesSel = 0x024 // W
	MMIOQueueSel          = 0x030 // W: the queue the Queue* registers address
	MMIOQueueNumMax       = 0x034 // R: 0 when that queue does not exist
	MMIOQueueNum          = 0x038 // W: the size the driver chose
	MMIOQueueReady        = 0x044 // RW
	MMIOQueueNotify       = 0x050 // W: the index of a queue with new buffers
	MMIOInterruptStatus   = 0x060 // R: InterruptUsedBuffer | InterruptConfigChange
	MMIOInterruptACK      = 0x064 // W: clears the bits written
	MMIOStatus            = 0x070 // RW: device status (§2.1); 0 resets
	MMIOQueueDescLow      = 0x080 // W: descriptor table address, bits 0-31
	MMIOQueueDescHigh     = 0x084 // W: bits 32-63
	MMIOQueueDriverLow    = 0x090 // W: available ring address
	MMIOQueueDriverHigh   = 0x094 // W
	MMIOQueueDeviceLow    = 0x0a0 // W: used ring address
	MMIOQueueDeviceHigh   = 0x0a4 // W
	MMIOSHMSel            = 0x0ac // W: shared memory region (none here)
	MMIOSHMLenLow         = 0x0b0 // R
	MMIOSHMLenHigh        = 0x0b4 // R
	MMIOSHMBaseLow        = 0x0b8 // R
	MMIOSHMBaseHigh       = 0x0bc // R
	MMIOQueueReset        = 0x0c0 // RW: only with VIRTIO_F_RING_RESET, not offered
	MMIOConfigGeneration  = 0x0fc // R: changes whenever the configuration may have changed (here: each reset)
	MMIOConfig            = 0x100 // device-specific configuration space
)

const (
	mmioMagic   = 0x74726976 // "virt" little-endian (virtio v1.2 §4.2.2)
	mmioVersion = 2          // the non-legacy interface (virtio v1.2 §4.2.2)
	// mmioVendor identifies vmm as the implementer: "VMM" in ASCII,
	// little-endian. The spec leaves vendor IDs free and Linux ignores it;
	// it only keeps vmm distinguishable from QEMU's "QEMU" (0x554d4551).
	mmioVendor = 0x004d4d56

	// Feature bits that change how the transport or the rings work and
	// that neither this transport nor Queue implement (virtio v1.2 §6): a
	// device offering them is refused by NewMMIO rather than silently
	// promising them to the driver.
	featureRingPacked       = 34 // VIRTIO_F_RING_PACKED
	featureNotificationData = 38 // VIRTIO_F_NOTIFICATION_DATA
	featureRingReset        = 40 // VIRTIO_F_RING_RESET

	// statusDriverBits are the status bits a driver may set (virtio v1.2
	// §2.1); DEVICE_NEEDS_RESET belongs to the device.
	statusDriverBits = StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusDriverOK | StatusFailed
)

// Kinds of guest mistakes, each logged at most once per transport so a
// guest cannot flood the host's log.
const (
	logWidth uint32 = 1 << iota
	logReadOnly
	logWriteOnly
	logNoQueue
	logQueueLocked
	logFeaturesLocked
	logFeaturesRefused
	logNotFeaturesOK
	logQueueSetup
	logActivate
	logFail
	logRoute
)

// MMIO is one device's virtio-mmio register window. It implements
// bus.Device.
type MMIO struct {
	transport
	irq Interrupt
}

// NewMMIO returns the transport for dev, with one notifier per queue
// (notifiers[i] for queue i). logf, which may be nil, reports guest
// mistakes and device failures; it should name the device.
func NewMMIO(dev Device, mem Memory, irq Interrupt, notifiers []Notifier, logf func(format string, args ...any)) (*MMIO, error) {
	if irq == nil {
		return nil, fmt.Errorf("virtio-mmio: nil interrupt")
	}
	t := &MMIO{irq: irq}
	if err := t.init("virtio-mmio", dev, mem, notifiers, logf, t.raiseLine); err != nil {
		return nil, err
	}
	return t, nil
}

// raiseLine is the transport's interrupt: the cause in InterruptStatus,
// then an edge on the device's line.
func (t *MMIO) raiseLine(cause uint32) {
	t.isr.Or(cause)
	t.irq.Trigger()
}

// Read implements bus.Device: off is within the window, len(data) the
// access width.
func (t *MMIO) Read(off uint64, data []byte) {
	clear(data)
	if off >= MMIOConfig {
		if t.configAccessOK(off, data) {
			t.dev.ReadConfig(off-MMIOConfig, data)
		}
		return
	}
	if !t.registerAccessOK(off, data) {
		return
	}
	binary.LittleEndian.PutUint32(data, t.readRegister(off))
}

// Write implements bus.Device.
func (t *MMIO) Write(off uint64, data []byte) {
	if off >= MMIOConfig {
		if t.configAccessOK(off, data) {
			t.dev.WriteConfig(off-MMIOConfig, data)
		}
		return
	}
	if !t.registerAccessOK(off, data) {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	// The two registers the hot path writes need no lock: the notifiers
	// are fixed and the interrupt status is atomic.
	switch off {
	case MMIOQueueNotify:
		t.notify(v)
		return
	case MMIOInterruptACK:
		t.isr.And(^v)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.writeRegister(off, v)
	}
}

// registerAccessOK enforces virtio v1.2 §4.2.2.2: the driver accesses
// the registers only 32 bits wide and aligned.
func (t *MMIO) registerAccessOK(off uint64, data []byte) bool {
	if len(data) == 4 && off%4 == 0 {
		return true
	}
	t.logOnce(logWidth, "%d-byte access at register offset %#x ignored: registers are 32-bit", len(data), off)
	return false
}

// configAccessOK allows the widths virtio v1.2 §4.2.2.2 allows for the
// configuration space, wholly inside the window.
func (t *MMIO) configAccessOK(off uint64, data []byte) bool {
	n := uint64(len(data))
	if (n == 1 || n == 2 || n == 4 || n == 8) && off < MMIOSize && n <= MMIOSize-off {
		return true
	}
	t.logOnce(logWidth, "%d-byte access at config offset %#x ignored", len(data), off)
	return false
}

func (t *MMIO) readRegister(off uint64) uint32 {
	switch off {
	case MMIOMagicValue:
		return mmioMagic
	case MMIOVersion:
		return mmioVersion
	case MMIODeviceID:
		return uint32(t.dev.Type())
	case MMIOVendorID:
		return mmioVendor
	case MMIOInterruptStatus:
		return t.isr.Load()
	case MMIOConfigGeneration:
		return t.configGen.Load()
	case MMIOSHMLenLow, MMIOSHMLenHigh:
		// A length of all ones says the selected region does not exist
		// (virtio v1.2 §4.2.2): vmm has no shared memory regions.
		return 0xffffffff
	case MMIOSHMBaseLow, MMIOSHMBaseHigh, MMIOQueueReset:
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch off {
	case MMIODeviceFeatures:
		return t.deviceFeatureWord()
	case MMIOQueueNumMax:
		if t.queueSel < uint32(len(t.queues)) {
			return uint32(t.queues[t.queueSel].Max())
		}
		return 0
	case MMIOQueueReady:
		if t.queueSel < uint32(len(t.qregs)) && t.qregs[t.queueSel].ready {
			return 1
		}
		return 0
	case MMIOStatus:
		return t.readStatus()
	}
	t.logOnce(logWriteOnly, "read of write-only or reserved register %#x", off)
	return 0
}

// writeRegister handles every register but QueueNotify and
// InterruptACK; t.mu is held.
func (t *MMIO) writeRegister(off uint64, v uint32) {
	switch off {
	case MMIODeviceFeaturesSel:
		t.deviceFeaturesSel = v
	case MMIODriverFeaturesSel:
		t.driverFeaturesSel = v
	case MMIODriverFeatures:
		t.writeDriverFeatures(v)
	case MMIOQueueSel:
		t.queueSel = v
	case MMIOStatus:
		t.writeStatus(v)
	case MMIOQueueNum, MMIOQueueReady,
		MMIOQueueDescLow, MMIOQueueDescHigh,
		MMIOQueueDriverLow, MMIOQueueDriverHigh,
		MMIOQueueDeviceLow, MMIOQueueDeviceHigh:
		t.writeQueue(mmioQueueField(off), v)
	case MMIOSHMSel:
		// Every region reads as absent whatever is selected.
	default:
		t.logOnce(logReadOnly, "write of %#x to read-only or reserved register %#x ignored", v, off)
	}
}

// mmioQueueField maps a queue register onto the transport's field.
func mmioQueueField(off uint64) queueField {
	switch off {
	case MMIOQueueNum:
		return qfNum
	case MMIOQueueReady:
		return qfReady
	case MMIOQueueDescLow:
		return qfDescLow
	case MMIOQueueDescHigh:
		return qfDescHigh
	case MMIOQueueDriverLow:
		return qfDriverLow
	case MMIOQueueDriverHigh:
		return qfDriverHigh
	case MMIOQueueDeviceLow:
		return qfDeviceLow
	}
	return qfDeviceHigh
}
