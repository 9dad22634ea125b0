package bootparam

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func checkError(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\n\r") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
}

// FuzzParseKernel checks that no input panics ParseKernel and that what it
// accepts really is a consistent view of the image a zero page can be
// built from. Seeds live in testdata/fuzz/FuzzParseKernel.
func FuzzParseKernel(f *testing.F) {
	f.Add(testImage())
	f.Add(testImage(put16(offVersion, 0x0206), headerEnd(0x23c)))
	f.Add(testImage(put8(offSetupSects, 0)))
	f.Add(testImage(put32(offPayloadOffset, 0x10), put32(offPayloadLength, 0x100)))
	f.Fuzz(func(t *testing.T, image []byte) {
		orig := bytes.Clone(image)
		k, err := ParseKernel(image)
		if !bytes.Equal(orig, image) {
			t.Fatal("ParseKernel modified its input")
		}
		if err != nil {
			checkError(t, err)
			return
		}
		hdrEnd := offSetupHeader + len(k.Header)
		switch {
		case k.Protocol < minProtocol:
			t.Fatalf("accepted protocol %s", protoString(k.Protocol))
		case k.LoadFlags&LoadedHigh == 0:
			t.Fatal("accepted a zImage")
		case hdrEnd < requiredHeaderEnd(k.Protocol) || hdrEnd > setupHeaderLimit:
			t.Fatalf("header ends at 0x%x", hdrEnd)
		case !bytes.Equal(k.Header, image[offSetupHeader:hdrEnd]):
			t.Fatal("Header differs from the image")
		case len(k.Payload) == 0 || !bytes.HasSuffix(image, k.Payload) || len(image)-len(k.Payload) < hdrEnd:
			t.Fatalf("Payload (%d bytes) is not the tail after the setup", len(k.Payload))
		case k.InitrdAddrMax == 0:
			t.Fatal("InitrdAddrMax is 0")
		case k.Supports64BitEntry() && k.Protocol < protocol2_12:
			t.Fatal("64-bit entry before protocol 2.12")
		}
		if c, err := k.CompressedKernel(); err != nil {
			checkError(t, err)
		} else {
			off := binary.LittleEndian.Uint32(image[offPayloadOffset:])
			if len(c) == 0 || !bytes.Equal(c, k.Payload[off:uint64(off)+uint64(len(c))]) {
				t.Fatalf("compressed kernel (%d bytes) is not Payload[payload_offset:]", len(c))
			}
		}
		zp, err := k.BootParams(Params{E820: testE820()})
		if err != nil {
			t.Fatalf("parsed kernel cannot get a minimal zero page: %v", err)
		}
		if len(zp) != ZeroPageSize || !bytes.Equal(zp[offSetupHeader:offTypeOfLoader], image[offSetupHeader:offTypeOfLoader]) {
			t.Fatal("zero page does not carry the header")
		}
	})
}

