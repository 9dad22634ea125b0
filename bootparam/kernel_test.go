package bootparam

import (
	"encoding/binary"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"reflect"
	"strings"
	"testing"
)

const (
	testSetupSects  = 4
	testPayloadSize = 1024
	testImageSize   = (testSetupSects+1)*sectorSize + testPayloadSize
)

// testImage builds the smallest bzImage ParseKernel accepts, modelled on a
// current x86-64 kernel (protocol 2.15), then applies edits in order.
func testImage(edits ...func(img []byte)) []byte {
	le := binary.LittleEndian
	img := make([]byte, testImageSize)
	img[offSetupSects] = testSetupSects
	le.PutUint32(img[offSyssize:], testPayloadSize/16)
	le.PutUint16(img[offBootFlag:], bootFlagMagic)
	img[offJump] = shortJumpOp
	img[offJump+1] = 0x26c - (offJump + 2)
	copy(img[offHeaderMagic:], "HdrS")
	le.PutUint16(img[offVersion:], 0x020f)
	img[offLoadFlags] = LoadedHigh | CanUseHeap
	le.PutUint32(img[offCode32Start:], DefaultLoadAddress)
	le.PutUint32(img[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(img[offKernelAlignment:], 0x200000)
	img[offRelocatable] = 1
	le.PutUint16(img[offXLoadFlags:], XLFKernel64|XLFCanBeLoadedAbove4G)
	le.PutUint32(img[offCmdlineSize:], 2047)
	le.PutUint64(img[offPrefAddress:], 0x1000000)
	le.PutUint32(img[offInitSize:], 0x2000000)
	for i := range testPayloadSize {
		img[(testSetupSects+1)*sectorSize+i] = byte(i)
	}
	for _, e := range edits {
		e(img)
	}
	return img
}

func put8(off int, v uint8) func([]byte) { return func(b []byte) { b[off] = v } }
func put16(off int, v uint16) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint16(b[off:], v) }
}
func put32(off int, v uint32) func([]byte) {
	return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
}
func headerEnd(end int) func([]byte) { return put8(offJump+1, uint8(end-(offJump+2))) }

func TestParseKernelValid(t *testing.T) {
	img := testImage()
	k, err := ParseKernel(img)
	if err != nil {
		t.Fatal(err)
	}
	want := Kernel{
		Protocol: 0x020f, SetupSects: 4, LoadFlags: LoadedHigh | CanUseHeap,
		XLoadFlags: XLFKernel64 | XLFCanBeLoadedAbove4G, Relocatable: true,
		KernelAlignment: 0x200000, PrefAddress: 0x1000000, InitSize: 0x2000000,
		InitrdAddrMax: 0x7fffffff, CmdlineSize: 2047, Code32Start: 0x100000,
	}
	got := *k
	got.Header, got.Payload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if string(k.Header) != string(img[0x1f1:0x26c]) {
		t.Errorf("Header is img[0x1f1:0x1f1+%d], want img[0x1f1:0x26c]", len(k.Header))
	}
	if string(k.Payload) != string(img[5*512:]) {
		t.Errorf("Payload has %d bytes, want the %d after the setup", len(k.Payload), testPayloadSize)
	}
	if !k.Supports64BitEntry() || !k.CanLoadAbove4G() {
		t.Errorf("Supports64BitEntry=%v CanLoadAbove4G=%v, want both true", k.Supports64BitEntry(), k.CanLoadAbove4G())
	}
	// Header must not alias the input: the caller may reuse its buffer.
	img[offSetupHeader+1] ^= 0xff
	if k.Header[1] == img[offSetupHeader+1] {
		t.Error("Header aliases the input image")
	}
}

func TestParseKernelDefaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits []func([]byte)
		check func(*Kernel) string
	}{
		{"setup_sects 0 means 4", []func([]byte){put8(offSetupSects, 0)}, func(k *Kernel) string {
			if k.SetupSects != 0 || len(k.Payload) != testPayloadSize {
				return "payload does not start after 4 setup sectors"
			}
			return ""
		}},
		{"initrd_addr_max 0", []func([]byte){put32(offInitrdAddrMax, 0)}, func(k *Kernel) string {
			if k.InitrdAddrMax != 0x37ffffff {
				return "InitrdAddrMax not defaulted to 0x37ffffff"
			}
			return ""
		}},
		{"pref_address 0", []func([]byte){put32(offPrefAddress, 0)}, func(k *Kernel) string {
			if k.PrefAddress != DefaultLoadAddress {
				return "PrefAddress not defaulted"
			}
			return ""
		}},
		{"protocol 2.06 ignores later fields", []func([]byte){put16(offVersion, 0x0206), headerEnd(0x23c)}, func(k *Kernel) string {
			if k.XLoadFlags != 0 || k.Supports64BitEntry() || k.CanLoadAbove4G() || k.PrefAddress != DefaultLoadAddress || k.InitSize != 0 || len(k.Header) != 0x23c-0x1f1 {
				return "fields beyond protocol 2.06 were read"
			}
			return ""
		}},
		{"protocol 2.11 has no xloadflags", []func([]byte){put16(offVersion, 0x020b)}, func(k *Kernel) string {
			if k.Supports64BitEntry() || k.InitSize != 0x2000000 {
				return "2.11 treated like 2.12, or init_size lost"
			}
			return ""
		}},
		{"32-bit only kernel", []func([]byte){put16(offXLoadFlags, 0)}, func(k *Kernel) string {
			if k.Supports64BitEntry() {
				return "64-bit entry without XLF_KERNEL_64"
			}
			return ""
		}},
		{"header up to boot_params limit", []func([]byte){headerEnd(setupHeaderLimit)}, func(k *Kernel) string {
			if len(k.Header) != setupHeaderLimit-offSetupHeader {
				return "wrong header length"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKernel(testImage(tc.edits...))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(k); msg != "" {
				t.Errorf("%s: %+v", msg, *k)
			}
		})
	}
}

