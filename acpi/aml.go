package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// This file is a small AML encoder: just enough of the ACPI Machine
// Language to declare data in the namespace (names, integers, strings,
// packages, buffers) and to group it into scopes and devices. There are no
// control methods, because nothing we describe needs code: \_S5 is a
// package, and the PCI host bridge (PNP0A03) needs only _HID, _UID, _SEG,
// _BBN and a _CRS resource-template buffer, all of which are data.
//
// Encoding errors (a bad name, an oversized package) are returned rather
// than panicking, so that Build stays a total function even if a future
// table takes names or sizes from its Config.

// AML opcodes and prefixes (ACPI 6.4 §20.2, "AML Grammar Definition").
const (
	amlZeroOp        = 0x00 // §20.2.3 ZeroOp, also NullName (§20.2.2)
	amlOneOp         = 0x01 // §20.2.3 OneOp
	amlNameOp        = 0x08 // §20.2.5.1 DefName
	amlBytePrefix    = 0x0a // §20.2.3 ByteConst
	amlWordPrefix    = 0x0b // §20.2.3 WordConst
	amlDWordPrefix   = 0x0c // §20.2.3 DWordConst
	amlStringPrefix  = 0x0d // §20.2.3 String
	amlQWordPrefix   = 0x0e // §20.2.3 QWordConst
	amlScopeOp       = 0x10 // §20.2.5.1 DefScope
	amlBufferOp      = 0x11 // §20.2.5.4 DefBuffer
	amlPackageOp     = 0x12 // §20.2.5.4 DefPackage
	amlDualNamePfx   = 0x2e // §20.2.2 DualNamePrefix
	amlMultiNamePfx  = 0x2f // §20.2.2 MultiNamePrefix
	amlExtOpPrefix   = 0x5b // §20.2.5.2 ExtOpPrefix
	amlDeviceOp      = 0x82 // §20.2.5.2 DeviceOp, after ExtOpPrefix
	amlRootChar      = '\\' // §20.2.2 RootChar
	amlParentPfxChar = '^'  // §20.2.2 ParentPrefixChar
)

// PkgLength limits (ACPI 6.4 §20.2.4, "Package Length Encoding"): one byte
// holds 0-63 in bits 0-5; longer encodings keep the low nibble in the lead
// byte and add up to three bytes, so 28 bits in all.
const (
	pkgLen1Max = 1<<6 - 1
	pkgLen2Max = 1<<12 - 1
	pkgLen3Max = 1<<20 - 1
	pkgLen4Max = 1<<28 - 1
)

// maxPackageElements is what the one-byte NumElements of DefPackage can
// count (ACPI 6.4 §20.2.5.4); bigger packages would need VarPackageOp,
// which nothing here requires.
const maxPackageElements = 255

// Resource descriptor tags and fields (ACPI 6.4 §6.4).
const (
	resEndTag = 0x79 // §6.4.2.9 End Tag: small item, name 0xF, length 1
	// resMemory32Fixed is the large item 0x86 (§6.4.3.4), 9 bytes of
	// body: information byte, base, length.
	resMemory32Fixed    = 0x86
	resMemory32FixedLen = 9
	resMemReadWrite     = 1 << 0 // §6.4.3.4 byte 3 bit 0: writeable
	// resExtendedIRQ is the large item 0x89 (§6.4.3.6); with one
	// interrupt and no resource source its body is 6 bytes: flags,
	// table length, one 32-bit interrupt number.
	resExtendedIRQ    = 0x89
	resExtendedIRQLen = 6
	// Extended interrupt flags (§6.4.3.6 Table 6.259, byte 3).
	resIRQConsumer = 1 << 0 // the device consumes the interrupt
	resIRQEdge     = 1 << 1 // edge-triggered (0: level)
	// bit 2 clear: active high; bit 3 clear: exclusive.

	// resIOPort is the small item I/O Port Descriptor (§6.4.2.5): item
	// name 0x08, length 7 (information, minimum, maximum, alignment,
	// length).
	resIOPort     = 0x47
	resIODecode16 = 1 << 0 // §6.4.2.5 byte 1 bit 0: decodes all 16 address bits

	// resDWordAddr is the large item 0x87, DWord Address Space
	// Descriptor (§6.4.3.5.2); without a resource source its body is 23
	// bytes: resource type, general flags, type-specific flags, then
	// granularity, minimum, maximum, translation offset and length, 32
	// bits each.
	resDWordAddr    = 0x87
	resDWordAddrLen = 23
	// resWordAddr is the large item 0x88, Word Address Space Descriptor
	// (§6.4.3.5.3): the same layout with 16-bit fields, 13 bytes of body.
	resWordAddr    = 0x88
	resWordAddrLen = 13
	// Resource Type, byte 3 of both (§6.4.3.5.2, §6.4.3.5.3).
	resAddrMemory    = 0
	resAddrBusNumber = 2
	// General Flags, byte 4 (§6.4.3.5.2, §6.4.3.5.3). Bit 1 (_DEC) clear
	// is positive decode; bit 0 clear says the device produces the range
	// for the devices below it, as a bridge window does, rather than
	// consuming it itself.
	resAddrMinFixed = 1 << 2 // _MIF: the minimum address is fixed
	resAddrMaxFixed = 1 << 3 // _MAF: the maximum address is fixed
	// Memory Resource Flag, byte 5 of a memory range (§6.4.3.5.5): bit 0
	// (_RW) set is read-write; bits 1-2 (_MEM) 0 are non-cacheable, bits
	// 3-4 (_MTP) 0 AddressRangeMemory and bit 5 (_TTP) 0 TypeStatic.
	resAddrMemReadWrite = 1 << 0
)