// FuzzBootParams fuzzes the setup header (keeping the magic so most inputs
// parse) together with the loader's choices, and checks that every zero
// page produced says exactly what was asked and honours the kernel's limits.
func FuzzBootParams(f *testing.F) {
	valid := testImage()[offSetupHeader:setupHeaderLimit]
	f.Add(valid, "console=ttyS0", uint64(0x20000), uint64(0x7f000000), uint64(0x1000), uint8(3))
	f.Add(valid, strings.Repeat("x", 2047), uint64(0x1_0000_0000), uint64(0), uint64(0), uint8(128))
	f.Add(valid, "", uint64(0), uint64(0x7ff00000), uint64(0x100001), uint8(129))
	f.Add(valid[:0x26c-offSetupHeader], "a\x00b", uint64(0x1000), uint64(0x1000), uint64(0x10), uint8(0))
	f.Fuzz(func(t *testing.T, hdr []byte, cmdline string, cmdAddr, initrdAddr, initrdSize uint64, nE820 uint8) {
		le := binary.LittleEndian
		img := testImage()
		copy(img[offSetupHeader:setupHeaderLimit], hdr)
		img[offSetupSects] = testSetupSects
		le.PutUint32(img[offSyssize:], testPayloadSize/16)
		le.PutUint16(img[offBootFlag:], bootFlagMagic)
		copy(img[offHeaderMagic:], "HdrS")
		k, err := ParseKernel(img)
		if err != nil {
			checkError(t, err)
			return
		}
		e820 := make([]E820Entry, nE820)
		for i := range e820 {
			e820[i] = E820Entry{Addr: uint64(i) << 30, Size: 1 << 30, Type: uint32(i%5 + 1)}
		}
		p := Params{CmdlineAddr: cmdAddr, Cmdline: cmdline, InitrdAddr: initrdAddr, InitrdSize: initrdSize, E820: e820}
		zp, err := k.BootParams(p)
		if err != nil {
			checkError(t, err)
			return
		}
		initrdEnd := initrdAddr + initrdSize
		switch {
		case uint64(len(cmdline)) > uint64(k.CmdlineSize) || strings.IndexByte(cmdline, 0) >= 0:
			t.Fatalf("accepted a %d-byte command line (limit %d)", len(cmdline), k.CmdlineSize)
		case cmdline != "" && cmdAddr == 0:
			t.Fatal("accepted a command line without an address")
		case cmdAddr>>32 != 0 && !k.CanLoadAbove4G():
			t.Fatal("accepted a command line above 4 GiB the kernel cannot read")
		case initrdSize != 0 && (initrdEnd < initrdAddr || initrdEnd > k.InitrdLimit()):
			t.Fatal("accepted an initrd beyond what the kernel takes (initrd_addr_max, without XLF_CAN_BE_LOADED_ABOVE_4G)")
		case (initrdAddr == 0) != (initrdSize == 0):
			t.Fatal("accepted a half-specified initrd")
		case nE820 == 0 || int(nE820) > MaxE820Entries:
			t.Fatalf("accepted %d E820 entries", nE820)
		case len(zp) != ZeroPageSize:
			t.Fatalf("zero page is %d bytes", len(zp))
		}
		get := func(lo, hi int) uint64 { return uint64(le.Uint32(zp[lo:])) | uint64(le.Uint32(zp[hi:]))<<32 }
		if get(offCmdLinePtr, offExtCmdLinePtr) != cmdAddr ||
			get(offRamdiskImage, offExtRamdiskImage) != initrdAddr ||
			get(offRamdiskSize, offExtRamdiskSize) != initrdSize {
			t.Fatal("zero page does not record the command line and initrd as given")
		}
		if zp[offTypeOfLoader] != loaderUndefined || zp[offLoadFlags] != k.LoadFlags&^CanUseHeap || int(zp[offE820Entries]) != len(e820) {
			t.Fatal("type_of_loader, loadflags or e820_entries wrong")
		}
		last := offE820Table + (len(e820)-1)*e820EntrySize
		if le.Uint64(zp[last:]) != e820[len(e820)-1].Addr || le.Uint32(zp[last+16:]) != e820[len(e820)-1].Type {
			t.Fatal("last E820 entry not where boot_params has it")
		}
	})
}

// FuzzPlaceInitrd checks PlaceInitrd's contract: any address it returns is
// valid and no higher page would also be.
func FuzzPlaceInitrd(f *testing.F) {
	f.Add(uint64(10<<20), uint64(16<<20), uint64(256<<20), uint32(0x7fffffff), false)
	f.Add(uint64(1), uint64(0), uint64(4096), uint32(0xffffffff), false)
	f.Add(uint64(4096), ^uint64(0), ^uint64(0), uint32(0), false)
	f.Add(uint64(2<<30), uint64(64<<20), uint64(3<<30), uint32(0x7fffffff), true)
	f.Fuzz(func(t *testing.T, size, lowest, ramEnd uint64, addrMax uint32, above4G bool) {
		k := &Kernel{InitrdAddrMax: addrMax}
		limit := min(ramEnd, uint64(addrMax)+1)
		if above4G { // initrd_addr_max no longer binds
			k.Protocol, k.XLoadFlags = protocol2_12, XLFCanBeLoadedAbove4G
			limit = ramEnd
		}
		a, err := k.PlaceInitrd(size, lowest, ramEnd)
		if err != nil {
			checkError(t, err)
			// A page-aligned start at or above lowest that fits must exist
			// for an error to be wrong; check the obvious witness.
			if size != 0 && size <= limit && lowest == 0 && (limit-size)&^(pageSize-1) >= pageSize {
				t.Fatalf("refused size %d below limit 0x%x", size, limit)
			}
			return
		}
		end := a + size
		switch {
		case size == 0 || a == 0 || a%pageSize != 0 || a < lowest:
			t.Fatalf("bad address 0x%x for size %d lowest 0x%x", a, size, lowest)
		case end < a || end > limit:
			t.Fatalf("initrd [0x%x, 0x%x) exceeds limit 0x%x", a, end, limit)
		case end+pageSize > end && end+pageSize <= limit:
			t.Fatalf("0x%x is not the highest page: 0x%x also fits", a, a+pageSize)
		}
	})
}