func TestParseKernelTruncated(t *testing.T) {
	img := testImage()
	for n := range len(img) {
		_, err := ParseKernel(img[:n])
		if err == nil {
			t.Fatalf("ParseKernel accepted the image cut to %d of %d bytes", n, len(img))
		}
		if !strings.HasPrefix(err.Error(), "truncated bzImage: ") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("cut to %d bytes: error %q, want one line starting with \"truncated bzImage: \"", n, err)
		}
	}
}

func TestParseKernelInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits []func([]byte)
		want  string
	}{
		{"boot_flag", []func([]byte){put16(offBootFlag, 0x55aa)}, "not a Linux bzImage: boot_flag at 0x1fe is 0x55aa, want 0xaa55"},
		{"HdrS", []func([]byte){put32(offHeaderMagic, 0)}, "not a Linux bzImage: missing HdrS magic at 0x202"},
		{"protocol 2.05", []func([]byte){put16(offVersion, 0x0205)}, "kernel uses boot protocol 2.05; need 2.06 or later"},
		{"protocol 0", []func([]byte){put16(offVersion, 0)}, "kernel uses boot protocol 0.00; need 2.06 or later"},
		{"no jump", []func([]byte){put8(offJump, 0xe9)}, "malformed setup header: expected a short jump (0xeb) at 0x200, found 0xe9"},
		{"header too long", []func([]byte){headerEnd(setupHeaderLimit + 1)}, "malformed setup header: it ends at 0x291, past the 0x290 that boot_params has room for"},
		{"header max jump", []func([]byte){put8(offJump+1, 0xff)}, "malformed setup header: it ends at 0x301, past the 0x290 that boot_params has room for"},
		{"header shorter than protocol", []func([]byte){headerEnd(0x268)}, "malformed setup header: it ends at 0x268 but boot protocol 2.15 defines fields up to 0x26c"},
		{"header shorter than 2.06", []func([]byte){put16(offVersion, 0x0206), headerEnd(0x238)}, "malformed setup header: it ends at 0x238 but boot protocol 2.06 defines fields up to 0x23c"},
		{"zImage", []func([]byte){put8(offLoadFlags, CanUseHeap)}, "zImage kernels are not supported: LOADED_HIGH is clear in loadflags (0x80)"},
		{"setup fills file", []func([]byte){put8(offSetupSects, 6)}, "truncated bzImage: no protected-mode kernel after the 3584-byte setup"},
		{"setup beyond file", []func([]byte){put8(offSetupSects, 7)}, "truncated bzImage: setup needs 4096 bytes, file has 3584"},
		{"setup far beyond file", []func([]byte){put8(offSetupSects, 255)}, "truncated bzImage: setup needs 131072 bytes, file has 3584"},
		{"syssize beyond file", []func([]byte){put32(offSyssize, testPayloadSize/16+1)}, "truncated bzImage: header says the protected-mode kernel is 1040 bytes, file has 1024 after the setup"},
		{"syssize huge", []func([]byte){put32(offSyssize, 0xffffffff)}, "truncated bzImage: header says the protected-mode kernel is 68719476720 bytes, file has 1024 after the setup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKernel(testImage(tc.edits...))
			if err == nil {
				t.Fatalf("accepted: %+v", *k)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q\nwant  %q", err, tc.want)
			}
		})
	}
}

func TestParseRealKernel(t *testing.T) {
	img := testkernel.RealCloud(t)
	k, err := ParseKernel(img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Protocol < 0x020c || !k.Supports64BitEntry() || !k.Relocatable || !k.CanLoadAbove4G() {
		t.Errorf("protocol %s, 64-bit entry %v, relocatable %v, above 4G %v; want >= 2.12, true, true, true",
			protoString(k.Protocol), k.Supports64BitEntry(), k.Relocatable, k.CanLoadAbove4G())
	}
	if k.CmdlineSize < 255 || k.InitSize == 0 || k.KernelAlignment == 0 || len(k.Payload) == 0 {
		t.Errorf("implausible header: %+v", *k)
	}
	zp, err := k.BootParams(Params{
		CmdlineAddr: 0x20000, Cmdline: "console=ttyS0",
		E820: []E820Entry{{0, 0x9fc00, E820RAM}, {0x100000, 255 << 20, E820RAM}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(zp) != ZeroPageSize {
		t.Errorf("zero page is %d bytes", len(zp))
	}
}
