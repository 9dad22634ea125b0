package pm

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// pmOp is one guest access decoded from fuzz input:
//
//	byte 0: bit 7 set for a write; bits 0-1 pick the width 1, 2, 4 or 8
//	byte 1: offset; below 0xF0 it is taken mod 20 (the block plus a
//	        little beyond), from 0xF0 up it counts back from 2^64 so
//	        accesses that wrap the offset are exercised too
//	then, for a write, width data bytes.
type pmOp struct {
	write bool
	off   uint64
	data  []byte
}

func decodeOps(in []byte) []pmOp {
	var ops []pmOp
	for len(in) >= 2 {
		op := pmOp{write: in[0]&0x80 != 0}
		w := 1 << (in[0] & 3)
		if in[1] < 0xf0 {
			op.off = uint64(in[1] % 20)
		} else {
			op.off = ^uint64(0) - uint64(0xff-in[1])
		}
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

// covers reports the byte op writes at block offset a, if it does.
func (op pmOp) covers(a uint64) (byte, bool) {
	if a < op.off || a-op.off >= uint64(len(op.data)) {
		return 0, false
	}
	return op.data[a-op.off], true
}

func snapshot(p *PM) [Size]byte {
	var s [Size]byte
	for i := range s {
		p.Read(uint64(i), s[i:i+1])
	}
	return s
}

func FuzzPM(f *testing.F) {
	f.Add([]byte{0x81, 0x00, 0x00, 0x80, 0x81, 0x00, 0xff, 0xff, 0x01, 0x04, 0x81, 0x04, 0x01, 0x14, 0x81, 0x04, 0x01, 0x34})
	f.Add([]byte{0x80, 0x04, 0x01, 0x80, 0x05, 0x34})
	f.Add([]byte{0x80, 0x08, ResetValue, 0x81, 0x07, 0x00, ResetValue})
	f.Add([]byte{0x82, 0x02, 0x20, 0x01, 0x00, 0x34, 0x03, 0x0c})
	f.Add([]byte{0x83, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 0x03, 0xfd})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, off, rst := newTestPM()
		p.sts = pm1StsMask // pending events, so W1C has work to do
		for i, op := range decodeOps(in) {
			before := snapshot(p)
			offs, rsts := off.get(), rst.get()
			if op.write {
				p.Write(op.off, op.data)
			} else {
				p.Read(op.off, op.data)
				// A wide read is the same bytes as narrow ones.
				for j, b := range op.data {
					a := op.off + uint64(j)
					want := byte(0)
					if a >= op.off && a < Size {
						want = before[a]
					}
					if b != want {
						t.Fatalf("op %d: read of %d at %#x: byte %d = %#x, want %#x", i, len(op.data), op.off, j, b, want)
					}
				}
			}
			after := snapshot(p)

			// Fixed bits hold whatever was written.
			if after[4]&tSCIEn == 0 {
				t.Fatalf("op %d: SCI_EN reads 0", i)
			}
			if after[5]&(tSlpEn>>8) != 0 {
				t.Fatalf("op %d: write-only SLP_EN reads 1", i)
			}
			if !bytes.Equal(after[6:], make([]byte, Size-6)) {
				t.Fatalf("op %d: reserved bytes read % x", i, after[6:])
			}
			sts := binary.LittleEndian.Uint16(after[0:])
			if sts&^pm1StsMask != 0 || sts&^binary.LittleEndian.Uint16(before[0:]) != 0 {
				t.Fatalf("op %d: PM1 status went from %#x to %#x; it may only clear", i, binary.LittleEndian.Uint16(before[0:]), sts)
			}
			if en := binary.LittleEndian.Uint16(after[2:]); en&^pm1EnMask != 0 {
				t.Fatalf("op %d: PM1 enable %#x has undefined bits", i, en)
			}
			if !op.write && after != before {
				t.Fatalf("op %d: a read changed the registers", i)
			}

			// Callbacks fire exactly for the requests the op made.
			wantOff, wantRst := int32(0), int32(0)
			if op.write {
				if v, ok := op.covers(5); ok && v&(tSlpEn>>8) != 0 && (v>>2)&7 == SleepTypeS5 {
					wantOff = 1
				}
				if v, ok := op.covers(8); ok && v == ResetValue {
					wantRst = 1
				}
			}
			if d := off.get() - offs; d != wantOff {
				t.Fatalf("op %d (%+v): %d poweroffs, want %d", i, op, d, wantOff)
			}
			if d := rst.get() - rsts; d != wantRst {
				t.Fatalf("op %d (%+v): %d resets, want %d", i, op, d, wantRst)
			}
		}
	})
}
