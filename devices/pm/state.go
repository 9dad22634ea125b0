package pm

// State is the PM1 block as a snapshot keeps it.
type State struct {
	Status  uint16
	Enable  uint16
	Control uint16
}

// State returns the block's registers.
func (p *PM) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return State{Status: p.sts, Enable: p.en, Control: p.cnt}
}

// Restore sets the registers, keeping only the bits a guest could have
// set.
func (p *PM) Restore(s State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts, p.en, p.cnt = s.Status&pm1StsMask, s.Enable&pm1EnMask, s.Control&pm1CntStored
}
