package console

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// FuzzControl feeds the device's control transmit queue whatever a guest
// driver could put there, cut into two buffers anywhere, and checks that
// the device never fails or panics and only ever answers with its own
// port's messages, one per buffer.
func FuzzControl(f *testing.F) {
	msg := func(id uint32, event, value uint16) []byte {
		return appendControl(nil, control{id: id, event: event, value: value}, "")
	}
	f.Add(msg(badID, eventDeviceReady, 1), uint8(0))
	f.Add(msg(portID, eventPortReady, 1), uint8(3))
	f.Add(msg(portID, eventPortOpen, 1), uint8(8))
	f.Add(append(msg(portID, eventPortReady, 1), "trailing"...), uint8(2))
	f.Add([]byte{1, 2, 3}, uint8(1))
	f.Add(msg(7, eventPortReady, 1), uint8(4))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		var out bytes.Buffer
		d, err := New("vmm.job-stdout", &out)
		if err != nil {
			t.Fatal(err)
		}
		r := newRig(t, d, cut%2 == 0)
		r.post(t, 4)
		at := min(int(cut), len(data))
		bufs := []virtiotest.Buf{virtiotest.R(data[:at]), virtiotest.R(data[at:])}
		if _, err := r.drv[queueCtrlTx].Add(bufs...); err != nil {
			t.Fatal(err)
		}
		r.n[queueCtrlTx].Signal()
		r.settle(t)
		select {
		case err := <-r.failed:
			t.Fatalf("device failed: %v", err)
		default:
		}
		for {
			head, n, ok := r.drv[queueCtrlRx].Used()
			if !ok {
				break
			}
			b := r.drv[queueCtrlRx].WrittenBytes(head, n)
			if len(b) < controlLen || binary.LittleEndian.Uint32(b) != portID {
				t.Fatalf("answer %x", b)
			}
			switch ev := binary.LittleEndian.Uint16(b[4:]); ev {
			case eventDeviceAdd, eventPortOpen:
				if len(b) != controlLen {
					t.Fatalf("answer %x", b)
				}
			case eventPortName:
				if string(b[controlLen:]) != "vmm.job-stdout" {
					t.Fatalf("name %q", b[controlLen:])
				}
			default:
				t.Fatalf("answer with event %d", ev)
			}
		}
		if out.Len() != 0 {
			t.Fatalf("control messages reached the port's output: %q", out.Bytes())
		}
	})
}
