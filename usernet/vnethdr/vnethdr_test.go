package vnethdr

import (
	"encoding/binary"
	"testing"
)

// header returns a header asking for a checksum at start+offset.
func header(start, offset uint16) []byte {
	h := make([]byte, Len)
	h[OffFlags] = FNeedsCsum
	binary.LittleEndian.PutUint16(h[OffCsumStart:], start)
	binary.LittleEndian.PutUint16(h[OffCsumOffset:], offset)
	return h
}

// valid reports whether the 16-bit one's complement sum of b and pseudo
// is all ones, as RFC 1071 wants of data that holds its correct checksum
// (pseudo being the pseudo-header's share, which the checksum field held
// before it was finished).
func valid(b []byte, pseudo uint16) bool {
	sum := uint64(pseudo)
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint64(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}

func TestFinishChecksum(t *testing.T) {
	for _, tc := range []struct {
		name          string
		size          int
		start, offset uint16
		hdrLen        int
		ok            bool
	}{
		{"even frame", 80, 34, 16, Len, true},
		{"odd frame", 81, 34, 16, Len, true},
		{"field last in the frame", 36, 20, 14, Len, true},
		{"field one byte past the end", 35, 20, 14, Len, false},
		{"start beyond the frame", 80, 200, 0, Len, false},
		{"largest offsets", 80, 0xffff, 0xffff, Len, false},
		{"short header", 80, 34, 16, Len - 1, false},
		{"64 KiB of 0xff", 1 << 16, 0, 0, Len, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := make([]byte, tc.size)
			for i := range f {
				f[i] = byte(i*7 + 3)
				if tc.size == 1<<16 {
					f[i] = 0xff
				}
			}
			at := int(tc.start) + int(tc.offset)
			if at+2 <= len(f) {
				binary.BigEndian.PutUint16(f[at:], 0x1234) // as if the pseudo-header's sum
			}
			before := append([]byte(nil), f...)
			h := header(tc.start, tc.offset)[:tc.hdrLen]
			if got := FinishChecksum(f, h); got != tc.ok {
				t.Fatalf("FinishChecksum = %v, want %v", got, tc.ok)
			}
			if !tc.ok {
				if string(f) != string(before) {
					t.Errorf("the frame changed although FinishChecksum failed")
				}
				return
			}
			if !valid(f[tc.start:], 0x1234) {
				t.Errorf("checksum %#04x does not complete the sum", binary.BigEndian.Uint16(f[at:]))
			}
			if string(f[:tc.start]) != string(before[:tc.start]) {
				t.Errorf("bytes before csum_start changed")
			}
		})
	}
}

func FuzzFinishChecksum(f *testing.F) {
	f.Add(make([]byte, 80), uint16(34), uint16(16))
	f.Add(make([]byte, 3), uint16(0), uint16(1))
	f.Add([]byte{}, uint16(0xffff), uint16(0xffff))
	f.Fuzz(func(t *testing.T, frame []byte, start, offset uint16) {
		at := int(start) + int(offset)
		var pseudo uint16
		if at+2 <= len(frame) {
			pseudo = binary.BigEndian.Uint16(frame[at:])
		}
		before := string(frame)
		ok := FinishChecksum(frame, header(start, offset))
		if !ok && string(frame) != before {
			t.Fatalf("the frame changed although FinishChecksum failed")
		}
		if want := int(start)+int(offset)+2 <= len(frame); ok != want {
			t.Fatalf("FinishChecksum(%d bytes, %d, %d) = %v, want %v", len(frame), start, offset, ok, want)
		}
		// A field at an odd distance from csum_start straddles two of
		// the sum's 16-bit words: no protocol puts one there, and what
		// is stored then is only promised to stay inside the frame.
		if ok && offset%2 == 0 && !valid(frame[start:], pseudo) {
			t.Fatalf("checksum does not complete the sum")
		}
	})
}
