package pci

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// Function is one function's 256-byte configuration space as the host
// bridge dispatches to it. off is 0..255, len(data) is 1, 2 or 4 and the
// access is naturally aligned and within 256 bytes (the bridge guarantees
// it; Endpoint still tolerates anything, since it is exported).
type Function interface {
	ReadConfig(off uint16, data []byte)
	WriteConfig(off uint16, data []byte)
}

// Header is the identity of a type-0 function (PCI 3.0 §6.2.1, §6.2.4). A
// guest can read it but never change it.
type Header struct {
	VendorID, DeviceID             uint16
	SubsystemVendorID, SubsystemID uint16
	Class                          uint32 // base class<<16 | subclass<<8 | programming interface
	Revision                       uint8
}

// Capability is one entry of the capability list (PCI 3.0 §6.7).
type Capability struct {
	ID   uint8
	Body []byte // the bytes after the ID and Next pointer
	// Writable is a bit mask over Body of the bits the guest may change;
	// nil means read-only.
	Writable []byte
}

// Hooks is how an endpoint tells its owner about guest writes that matter
// beyond config space. Called on the vCPU thread that made the write, with
// no lock of the endpoint held (so the hook may call back into the
// endpoint's read methods). When the write came through a HostBridge its
// mutex is held, so hooks are delivered in the order the writes happened
// and must not make config accesses through the bridge (see the package
// doc's lock order).
type Hooks interface {
	// BARChanged reports BAR i's decode after a write to the Command
	// register or to BAR i changed it: addr is the BAR's current base
	// address, and mapped is true when memory decoding is enabled
	// (Command bit 1) and the BAR is not being sized (holds an address,
	// not the all-ones pattern).
	BARChanged(i int, addr uint32, mapped bool)
	// CapabilityWritten reports that a guest write changed capability k
	// (index into the caps given to NewEndpoint); body is a copy of its
	// current body.
	CapabilityWritten(k int, body []byte)
}

// capSlot is where one capability sits in config space.
type capSlot struct {
	off uint8 // of the ID byte
	len int   // of the body
}

// Endpoint is a type-0 (single-function endpoint) configuration space:
// fixed identity, a Command register with memory decode, bus mastering and
// INTx disable, up to six 32-bit non-prefetchable memory BARs and a
// capability list. It keeps the whole space as a byte image plus a mask of
// the bits a guest may write, so every register merges byte lanes the same
// way whatever width the guest uses (Linux writes Command as 16 bits and
// the interrupt line as 8).
//
// Its mutex guards the image: vCPUs reach it through the bridge while the
// owner may call BAR or CapabilityBody from other goroutines.
type Endpoint struct {
	sizes [NumBARs]uint32
	caps  []capSlot
	wmask [ConfigSize]byte // bits a guest write may change; fixed at NewEndpoint
	hooks Hooks            // may be nil (the host bridge's own function)

	mu  sync.Mutex
	cfg [ConfigSize]byte
}

