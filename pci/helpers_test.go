package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Register offsets and bits as the tests spell them, straight from
// pci_regs.h and PCI 3.0, rather than the package's constants.
const (
	tCommand    = 0x04
	tStatus     = 0x06
	tClassRev   = 0x08
	tHeaderType = 0x0e
	tBAR0       = 0x10
	tSubsystem  = 0x2c
	tROM        = 0x30
	tCapPtr     = 0x34
	tIntLine    = 0x3c
	tCmdMem     = 0x2
	tCmdMaster  = 0x4
	tCmdINTxOff = 0x400
)

// event is one hook call as a recorder saw it.
type event struct {
	kind   string // "bar" or "cap"
	i      int
	addr   uint32
	mapped bool
	body   string
}

func (ev event) String() string {
	if ev.kind == "bar" {
		return fmt.Sprintf("bar(%d, %#x, %v)", ev.i, ev.addr, ev.mapped)
	}
	return fmt.Sprintf("cap(%d, % x)", ev.i, ev.body)
}

func barEv(i int, addr uint32, mapped bool) event {
	return event{kind: "bar", i: i, addr: addr, mapped: mapped}
}

func capEv(k int, body ...byte) event { return event{kind: "cap", i: k, body: string(body)} }

// recorder is a Hooks that keeps every call.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) BARChanged(i int, addr uint32, mapped bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, barEv(i, addr, mapped))
}

func (r *recorder) CapabilityWritten(k int, body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, capEv(k, body...))
}

// take returns the calls so far and forgets them.
func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// The test endpoint: two BARs, two capabilities, the second with a
// writable mask (shaped like MSI-X's Message Control, whose top two bits
// are Enable and Function Mask).
var (
	testHeader = Header{VendorID: 0x1af4, DeviceID: 0x1041, SubsystemVendorID: 0x1af4, SubsystemID: 0x0001, Class: 0x020000, Revision: 1}
	testSizes  = [6]uint32{0x1000, 0, 0x4000}
	testAddrs  = [6]uint32{0xc0001000, 0, 0xc0004000}
)

func testCaps() []Capability {
	return []Capability{
		{ID: CapIDVendorSpecific, Body: []byte{0x0e, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00}},
		{ID: CapIDMSIX, Body: []byte{0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x00}, Writable: []byte{0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
}

func newTestEndpoint() (*Endpoint, *recorder) {
	r := &recorder{}
	e, err := NewEndpoint(testHeader, testSizes, testAddrs, testCaps(), r)
	if err != nil {
		panic(err)
	}
	return e, r
}

// ports drives a HostBridge the way a guest's in/out instructions at
// 0xCF8-0xCFF do; port is the absolute port number.
type ports struct{ h *HostBridge }

func (p ports) out(port uint16, width int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	p.h.Write(uint64(port-0xcf8), b[:width])
}

func (p ports) in(port uint16, width int) uint32 {
	var b [4]byte
	p.h.Read(uint64(port-0xcf8), b[:width])
	return binary.LittleEndian.Uint32(b[:])
}

func (p ports) outb(port uint16, v uint8)  { p.out(port, 1, uint32(v)) }
func (p ports) outw(port uint16, v uint16) { p.out(port, 2, uint32(v)) }
func (p ports) outl(port uint16, v uint32) { p.out(port, 4, v) }
func (p ports) inb(port uint16) uint8      { return uint8(p.in(port, 1)) }
func (p ports) inw(port uint16) uint16     { return uint16(p.in(port, 2)) }
func (p ports) inl(port uint16) uint32     { return p.in(port, 4) }

// confAddr is PCI_CONF1_ADDRESS from Linux arch/x86/pci/direct.c.
func confAddr(bus, dev, fn int, reg uint16) uint32 {
	return 0x80000000 | uint32(bus)<<16 | uint32(dev)<<11 | uint32(fn)<<8 | uint32(reg&0xfc)
}

// Config reads and writes as Linux's pci_conf1_read/write make them.
func (p ports) read(bus, dev, fn int, reg uint16, width int) uint32 {
	p.outl(0xcf8, confAddr(bus, dev, fn, reg))
	return p.in(0xcfc+reg&3, width)
}

func (p ports) write(bus, dev, fn int, reg uint16, width int, v uint32) {
	p.outl(0xcf8, confAddr(bus, dev, fn, reg))
	p.out(0xcfc+reg&3, width, v)
}

func cfg32(f Function, off uint16) uint32 {
	var b [4]byte
	f.ReadConfig(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func cfg16(f Function, off uint16) uint16 {
	var b [2]byte
	f.ReadConfig(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func cfg8(f Function, off uint16) uint8 {
	var b [1]byte
	f.ReadConfig(off, b[:])
	return b[0]
}

func wcfg(f Function, off uint16, width int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	f.WriteConfig(off, b[:width])
}
