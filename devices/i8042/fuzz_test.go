package i8042

import "testing"

// FuzzGuestAccess drives the controller with any sequence of port
// accesses (byte 0: bit 7 write, bits 0-1 width 1/2/4/8; byte 1: offset
// mod 6; then the data of a write). Nothing may panic; the status port
// never shows the input buffer full (every wait-for-IBF loop, reboot's
// included, must end at once); and reset is requested only by a write
// that can carry it: a pulse command on the command port, or a data byte
// after "write output port".
func FuzzGuestAccess(f *testing.F) {
	f.Add([]byte{0x80, portStatus, 0xfe})
	f.Add([]byte{0x80, portStatus, cmdWriteOutput, 0x80, portData, 0x00})
	f.Add([]byte{0x80, portStatus, cmdSelfTest, 0x00, portStatus, 0x00, portData})
	f.Add([]byte{0x80, portStatus, cmdWriteRAM, 0x80, portData, 0x47, 0x80, portStatus, cmdReadRAM, 0x00, portData})
	f.Add([]byte{0x82, portData, 0xd1, 0x00, 0xfe, 0xff, 0x01, 0x03})
	f.Fuzz(func(t *testing.T, in []byte) {
		resets := 0
		c := New(func() { resets++ })
		for len(in) >= 2 {
			write, w, off := in[0]&0x80 != 0, 1<<(in[0]&3), uint64(in[1]%6)
			in = in[2:]
			if !write {
				data := make([]byte, w)
				c.Read(off, data)
				for j, v := range data {
					if off+uint64(j) == portStatus && v&statusIBF != 0 {
						t.Fatalf("status %#x has IBF set", v)
					}
				}
				continue
			}
			if len(in) < w {
				return
			}
			data := in[:w]
			in = in[w:]
			couldReset := false
			pending := c.pending
			for j, v := range data {
				switch off + uint64(j) {
				case portStatus:
					couldReset = couldReset || (v >= cmdPulse && v&outReset == 0)
					pending = v
				case portData:
					couldReset = couldReset || (pending == cmdWriteOutput && v&outReset == 0)
					pending = 0
				}
			}
			before := resets
			c.Write(off, data)
			if got := resets - before; got > 1 || (got == 1) != couldReset {
				t.Fatalf("write %x at %d: %d resets, want reset %v", data, off, got, couldReset)
			}
		}
	})
}
