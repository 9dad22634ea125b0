package guestabi

import "testing"

func TestPhaseNamesRoundTrip(t *testing.T) {
	for i := 0; i < 256; i++ {
		p := Phase(i)
		s := p.String()
		got, err := ParsePhase(s)
		if err != nil || got != p {
			t.Fatalf("ParsePhase(%q) = %v, %v; want %v", s, got, err, p)
		}
	}
	for _, bad := range []string{"", "nope", "guest-0x01", "host-0x20", "guest-0x100", "guest-0x", "host-zz"} {
		if _, err := ParsePhase(bad); err == nil {
			t.Errorf("ParsePhase(%q) succeeded", bad)
		}
	}
}
