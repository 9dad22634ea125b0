package boottimer

import (
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
)

// FuzzGuestWrite drives the port with what a guest can do: a sequence of
// accesses, each an offset, a width and bytes. Nothing may panic, host
// phases must stay unforgeable, and each phase holds at most one stamp.
func FuzzGuestWrite(f *testing.F) {
	f.Add([]byte{0, 1, byte(guestabi.InitStart), 0, 1, byte(guestabi.Ready)})
	f.Add([]byte{0, 1, byte(guestabi.Poweroff), 0, 4, 1, 2, 3, 4, 3, 1, 0x42})
	f.Fuzz(func(t *testing.T, in []byte) {
		tm := New(time.Now())
		for len(in) >= 2 {
			off, width := uint64(in[0]%4), int(in[1]%9)
			in = in[2:]
			if width > len(in) {
				width = len(in)
			}
			data := in[:width]
			in = in[width:]
			if off == 3 {
				tm.Read(off, make([]byte, width))
				continue
			}
			tm.Write(off, data)
		}
		seen := map[guestabi.Phase]bool{}
		for _, s := range tm.Stamps() {
			if seen[s.Phase] {
				t.Fatalf("phase %v stamped twice", s.Phase)
			}
			seen[s.Phase] = true
			if s.Phase < guestabi.GuestMin && s.Phase != guestabi.VMMStart {
				t.Fatalf("guest stamped host phase %v", s.Phase)
			}
			if s.Since < 0 {
				t.Fatalf("negative stamp %v", s)
			}
			// The report of every stamp parses back.
			got, ok, err := report.ParseLine(s.Format())
			if !ok || err != nil || got.Phase != s.Phase {
				t.Fatalf("report line %q: %v %v %v", s.Format(), got, ok, err)
			}
		}
		if !seen[guestabi.VMMStart] {
			t.Fatal("vmm-start lost")
		}
	})
}
