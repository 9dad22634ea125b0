// Package boottimer is the boot-timer device. It stamps the phases of a
// boot against the VMM's own process start: the host marks its phases
// (memory ready, first KVM_RUN, ...) directly, and the guest marks its
// own by writing a one-byte phase code to an I/O port. One monotonic
// clock for both sides is what lets a boot be split into "VMM setup",
// "kernel" and "userland" without trusting the guest's clock, which under
// nested virtualization runs at the emulator's whim.
//
// The port and the phase codes are the guest's side of the contract
// (package guestabi); the report vmm prints and the boot benchmark parses
// is package boottimer/report. The port is write-only and one byte wide.
// Any guest can use it: an init that writes a code to
// guestabi.BootTimerPort (outb, or a write at that offset of /dev/port)
// gets its phase in `vmm -boot-timer`'s report. Elsewhere (QEMU, kvmtool,
// bare metal) nothing answers at that port, so the write is harmless.
package boottimer

import (
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
)

// Timer holds at most one stamp per phase code: the first. Later marks of
// the same phase are dropped, because a boot has one "ready" and a guest
// that repeats a code (a re-run init, a loop) must not move it. The table
// is fixed at 256 entries, one per possible code, so nothing a guest
// writes allocates or grows anything.
//
// A Timer is safe for concurrent use: Mark and Write are lock-free.
type Timer struct {
	start time.Time
	// at[p] is the stamp's offset from start in nanoseconds plus one;
	// zero means not stamped.
	at [256]atomic.Int64
}

// New returns a Timer whose clock starts at start, which is stamped as
// VMMStart. start should be taken first thing in main.
func New(start time.Time) *Timer {
	t := &Timer{start: start}
	t.at[guestabi.VMMStart].Store(1)
	return t
}

// Mark stamps a host phase now, unless it was stamped before.
func (t *Timer) Mark(p guestabi.Phase) {
	t.stamp(p, time.Since(t.start))
}

func (t *Timer) stamp(p guestabi.Phase, d time.Duration) {
	if d < 0 {
		d = 0 // a start time in the future: clamp rather than lose the stamp
	}
	t.at[p].CompareAndSwap(0, int64(d)+1)
}

// Read answers a guest read of the port with all ones, as an empty port
// on a PC reads: the device is write-only.
func (t *Timer) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// Write takes a guest's one-byte write of a phase code. Writes of any
// other width or offset, and host-only codes, are ignored.
func (t *Timer) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 {
		return
	}
	p := guestabi.Phase(data[0])
	if p < guestabi.GuestMin {
		return
	}
	t.Mark(p)
}

// Stamps returns the stamped phases in time order (ties in code order).
func (t *Timer) Stamps() []report.Stamp {
	var out []report.Stamp
	for i := range t.at {
		if v := t.at[i].Load(); v != 0 {
			out = append(out, report.Stamp{Phase: guestabi.Phase(i), Since: time.Duration(v - 1)})
		}
	}
	// sort.Slice, not slices.SortFunc: a generic sort is about 10 KB
	// of code per element type in every vmm, for a few stamps a run.
	sort.Slice(out, func(i, j int) bool {
		if out[i].Since != out[j].Since {
			return out[i].Since < out[j].Since
		}
		return out[i].Phase < out[j].Phase
	})
	return out
}

// WriteReport writes one line per stamp, in time order.
func (t *Timer) WriteReport(w io.Writer) error {
	var b strings.Builder
	for _, s := range t.Stamps() {
		b.WriteString(s.Format())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
