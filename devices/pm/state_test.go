package pm

import "testing"

func TestStateRoundTrip(t *testing.T) {
	p := New(nil, nil)
	p.Restore(State{Status: 0xffff, Enable: 0xffff, Control: 0xffff})
	s := p.State()
	if s.Status != pm1StsMask || s.Enable != pm1EnMask || s.Control != pm1CntStored {
		t.Fatalf("restored %+v: want only the storable bits", s)
	}
	q := New(nil, nil)
	q.Restore(s)
	if q.State() != s {
		t.Errorf("round trip %+v, want %+v", q.State(), s)
	}
}
