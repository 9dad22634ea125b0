package rtc

import "fmt"

// State is the CMOS as a snapshot keeps it: its RAM (status A and B
// included), the index latch and the unread status C flags. The time is
// not saved: a restored machine is a fresh one, so its RTC reads the
// host's time from the moment of the restore, as a cold boot's would.
type State struct {
	Index  byte
	NMIOff bool
	RAM    []byte
	Flags  byte
}

// State returns the CMOS's state.
func (c *CMOS) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{Index: c.index, NMIOff: c.nmiOff, RAM: append([]byte(nil), c.ram[:]...), Flags: c.flags}
}

// Restore puts a CMOS made by New in state s, keeping the clock New set.
func (c *CMOS) Restore(s State) error {
	if len(s.RAM) != Size {
		return fmt.Errorf("rtc: %d bytes of CMOS RAM, want %d", len(s.RAM), Size)
	}
	if s.Index >= Size {
		return fmt.Errorf("rtc: index %#x beyond the %d registers", s.Index, Size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index, c.nmiOff, c.flags = s.Index, s.NMIOff, s.Flags
	copy(c.ram[:], s.RAM)
	return nil
}
