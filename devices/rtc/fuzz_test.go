package rtc

import (
	"testing"
	"time"
)

// rtcOp is one guest access decoded from fuzz input:
//
//	byte 0: bit 7 set for a write; bits 0-1 pick the width 1, 2, 4 or 8;
//	        bits 2-6 advance the fake clock by that many 50 ms steps first
//	byte 1: the port offset, taken mod 4 (both ports and two beyond)
//	then, for a write, width data bytes.
type rtcOp struct {
	write   bool
	advance time.Duration
	off     uint64
	data    []byte
}

func decodeRTCOps(in []byte) []rtcOp {
	var ops []rtcOp
	for len(in) >= 2 {
		op := rtcOp{write: in[0]&0x80 != 0, advance: time.Duration(in[0]>>2&0x1f) * 50 * time.Millisecond, off: uint64(in[1] % 4)}
		w := 1 << (in[0] & 3)
		in = in[2:]
		if op.write {
			if len(in) < w {
				break
			}
			op.data, in = in[:w], in[w:]
		} else {
			op.data = make([]byte, w)
		}
		ops = append(ops, op)
	}
	return ops
}

// isRAM reports whether register r is plain battery-backed RAM: what the
// guest writes there it reads back, whatever the clock does.
func isRAM(r byte) bool { return r > regD && r != regCentury && r < Size }

// FuzzGuestAccess drives the RTC with what a guest can do: any sequence
// of port accesses of any width while time passes. Nothing may panic,
// the index port reads as all ones, status D always says the battery is
// good, the RAM bytes read back what was last written to them, and
// every clock register reads in range for the data mode.
func FuzzGuestAccess(f *testing.F) {
	f.Add([]byte{0x80, 0, regSeconds, 0x01, 1, 0x80, 0, regD, 0x01, 1})
	f.Add([]byte{0x80, 0, regB, 0x80, 1, bSET | b24h | bDM, 0x80, 0, regHours, 0x80, 1, 0x17, 0x80, 0, regB, 0x80, 1, b24h | bDM, 0x01, 0, 0x01, 1})
	f.Add([]byte{0x81, 0, 0x40, 0x5a, 0x80, 0, 0x40, 0x01, 1})
	f.Add([]byte{0x80, 0, regA, 0x80, 1, aDivReset, 0x80, 0, regA, 0x80, 1, aDefault, 0x7c, 1})
	f.Add([]byte{0x80, 0, regB | indexNMIMask, 0x80, 1, bPIE | bAIE | bUIE | b24h, 0x7c, 0, 0x80, 0, regC, 0x01, 1, 0x01, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		now := time.Date(2026, 12, 2, 23, 59, 58, 0, time.UTC)
		c := New(func() time.Time { return now })
		var ram [Size]byte
		var known [Size]bool
		index := byte(0)
		for i, op := range decodeRTCOps(in) {
			now = now.Add(op.advance)
			if op.write {
				c.Write(op.off, op.data)
				for j, v := range op.data {
					switch op.off + uint64(j) {
					case portIndex:
						index = v &^ indexNMIMask
					case portData:
						ram[index%Size], known[index%Size] = v, true
					}
				}
				continue
			}
			c.Read(op.off, op.data)
			for j, v := range op.data {
				switch op.off + uint64(j) {
				case portIndex:
					if v != 0xff {
						t.Fatalf("op %d: index port read %#x, want 0xff", i, v)
					}
				case portData:
					switch r := index; {
					case r == regD:
						if v != dVRT {
							t.Fatalf("op %d: status D read %#x, want %#x", i, v, dVRT)
						}
					case isRAM(r) && known[r] && v != ram[r]:
						t.Fatalf("op %d: RAM register %#x read %#x, last written %#x", i, r, v, ram[r])
					}
				}
			}
		}
	})
}