// memory32Fixed is ASL's Memory32Fixed(ReadWrite, base, size).
func memory32Fixed(base, size uint32) []byte {
	b := []byte{resMemory32Fixed, resMemory32FixedLen, 0, resMemReadWrite}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, size)
}

// extendedInterrupt is ASL's Interrupt(ResourceConsumer, Edge,
// ActiveHigh, Exclusive) { gsi }.
func extendedInterrupt(gsi uint32) []byte {
	b := []byte{resExtendedIRQ, resExtendedIRQLen, 0, resIRQConsumer | resIRQEdge, 1}
	return binary.LittleEndian.AppendUint32(b, gsi)
}

// ioPort is ASL's IO(Decode16, base, base, 1, n): n ports fixed at base.
func ioPort(base uint16, n uint8) []byte {
	b := []byte{resIOPort, resIODecode16}
	b = binary.LittleEndian.AppendUint16(b, base) // minimum
	b = binary.LittleEndian.AppendUint16(b, base) // maximum: the same, so fixed
	return append(b, 1, n)                        // alignment, length
}

// wordBusNumber is ASL's WordBusNumber(ResourceProducer, MinFixed,
// MaxFixed, PosDecode, 0, first, last, 0, last-first+1): the bus numbers a
// host bridge decodes. first must not exceed last.
func wordBusNumber(first, last uint8) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resWordAddr}, resWordAddrLen)
	b = append(b, resAddrBusNumber, resAddrMinFixed|resAddrMaxFixed, 0)
	for _, v := range []uint16{0, uint16(first), uint16(last), 0, uint16(last) - uint16(first) + 1} {
		b = binary.LittleEndian.AppendUint16(b, v) // granularity, min, max, translation, length
	}
	return b
}

// dwordMemory is ASL's DWordMemory(ResourceProducer, PosDecode, MinFixed,
// MaxFixed, NonCacheable, ReadWrite, 0, base, base+size-1, 0, size): a
// memory window a bridge passes on to the devices below it. size must be
// non-zero and base+size at most 4 GiB.
func dwordMemory(base, size uint32) []byte {
	b := binary.LittleEndian.AppendUint16([]byte{resDWordAddr}, resDWordAddrLen)
	b = append(b, resAddrMemory, resAddrMinFixed|resAddrMaxFixed, resAddrMemReadWrite)
	for _, v := range []uint32{0, base, base + size - 1, 0, size} {
		b = binary.LittleEndian.AppendUint32(b, v) // granularity, min, max, translation, length
	}
	return b
}

// amlTerm is one AML object: a data object, a named object or a namespace
// modifier. appendAML appends its encoding to b.
type amlTerm interface {
	appendAML(b []byte) ([]byte, error)
}

// encodeAML encodes a TermList, the body of a definition block.
func encodeAML(terms ...amlTerm) ([]byte, error) {
	return appendTerms(nil, terms)
}

