package nested

import "time"

// watchdog decides when L1 counts as frozen: QEMU TCG with nested SVM
// occasionally stops the whole L1, and then nothing arrives on either
// serial port. The agent's heartbeats keep a quiet job from looking frozen.
//
// It only watches while armed (a job or exec is outstanding), because an
// idle L1 between jobs is nobody's concern. Not safe for concurrent use;
// L1 guards it with its mutex. Times are passed in so tests need no clock.
type watchdog struct {
	timeout time.Duration
	armed   int
	last    time.Time
}

func (w *watchdog) activity(now time.Time) { w.last = now }

func (w *watchdog) arm(now time.Time) {
	if w.armed == 0 {
		w.last = now
	}
	w.armed++
}

func (w *watchdog) disarm() {
	if w.armed > 0 {
		w.armed--
	}
}

// expired reports how long L1 has been silent, and whether that is a freeze.
func (w *watchdog) expired(now time.Time) (time.Duration, bool) {
	if w.armed == 0 || w.timeout <= 0 {
		return 0, false
	}
	silent := now.Sub(w.last)
	return silent, silent >= w.timeout
}

// pollInterval is how often L1 checks the watchdog: often enough that a
// freeze is reported soon after the timeout, and not more often than needed.
func (w *watchdog) pollInterval() time.Duration {
	p := w.timeout / 8
	if p > time.Second {
		p = time.Second
	}
	if p < 5*time.Millisecond {
		p = 5 * time.Millisecond
	}
	return p
}