// NewEndpoint builds a function's configuration space. bars are the BAR
// sizes (0 = unimplemented, else a power of two >= 16, since the low four
// bits of a memory BAR are flags, PCI 3.0 §6.2.5.1); initial are the base
// addresses firmware would have assigned, aligned to their size. Memory
// decoding starts disabled, as after reset (Command = 0, PCI 3.0 §6.2.2),
// so no BAR is mapped until the guest enables it. Capabilities are placed
// dword-aligned from 0x40 in the order given (PCI 3.0 §6.7). hooks may be
// nil.
func NewEndpoint(h Header, bars [6]uint32, initial [6]uint32, caps []Capability, hooks Hooks) (*Endpoint, error) {
	if h.Class > 0xffffff {
		return nil, fmt.Errorf("pci: class %#x does not fit in 24 bits", h.Class)
	}
	e := &Endpoint{sizes: bars, hooks: hooks}
	c := &e.cfg
	binary.LittleEndian.PutUint16(c[regVendorID:], h.VendorID)
	binary.LittleEndian.PutUint16(c[regDeviceID:], h.DeviceID)
	binary.LittleEndian.PutUint32(c[regRevision:], h.Class<<8|uint32(h.Revision))
	c[regHeaderType] = 0 // PCI_HEADER_TYPE_NORMAL, bit 7 clear: single function
	binary.LittleEndian.PutUint16(c[regSubsystemVendorID:], h.SubsystemVendorID)
	binary.LittleEndian.PutUint16(c[regSubsystemID:], h.SubsystemID)

	binary.LittleEndian.PutUint16(e.wmask[regCommand:], cmdWritableMask)
	// Cache line size and latency timer are plain storage: Linux writes
	// them (pci_set_cacheline_size, pcibios_set_master) and reads them
	// back; neither means anything to a virtual function (PCI 3.0 §6.2.4).
	e.wmask[regCacheLineSize] = 0xff
	e.wmask[regLatencyTimer] = 0xff
	// Interrupt line is storage for the OS's routing note (PCI 3.0
	// §6.2.4); the pin stays 0 because there is no INTx.
	e.wmask[regInterruptLine] = 0xff

	for i, size := range bars {
		switch {
		case size == 0:
			if initial[i] != 0 {
				return nil, fmt.Errorf("pci: BAR %d is unimplemented but has address %#x", i, initial[i])
			}
			continue
		case size < 16 || bits.OnesCount32(size) != 1:
			return nil, fmt.Errorf("pci: BAR %d size %#x is not a power of two >= 16", i, size)
		case initial[i]&(size-1) != 0:
			return nil, fmt.Errorf("pci: BAR %d address %#x is not aligned to its size %#x", i, initial[i], size)
		}
		binary.LittleEndian.PutUint32(c[regBAR0+4*i:], initial[i])
		// Only the address bits above the size are writable, so writing
		// all ones reads back ~(size-1): BAR sizing (PCI 3.0 §6.2.5.1).
		binary.LittleEndian.PutUint32(e.wmask[regBAR0+4*i:], ^(size - 1))
	}

	off := headerSize
	for k, cp := range caps {
		if cp.Writable != nil && len(cp.Writable) != len(cp.Body) {
			return nil, fmt.Errorf("pci: capability %d (ID %#x): writable mask is %d bytes, body %d", k, cp.ID, len(cp.Writable), len(cp.Body))
		}
		if len(cp.Body) > ConfigSize-capHeader-off {
			return nil, fmt.Errorf("pci: capability %d (ID %#x, %d bytes) does not fit in config space at %#x", k, cp.ID, len(cp.Body), off)
		}
		e.caps = append(e.caps, capSlot{off: uint8(off), len: len(cp.Body)})
		c[off+capListID] = cp.ID
		copy(c[off+capHeader:], cp.Body)
		copy(e.wmask[off+capHeader:], cp.Writable)
		next := (off + capHeader + len(cp.Body) + 3) &^ 3
		if k+1 < len(caps) {
			if next >= ConfigSize {
				return nil, fmt.Errorf("pci: capability %d (ID %#x) does not fit in config space", k+1, caps[k+1].ID)
			}
			c[off+capListNext] = uint8(next)
		}
		off = next
	}
	if len(e.caps) > 0 {
		binary.LittleEndian.PutUint16(c[regStatus:], statusCapList)
		c[regCapabilityList] = headerSize
	}
	return e, nil
}

// ReadConfig fills data from configuration space at off. Bytes beyond the
// 256-byte space read as all ones, as an absent register would.
func (e *Endpoint) ReadConfig(off uint16, data []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range data {
		data[i] = 0xff
		if a := int(off) + i; a < ConfigSize {
			data[i] = e.cfg[a]
		}
	}
}

// barDecode is one BAR's decode as BARChanged reports it.
type barDecode struct {
	addr   uint32
	mapped bool
}

