package pci

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/internal/pack"
)

// guestState programs an endpoint the way a running guest leaves it.
func guestState(e *Endpoint) {
	wcfg(e, tCommand, 2, tCmdMem|tCmdMaster|tCmdINTxOff)
	wcfg(e, 0x0c, 2, 0x4010)
	wcfg(e, tIntLine, 1, 0x0b)
	wcfg(e, tBAR0+8, 4, 0xd0008000)
	wcfg(e, 0x53, 1, 0x80)
}

func TestStateRoundTrip(t *testing.T) {
	e, _ := newTestEndpoint()
	guestState(e)
	s := e.State()

	// Through package pack, as a snapshot stores it.
	js, err := pack.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var s2 EndpointState
	if err := pack.Unmarshal(js, &s2); err != nil {
		t.Fatal(err)
	}

	f, r := newTestEndpoint()
	if err := f.Restore(s2); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := f.State(); !reflect.DeepEqual(got, s) {
		t.Errorf("restored state %+v, want %+v", got, s)
	}
	for off := uint16(0); off < ConfigSize; off += 4 {
		if a, b := cfg32(e, off), cfg32(f, off); a != b {
			t.Errorf("dword %#x: restored %#x, original %#x", off, b, a)
		}
	}
	body := testCaps()[1].Body
	body[1] = 0x80
	want := []event{
		barEv(0, 0xc0001000, true),
		barEv(2, 0xd0008000, true),
		capEv(0, testCaps()[0].Body...),
		capEv(1, body...),
	}
	if got := r.take(); !reflect.DeepEqual(got, want) {
		t.Errorf("Restore hooks %v, want %v", got, want)
	}
}

func TestRestoreRefusesMismatch(t *testing.T) {
	tests := []struct {
		name   string
		change func(s *EndpointState)
		err    string
	}{
		{"other device", func(s *EndpointState) { s.DeviceID++ }, "state of device"},
		{"BAR size", func(s *EndpointState) { s.BARSizes[2] = 0x2000 }, "BAR 2 size"},
		{"extra BAR", func(s *EndpointState) { s.BARSizes[4] = 0x1000 }, "BAR 4 size"},
		{"unaligned BAR", func(s *EndpointState) { s.BARs[0] |= 0x10 }, "BAR 0 value"},
		{"value in unimplemented BAR", func(s *EndpointState) { s.BARs[1] = 0x1000 }, "BAR 1 value"},
		{"command bits", func(s *EndpointState) { s.Command |= 1 }, "command"},
		{"capability count", func(s *EndpointState) { s.Capabilities = s.Capabilities[:1] }, "1 capabilities in state, endpoint has 2"},
		{"capability ID", func(s *EndpointState) { s.Capabilities[1].ID = 5 }, "capability 1 has ID"},
		{"capability length", func(s *EndpointState) { s.Capabilities[0].Body = s.Capabilities[0].Body[:4] }, "capability 0 (ID 0x9) body is 4 bytes"},
		{"read-only capability bits", func(s *EndpointState) { s.Capabilities[1].Body[1] |= 0x01 }, "read-only bits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEndpoint()
			guestState(e)
			s := e.State()
			tc.change(&s)
			f, r := newTestEndpoint()
			before := f.State()
			err := f.Restore(s)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Restore = %v, want error containing %q", err, tc.err)
			}
			if !reflect.DeepEqual(f.State(), before) {
				t.Error("a refused Restore changed the endpoint")
			}
			if ev := r.take(); len(ev) != 0 {
				t.Errorf("a refused Restore fired hooks %v", ev)
			}
		})
	}
}
