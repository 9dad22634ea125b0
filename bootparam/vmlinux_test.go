package bootparam

import (
	"bytes"
	"encoding/binary"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"reflect"
	"testing"
)

func TestCompressedKernel(t *testing.T) {
	payload := func(off, n uint32) []func([]byte) {
		return []func([]byte){put32(offPayloadOffset, off), put32(offPayloadLength, n)}
	}
	for _, tc := range []struct {
		name    string
		edits   []func([]byte)
		off, n  int // the expected slice of Payload
		wantErr string
	}{
		{name: "middle", edits: payload(0x10, 0x20), off: 0x10, n: 0x20},
		{name: "whole", edits: payload(0, testPayloadSize), off: 0, n: testPayloadSize},
		{name: "last byte", edits: payload(testPayloadSize-1, 1), off: testPayloadSize - 1, n: 1},
		{name: "none", edits: payload(0, 0), wantErr: "setup header has no compressed payload (payload_length is 0)"},
		{name: "past end", edits: payload(1, testPayloadSize), wantErr: "compressed payload at offset 0x1 (1024 bytes) runs past the 1024-byte protected-mode kernel"},
		{name: "offset wraps 32 bits", edits: payload(0xffffffff, 2), wantErr: "compressed payload at offset 0xffffffff (2 bytes) runs past the 1024-byte protected-mode kernel"},
		{name: "protocol 2.07", edits: append(payload(0, 4), put16(offVersion, 0x0207), headerEnd(0x248)), wantErr: "boot protocol 2.07 has no payload_offset (added in 2.08)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKernel(testImage(tc.edits...))
			if err != nil {
				t.Fatal(err)
			}
			got, err := k.CompressedKernel()
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, k.Payload[tc.off:tc.off+tc.n]) || len(got) != tc.n {
				t.Errorf("got %d bytes, want Payload[0x%x:0x%x]", len(got), tc.off, tc.off+tc.n)
			}
		})
	}
	// A Kernel built by hand with a short header is refused, not read
	// out of bounds.
	k := &Kernel{Protocol: 0x020f, Header: make([]byte, 0x10), Payload: make([]byte, 16)}
	if _, err := k.CompressedKernel(); err == nil {
		t.Error("accepted a 16-byte header")
	}
}

func TestCompressedRealKernel(t *testing.T) {
	k, err := ParseKernel(testkernel.RealCloud(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.CompressedKernel()
	if err != nil {
		t.Fatal(err)
	}
	// Debian's kernels are LZ4 (legacy frame, magic 0x184C2102), followed
	// by the decompressed size, le32 (scripts/Makefile.lib, size_append).
	if !bytes.HasPrefix(c, []byte{0x02, 0x21, 0x4c, 0x18}) {
		t.Errorf("payload starts % x, want the LZ4 legacy magic", c[:4])
	}
	if n := binary.LittleEndian.Uint32(c[len(c)-4:]); n < 10<<20 || n > 200<<20 {
		t.Errorf("size trailer says %d bytes", n)
	}
}

func TestVmlinuxKernel(t *testing.T) {
	k := VmlinuxKernel()
	// The made-up header must be one ParseKernel reads back the same way,
	// so both paths agree on what the zero page carries.
	img := make([]byte, 5*sectorSize+16)
	copy(img[offSetupHeader:], k.Header)
	img[offSetupSects] = 4
	parsed, err := ParseKernel(img)
	if err != nil {
		t.Fatal(err)
	}
	parsed.SetupSects, parsed.Payload, k.Payload = 0, nil, nil
	parsed.Header[0] = 0 // setup_sects, which the file needs and the zero page ignores
	if !reflect.DeepEqual(parsed, k) {
		t.Errorf("ParseKernel of the header gives\n%+v\nVmlinuxKernel gives\n%+v", *parsed, *k)
	}
	if !k.Supports64BitEntry() || !k.CanLoadAbove4G() {
		t.Error("made-up header lacks the 64-bit entry or loading above 4 GiB")
	}
	zp, err := k.BootParams(Params{CmdlineAddr: 0x20000, Cmdline: "console=ttyS0", E820: testE820(),
		InitrdAddr: 0x4000000, InitrdSize: 0x100000})
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if le.Uint16(zp[offRootFlags:]) != rootReadOnly || le.Uint32(zp[offHeaderMagic:]) != headerMagic ||
		le.Uint16(zp[offVersion:]) != 0x020f || le.Uint32(zp[offCmdLinePtr:]) != 0x20000 {
		t.Error("zero page lacks the made-up header's fields")
	}
	if _, err := k.CompressedKernel(); err == nil {
		t.Error("a bare vmlinux claims a compressed payload")
	}
}
