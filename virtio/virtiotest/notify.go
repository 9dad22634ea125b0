package virtiotest

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is what Notifier.Wait returns once Close was called.
var ErrClosed = errors.New("virtiotest: notifier closed")

// Notifier is a virtio.Notifier for tests: Signal (or Notify, the driver's
// kick) wakes one Wait, notifications coalesce, and Close makes Wait
// return ErrClosed. Idle lets the test wait until the device's worker is
// blocked in Wait with nothing pending, which also orders everything the
// worker did before with what the test does next (for the race
// detector). Wait and Signal allocate nothing.
type Notifier struct {
	mu      sync.Mutex
	cond    sync.Cond // on mu: pending, closed or waiting changed
	pending bool
	closed  bool
	waiting int // goroutines blocked in Wait
	signals atomic.Uint64
}

// NewNotifier returns an open notifier with nothing pending.
func NewNotifier() *Notifier {
	n := &Notifier{}
	n.cond.L = &n.mu
	return n
}

// Wait implements virtio.Notifier.
func (n *Notifier) Wait() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for !n.pending && !n.closed {
		n.waiting++
		n.cond.Broadcast() // for Idle
		n.cond.Wait()
		n.waiting--
	}
	if n.closed {
		return ErrClosed
	}
	n.pending = false
	return nil
}

// Signal implements virtio.Notifier.
func (n *Notifier) Signal() {
	n.signals.Add(1)
	n.mu.Lock()
	n.pending = true
	n.cond.Broadcast()
	n.mu.Unlock()
}

// Notify is Signal under the name of what the driver does: a kick.
func (n *Notifier) Notify() { n.Signal() }

// Signals counts Signal calls.
func (n *Notifier) Signals() uint64 { return n.signals.Load() }

// Close makes every current and future Wait return ErrClosed.
func (n *Notifier) Close() {
	n.mu.Lock()
	n.closed = true
	n.cond.Broadcast()
	n.mu.Unlock()
}

// Idle waits up to d for a goroutine to be blocked in Wait with no
// notification pending, and reports whether one was.
func (n *Notifier) Idle(d time.Duration) bool {
	timedOut := false
	t := time.AfterFunc(d, func() {
		n.mu.Lock()
		timedOut = true
		n.cond.Broadcast()
		n.mu.Unlock()
	})
	defer t.Stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for !(n.waiting > 0 && !n.pending) {
		if timedOut {
			return false
		}
		n.cond.Wait()
	}
	return true
}

// Interrupt is a virtio.Interrupt for tests: Trigger counts and never
// blocks or allocates; Wait and C let a test wait for the next one.
// Pass its Trigger method as virtio.Env.Interrupt.
type Interrupt struct {
	n  atomic.Uint64
	ch chan struct{}
}

// NewInterrupt returns an interrupt line that has never fired.
func NewInterrupt() *Interrupt {
	return &Interrupt{ch: make(chan struct{}, 1)}
}

// Trigger implements virtio.Interrupt.
func (i *Interrupt) Trigger() {
	i.n.Add(1)
	select {
	case i.ch <- struct{}{}:
	default:
	}
}

// Count is the number of Triggers so far.
func (i *Interrupt) Count() uint64 { return i.n.Load() }

// C receives once after any number of Triggers since the last receive.
func (i *Interrupt) C() <-chan struct{} { return i.ch }

// Wait waits up to d for a Trigger not yet waited for and reports whether
// one came.
func (i *Interrupt) Wait(d time.Duration) bool {
	select {
	case <-i.ch:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-i.ch:
		return true
	case <-t.C:
		return false
	}
}
