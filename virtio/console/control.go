package console

import (
	"encoding/binary"

	"github.com/vmm-dev/vmm/virtio"
)

// Control events (virtio v1.2 §5.3.6.2; Linux's
// include/uapi/linux/virtio_console.h spells DEVICE_ADD as PORT_ADD).
const (
	eventDeviceReady = 0 // driver: the device is set up (value 1) or failed (0)
	eventDeviceAdd   = 1 // device: a port with this id exists
	eventPortReady   = 3 // driver: the port is set up (value 1) or failed (0)
	eventPortOpen    = 6 // either side: the port is open (value 1) or closed (0)
	eventPortName    = 7 // device: the port's name follows the header
)

// controlLen is struct virtio_console_control: le32 id, le16 event, le16
// value (§5.3.6.2). A PORT_NAME message carries the name after it.
const controlLen = 8

// badID is VIRTIO_CONSOLE_BAD_ID, the id the driver puts in DEVICE_READY,
// which is about no port.
const badID = 0xffffffff

// control is one control message.
type control struct {
	id    uint32
	event uint16
	value uint16
}

// parseControl reads the control message at the start of a chain's
// readable buffers. A driver's message is exactly controlLen bytes; a
// shorter one is no message (ok false), and bytes after it are ignored.
func parseControl(b virtio.Buffers) (c control, ok bool) {
	var raw [controlLen]byte
	if n, _ := b.ReadAt(raw[:], 0); n < controlLen {
		return control{}, false
	}
	return control{
		id:    binary.LittleEndian.Uint32(raw[0:]),
		event: binary.LittleEndian.Uint16(raw[4:]),
		value: binary.LittleEndian.Uint16(raw[6:]),
	}, true
}

// appendControl appends c's wire form, then extra (a port's name), to b.
func appendControl(b []byte, c control, extra string) []byte {
	b = binary.LittleEndian.AppendUint32(b, c.id)
	b = binary.LittleEndian.AppendUint16(b, c.event)
	b = binary.LittleEndian.AppendUint16(b, c.value)
	return append(b, extra...)
}

// reply is what the device answers a driver's control message with, for
// a device whose one port, id 0, is called name and whose host side is
// open or not (§5.3.6.2.1, the device's side of port discovery):
// DEVICE_READY is answered with the port's DEVICE_ADD; the port's
// PORT_READY with PORT_OPEN, then its name. Everything else (a failure
// report, the guest opening or closing the port, an event for another
// id, events only a device sends) needs no answer. After a snapshot is
// restored the driver remembers the port and the device need not.
//
// PORT_OPEN comes before PORT_NAME because Linux's driver starts a port
// with its host side closed (add_port), where a read returns end of
// file, and the guest's init finds the port by the name that PORT_NAME
// makes appear in sysfs: in the other order it could read its input's
// end before the input began.
func reply(c control, name string, hostOpen bool) [][]byte {
	switch {
	case c.event == eventDeviceReady && c.value == 1:
		return [][]byte{appendControl(nil, control{id: portID, event: eventDeviceAdd}, "")}
	case c.event == eventPortReady && c.id == portID && c.value == 1:
		open := uint16(0)
		if hostOpen {
			open = 1
		}
		return [][]byte{
			appendControl(nil, control{id: portID, event: eventPortOpen, value: open}, ""),
			appendControl(nil, control{id: portID, event: eventPortName}, name),
		}
	}
	return nil
}
