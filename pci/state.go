package pci

import (
	"encoding/binary"
	"fmt"
)

// CapabilityState is one capability of an EndpointState. The ID is kept so
// a restore onto a differently built endpoint is refused.
type CapabilityState struct {
	ID   uint8
	Body []byte
}

// EndpointState is what a snapshot keeps of an endpoint: everything a
// guest can write (Command, BARs, cache line size, latency timer, interrupt
// line, capability bodies). The identity and shape (vendor/device IDs, BAR
// sizes, capability IDs) are recorded too, so Restore can refuse a state
// taken from another device.
type EndpointState struct {
	VendorID      uint16
	DeviceID      uint16
	Command       uint16
	CacheLineSize uint8
	LatencyTimer  uint8
	InterruptLine uint8
	BARSizes      [NumBARs]uint32
	BARs          [NumBARs]uint32
	Capabilities  []CapabilityState
}

// State returns the endpoint's guest-writable registers.
func (e *Endpoint) State() EndpointState {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := &e.cfg
	s := EndpointState{
		VendorID:      binary.LittleEndian.Uint16(c[regVendorID:]),
		DeviceID:      binary.LittleEndian.Uint16(c[regDeviceID:]),
		Command:       binary.LittleEndian.Uint16(c[regCommand:]),
		CacheLineSize: c[regCacheLineSize],
		LatencyTimer:  c[regLatencyTimer],
		InterruptLine: c[regInterruptLine],
		BARSizes:      e.sizes,
	}
	for i := range s.BARs {
		s.BARs[i] = binary.LittleEndian.Uint32(c[regBAR0+4*i:])
	}
	for k, cs := range e.caps {
		s.Capabilities = append(s.Capabilities, CapabilityState{ID: c[cs.off+capListID], Body: e.body(k)})
	}
	return s
}

// Restore checks s against this endpoint's identity and shape (vendor and
// device ID, BAR sizes, capability count, IDs and lengths) and that it
// holds only values a guest could have written (BARs aligned to their
// size, Command and capability bits within their writable masks), refusing
// with an error naming the first difference. It then applies s and calls
// Hooks.BARChanged for every implemented BAR and CapabilityWritten for
// every capability, so the owner re-creates its mappings and capability
// state. It is meant for a paused machine, while no vCPU makes config
// accesses.
func (e *Endpoint) Restore(s EndpointState) error {
	e.mu.Lock()
	if err := e.check(s); err != nil {
		e.mu.Unlock()
		return err
	}
	c := &e.cfg
	binary.LittleEndian.PutUint16(c[regCommand:], s.Command)
	c[regCacheLineSize] = s.CacheLineSize
	c[regLatencyTimer] = s.LatencyTimer
	c[regInterruptLine] = s.InterruptLine
	for i, v := range s.BARs {
		if e.sizes[i] != 0 {
			binary.LittleEndian.PutUint32(c[regBAR0+4*i:], v)
		}
	}
	for k, cs := range e.caps {
		copy(c[int(cs.off)+capHeader:], s.Capabilities[k].Body)
	}
	dec := e.decode()
	bodies := make([][]byte, len(e.caps))
	for k := range e.caps {
		bodies[k] = e.body(k)
	}
	e.mu.Unlock()

	if e.hooks == nil {
		return nil
	}
	for i, d := range dec {
		if e.sizes[i] != 0 {
			e.hooks.BARChanged(i, d.addr, d.mapped)
		}
	}
	for k, b := range bodies {
		e.hooks.CapabilityWritten(k, b)
	}
	return nil
}

// check reports why s cannot be restored onto e; e.mu is held.
func (e *Endpoint) check(s EndpointState) error {
	c := &e.cfg
	if v, d := binary.LittleEndian.Uint16(c[regVendorID:]), binary.LittleEndian.Uint16(c[regDeviceID:]); s.VendorID != v || s.DeviceID != d {
		return fmt.Errorf("pci: state of device %04x:%04x, endpoint is %04x:%04x", s.VendorID, s.DeviceID, v, d)
	}
	if s.Command&^cmdWritableMask != 0 {
		return fmt.Errorf("pci: command %#x sets bits the endpoint does not implement", s.Command)
	}
	for i, size := range e.sizes {
		if s.BARSizes[i] != size {
			return fmt.Errorf("pci: BAR %d size %#x in state, endpoint has %#x", i, s.BARSizes[i], size)
		}
		if size == 0 && s.BARs[i] != 0 || size != 0 && s.BARs[i]&(size-1) != 0 {
			return fmt.Errorf("pci: BAR %d value %#x does not fit its size %#x", i, s.BARs[i], size)
		}
	}
	if len(s.Capabilities) != len(e.caps) {
		return fmt.Errorf("pci: %d capabilities in state, endpoint has %d", len(s.Capabilities), len(e.caps))
	}
	for k, cs := range e.caps {
		sc := s.Capabilities[k]
		if id := c[cs.off+capListID]; sc.ID != id {
			return fmt.Errorf("pci: capability %d has ID %#x in state, endpoint has %#x", k, sc.ID, id)
		}
		if len(sc.Body) != cs.len {
			return fmt.Errorf("pci: capability %d (ID %#x) body is %d bytes in state, endpoint has %d", k, sc.ID, len(sc.Body), cs.len)
		}
		start := int(cs.off) + capHeader
		for j, b := range sc.Body {
			if m := e.wmask[start+j]; (b^c[start+j])&^m != 0 {
				return fmt.Errorf("pci: capability %d (ID %#x) byte %d is %#x in state, read-only bits differ from %#x", k, sc.ID, j, b, c[start+j])
			}
		}
	}
	return nil
}