func appendTerms(b []byte, terms []amlTerm) ([]byte, error) {
	var err error
	for _, t := range terms {
		if b, err = t.appendAML(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// pkgLength encodes v as a PkgLength. v already counts the PkgLength bytes
// themselves, which is why callers go through appendPkg instead.
func pkgLength(v int) ([]byte, error) {
	switch {
	case v < 0 || v > pkgLen4Max:
		return nil, fmt.Errorf("aml: package length %d does not fit in 28 bits", v)
	case v <= pkgLen1Max:
		return []byte{byte(v)}, nil
	case v <= pkgLen2Max:
		return []byte{1<<6 | byte(v&0xf), byte(v >> 4)}, nil
	case v <= pkgLen3Max:
		return []byte{2<<6 | byte(v&0xf), byte(v >> 4), byte(v >> 12)}, nil
	default:
		return []byte{3<<6 | byte(v&0xf), byte(v >> 4), byte(v >> 12), byte(v >> 20)}, nil
	}
}

// appendPkg appends PkgLength followed by body. The length covers its own
// encoding, so the size of the encoding is chosen first: the smallest one
// whose capacity still holds body plus itself.
func appendPkg(b, body []byte) ([]byte, error) {
	n := len(body)
	var total int
	switch {
	case n+1 <= pkgLen1Max:
		total = n + 1
	case n+2 <= pkgLen2Max:
		total = n + 2
	case n+3 <= pkgLen3Max:
		total = n + 3
	default:
		total = n + 4
	}
	l, err := pkgLength(total)
	if err != nil {
		return nil, err
	}
	return append(append(b, l...), body...), nil
}

// appendNameString encodes an ASL path such as "\_S5", "PCI0", "^FOO" or
// "\_SB.PCI0" (ACPI 6.4 §20.2.2). Segments shorter than four characters are
// padded with '_', as the ASL compiler does.
func appendNameString(b []byte, path string) ([]byte, error) {
	rest := path
	switch {
	case strings.HasPrefix(rest, string(amlRootChar)):
		b = append(b, amlRootChar)
		rest = rest[1:]
	default:
		for strings.HasPrefix(rest, string(amlParentPfxChar)) {
			b = append(b, amlParentPfxChar)
			rest = rest[1:]
		}
	}
	if rest == "" {
		return append(b, amlZeroOp), nil // NullName
	}
	segs := strings.Split(rest, ".")
	switch {
	case len(segs) == 2:
		b = append(b, amlDualNamePfx)
	case len(segs) > 2:
		if len(segs) > 255 {
			return nil, fmt.Errorf("aml: name %q has more than 255 segments", path)
		}
		b = append(b, amlMultiNamePfx, byte(len(segs)))
	}
	for _, s := range segs {
		seg, err := nameSeg(s)
		if err != nil {
			return nil, fmt.Errorf("aml: name %q: %w", path, err)
		}
		b = append(b, seg[:]...)
	}
	return b, nil
}

// nameSeg validates one NameSeg: a lead character 'A'-'Z' or '_', then
// 'A'-'Z', '0'-'9' or '_' (ACPI 6.4 §20.2.2).
func nameSeg(s string) ([4]byte, error) {
	seg := [4]byte{'_', '_', '_', '_'}
	if len(s) == 0 || len(s) > 4 {
		return seg, fmt.Errorf("segment %q is not 1-4 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return seg, fmt.Errorf("segment %q: invalid character %q", s, c)
		}
		seg[i] = c
	}
	return seg, nil
}

// amlInt is an Integer, encoded in the smallest form that holds it
// (ACPI 6.4 §20.2.3). OnesOp is never used: its value depends on the
// definition block revision, a trap for a 64-bit all-ones constant.
type amlInt uint64

func (v amlInt) appendAML(b []byte) ([]byte, error) {
	switch {
	case v == 0:
		return append(b, amlZeroOp), nil
	case v == 1:
		return append(b, amlOneOp), nil
	case v <= 0xff:
		return append(b, amlBytePrefix, byte(v)), nil
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16(append(b, amlWordPrefix), uint16(v)), nil
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32(append(b, amlDWordPrefix), uint32(v)), nil
	default:
		return binary.LittleEndian.AppendUint64(append(b, amlQWordPrefix), uint64(v)), nil
	}
}

// amlString is a String: ASCII 0x01-0x7F, NUL-terminated (ACPI 6.4
// §20.2.3), so embedded NULs and non-ASCII text are refused rather than
// silently truncating the string in the guest.
type amlString string

func (s amlString) appendAML(b []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			return nil, fmt.Errorf("aml: string %q: byte %#x at %d is not AsciiChar", string(s), s[i], i)
		}
	}
	b = append(b, amlStringPrefix)
	b = append(b, s...)
	return append(b, 0), nil
}

// amlEISAID is a compressed EISA ID such as "PNP0A03", the Integer form
// _HID and _CID take for PNP IDs (ACPI 6.4 §19.6, EISAID; §6.1.5, _HID).
type amlEISAID string

func (id amlEISAID) appendAML(b []byte) ([]byte, error) {
	v, err := eisaID(string(id))
	if err != nil {
		return nil, err
	}
	return amlInt(v).appendAML(b)
}

// eisaID packs three upper-case letters (5 bits each, 'A' = 1) and four
// hex digits into the 32-bit form, stored big-endian within each 16-bit
// half as the EISA convention has it.
func eisaID(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("aml: EISA ID %q is not 7 characters", id)
	}
	var mfg uint16
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("aml: EISA ID %q: %q is not an upper-case letter", id, c)
		}
		mfg = mfg<<5 | uint16(c-'@')
	}
	var prod uint16
	for i := 3; i < 7; i++ {
		c := id[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("aml: EISA ID %q: %q is not an upper-case hex digit", id, c)
		}
		prod = prod<<4 | uint16(d)
	}
	swap := func(v uint16) uint32 { return uint32(v>>8 | v<<8) }
	return swap(mfg) | swap(prod)<<16, nil
}

