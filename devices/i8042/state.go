package i8042

import "fmt"

// State is the controller as a snapshot keeps it.
type State struct {
	RAM     []byte
	OutPort byte
	Out     byte
	OBF     bool
	AuxOut  bool
	Pending byte
}

// State returns the controller's state.
func (c *Controller) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{RAM: append([]byte(nil), c.ram[:]...), OutPort: c.outPort, Out: c.out, OBF: c.obf, AuxOut: c.auxOut, Pending: c.pending}
}

// Restore puts a controller made by New in state s.
func (c *Controller) Restore(s State) error {
	if len(s.RAM) != len(c.ram) {
		return fmt.Errorf("i8042: %d bytes of RAM, want %d", len(s.RAM), len(c.ram))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(c.ram[:], s.RAM)
	c.outPort, c.out, c.obf, c.auxOut, c.pending = s.OutPort, s.Out, s.OBF, s.AuxOut, s.Pending
	return nil
}
