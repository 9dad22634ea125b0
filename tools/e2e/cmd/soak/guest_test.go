package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Each encoder against the bytes the Intel SDM gives for that form (and
// that objdump decodes back to the same instruction).
func TestEncodings(t *testing.T) {
	tests := []struct {
		name string
		emit func(a *asm)
		want []byte
	}{
		{"mov ebx, 0xd0000000", func(a *asm) { a.movEBX(0xd0000000) }, []byte{0xbb, 0x00, 0x00, 0x00, 0xd0}},
		{"mov edi, 0x200000", func(a *asm) { a.movEDI(0x200000) }, []byte{0xbf, 0x00, 0x00, 0x20, 0x00}},
		{"mov al, 0xe1", func(a *asm) { a.movAL(0xe1) }, []byte{0xb0, 0xe1}},
		{"mov dword [rbx+0x70], 0xb", func(a *asm) { a.storeRBX(0x70, 0xb) }, []byte{0xc7, 0x83, 0x70, 0, 0, 0, 0x0b, 0, 0, 0}},
		{"mov dword [rdi+0xc], 0x10001", func(a *asm) { a.storeRDI(0xc, 0x10001) }, []byte{0xc7, 0x87, 0x0c, 0, 0, 0, 0x01, 0, 0x01, 0}},
		{"mov word [rdi+0x1002], 1", func(a *asm) { a.storeWordRDI(0x1002, 1) }, []byte{0x66, 0xc7, 0x87, 0x02, 0x10, 0, 0, 0x01, 0}},
		{"mov byte [rdi+0x3200], 0xff", func(a *asm) { a.storeByteRDI(0x3200, 0xff) }, []byte{0xc6, 0x87, 0x00, 0x32, 0, 0, 0xff}},
		{"mov eax, [rbx+0x8]", func(a *asm) { a.loadEAXFromRBX(8) }, []byte{0x8b, 0x83, 0x08, 0, 0, 0}},
		{"movzx eax, word [rdi+0x2002]", func(a *asm) { a.loadWordRDI(0x2002) }, []byte{0x0f, 0xb7, 0x87, 0x02, 0x20, 0, 0}},
		{"movzx eax, byte [rdi+0x4000]", func(a *asm) { a.loadByteRDI(0x4000) }, []byte{0x0f, 0xb6, 0x87, 0x00, 0x40, 0, 0}},
		{"cmp eax, 1", func(a *asm) { a.cmpEAX(1) }, []byte{0x3d, 1, 0, 0, 0}},
		{"test eax, 8", func(a *asm) { a.testEAX(8) }, []byte{0xa9, 8, 0, 0, 0}},
		{"pause", func(a *asm) { a.pause() }, []byte{0xf3, 0x90}},
		{"out 0xf4, al; hlt", func(a *asm) { a.exitAL() }, []byte{0xe6, 0xf4, 0xf4}},
		// A backward jump to itself: rel32 = -6, the jump's own length.
		{"l: jne l", func(a *asm) { a.label("l"); a.jne("l") }, []byte{0x0f, 0x85, 0xfa, 0xff, 0xff, 0xff}},
		// A forward jump over a pause.
		{"je l; pause; l:", func(a *asm) { a.je("l"); a.pause(); a.label("l") }, []byte{0x0f, 0x84, 0x02, 0, 0, 0, 0xf3, 0x90}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a asm
			tt.emit(&a)
			if got := a.finish(); !bytes.Equal(got, tt.want) {
				t.Errorf("got % x, want % x", got, tt.want)
			}
		})
	}
}

// The guest's happy path ends by writing the disk's first byte to the
// exit port, and every failure path writes its own code there.
func TestGuestCodeShape(t *testing.T) {
	code := guestCode()
	// The data byte goes out right after it is loaded.
	load := []byte{0x0f, 0xb6, 0x87}
	load = binary.LittleEndian.AppendUint32(load, dataOff)
	load = append(load, 0xe6, exitPort, 0xf4)
	if !bytes.Contains(code, load) {
		t.Errorf("no movzx eax, byte [rdi+dataOff]; out 0xf4, al in % x", code)
	}
	for _, c := range []byte{failMagic, failDevice, failFeatures, failRequest} {
		if !bytes.Contains(code, []byte{0xb0, c, 0xe6, exitPort, 0xf4}) {
			t.Errorf("no exit with status %#x", c)
		}
	}
}