// decode returns every BAR's decode; e.mu is held.
func (e *Endpoint) decode() [NumBARs]barDecode {
	var d [NumBARs]barDecode
	mem := binary.LittleEndian.Uint16(e.cfg[regCommand:])&cmdMemory != 0
	for i, size := range e.sizes {
		if size == 0 {
			continue
		}
		v := binary.LittleEndian.Uint32(e.cfg[regBAR0+4*i:])
		d[i] = barDecode{addr: v, mapped: mem && v != ^(size-1)}
	}
	return d
}

// capAt returns the index of the capability whose body holds byte a, or -1.
func (e *Endpoint) capAt(a int) int {
	for k, s := range e.caps {
		if b := int(s.off) + capHeader; a >= b && a < b+s.len {
			return k
		}
	}
	return -1
}

// WriteConfig merges data into configuration space at off, changing only
// the bits a guest may write, then reports through Hooks the BARs whose
// decode changed and the capabilities whose body changed. Bytes beyond the
// 256-byte space are dropped.
func (e *Endpoint) WriteConfig(off uint16, data []byte) {
	var capChanged uint64 // bit k: capability k; at most (256-64)/4 = 48 fit
	e.mu.Lock()
	before := e.decode()
	for i, v := range data {
		a := int(off) + i
		if a >= ConfigSize {
			break
		}
		m := e.wmask[a]
		n := e.cfg[a]&^m | v&m
		if n == e.cfg[a] {
			continue
		}
		e.cfg[a] = n
		if k := e.capAt(a); k >= 0 {
			capChanged |= 1 << k
		}
	}
	after := e.decode()
	var bodies [][]byte
	if capChanged != 0 && e.hooks != nil {
		bodies = make([][]byte, len(e.caps))
		for k := range e.caps {
			if capChanged&(1<<k) != 0 {
				bodies[k] = e.body(k)
			}
		}
	}
	e.mu.Unlock()

	if e.hooks == nil {
		return
	}
	for i := range after {
		if e.sizes[i] != 0 && after[i] != before[i] {
			e.hooks.BARChanged(i, after[i].addr, after[i].mapped)
		}
	}
	for k, b := range bodies {
		if b != nil {
			e.hooks.CapabilityWritten(k, b)
		}
	}
}

// body returns a copy of capability k's body; e.mu is held.
func (e *Endpoint) body(k int) []byte {
	s := e.caps[k]
	start := int(s.off) + capHeader
	return append(make([]byte, 0, s.len), e.cfg[start:start+s.len]...)
}

// BAR returns BAR i's current decode: its base address, and whether memory
// decoding is enabled and the BAR holds an address rather than the sizing
// pattern. An unimplemented or out-of-range BAR reports (0, false).
func (e *Endpoint) BAR(i int) (addr uint32, mapped bool) {
	if i < 0 || i >= NumBARs {
		return 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.decode()[i]
	return d.addr, d.mapped
}

// CapabilityBody returns a copy of capability k's current body, or nil if
// there is no capability k.
func (e *Endpoint) CapabilityBody(k int) []byte {
	if k < 0 || k >= len(e.caps) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.body(k)
}

// CapabilityOffset returns where capability k's ID byte sits in
// configuration space, or 0 if there is no capability k.
func (e *Endpoint) CapabilityOffset(k int) uint8 {
	if k < 0 || k >= len(e.caps) {
		return 0
	}
	return e.caps[k].off
}

// SetMemoryDecoding sets or clears the Command register's Memory Space
// bit the way a guest write would, so Hooks hear of the change: firmware
// turns decoding on for a BAR it assigned, and a restore turns it off
// before putting every function's BARs back.
func (e *Endpoint) SetMemoryDecoding(on bool) {
	var cmd [2]byte
	e.ReadConfig(regCommand, cmd[:])
	v := binary.LittleEndian.Uint16(cmd[:]) &^ cmdMemory
	if on {
		v |= cmdMemory
	}
	binary.LittleEndian.PutUint16(cmd[:], v)
	e.WriteConfig(regCommand, cmd[:])
}