// amlName is DefName: Name(path, value).
type amlName struct {
	path  string
	value amlTerm
}

func (n amlName) appendAML(b []byte) ([]byte, error) {
	b, err := appendNameString(append(b, amlNameOp), n.path)
	if err != nil {
		return nil, err
	}
	return n.value.appendAML(b)
}

// amlScope is DefScope: Scope(path) { terms }.
type amlScope struct {
	path  string
	terms []amlTerm
}

func (s amlScope) appendAML(b []byte) ([]byte, error) {
	body, err := namedBody(s.path, s.terms)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(b, amlScopeOp), body)
}

// amlDevice is DefDevice: Device(path) { terms }.
type amlDevice struct {
	path  string
	terms []amlTerm
}

func (d amlDevice) appendAML(b []byte) ([]byte, error) {
	body, err := namedBody(d.path, d.terms)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(b, amlExtOpPrefix, amlDeviceOp), body)
}

// namedBody is what follows the PkgLength of Scope and Device: the
// NameString, then the TermList.
func namedBody(path string, terms []amlTerm) ([]byte, error) {
	body, err := appendNameString(nil, path)
	if err != nil {
		return nil, err
	}
	return appendTerms(body, terms)
}

// amlPackage is DefPackage: Package() { elements }.
type amlPackage []amlTerm

func (p amlPackage) appendAML(b []byte) ([]byte, error) {
	if len(p) > maxPackageElements {
		return nil, fmt.Errorf("aml: package of %d elements exceeds %d", len(p), maxPackageElements)
	}
	body, err := appendTerms([]byte{byte(len(p))}, p)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(b, amlPackageOp), body)
}

// amlBuffer is DefBuffer with its size given as a constant and every byte
// initialised: Buffer() { bytes }.
type amlBuffer []byte

func (buf amlBuffer) appendAML(b []byte) ([]byte, error) {
	body, err := amlInt(len(buf)).appendAML(nil)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(b, amlBufferOp), append(body, buf...))
}

// resourceTemplate is what ASL's ResourceTemplate() compiles to: a buffer
// of resource descriptors closed by an End Tag. The End Tag's checksum byte
// is 0, which tells OSPM the template is not checksummed (ACPI 6.4
// §6.4.2.9).
func resourceTemplate(descriptors ...[]byte) amlBuffer {
	var buf []byte
	for _, d := range descriptors {
		buf = append(buf, d...)
	}
	return append(buf, resEndTag, 0)
}
