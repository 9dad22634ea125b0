package fs

import (
	"fmt"
	"sync"

	"github.com/vmm-dev/vmm/virtio"
)

// worker serves one queue: run pops chains and hands them to handler
// goroutines, which answer them and complete them in whatever order they
// finish.
type worker struct {
	d         *Device
	index     int
	q         *virtio.Queue
	n         virtio.Notifier
	interrupt func()
	fail      func(error)
	stop      <-chan struct{}

	// mu guards q, which run (popping) and the handlers (pushing)
	// share, and failed.
	mu     sync.Mutex
	failed bool

	// free holds the chains not in use and work the popped ones; there
	// are inFlight chains in all, so sending to either never blocks.
	free     chan *virtio.Chain
	work     chan *virtio.Chain
	handlers sync.WaitGroup
	inFlight int
}

func newWorker(d *Device, index int, q *virtio.Queue, n virtio.Notifier, interrupt func(), fail func(error), inFlight int) *worker {
	w := &worker{
		d: d, index: index, q: q, n: n, interrupt: interrupt, fail: fail, stop: d.stop,
		free:     make(chan *virtio.Chain, inFlight),
		work:     make(chan *virtio.Chain, inFlight),
		inFlight: inFlight,
	}
	for range inFlight {
		w.free <- virtio.NewChain()
	}
	return w
}

func (w *worker) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// run sleeps on the notifier and drains the queue on every wake-up,
// until Reset, a closed notifier or a malformed queue; then it waits for
// the requests in flight.
func (w *worker) run() {
	defer w.d.wg.Done()
	for range w.inFlight {
		w.handlers.Add(1)
		go w.handle()
	}
	defer func() {
		close(w.work)
		w.handlers.Wait()
	}()
	for {
		if err := w.n.Wait(); err != nil || w.stopped() {
			return
		}
		if !w.drain() {
			return
		}
	}
}

// drain passes every available chain to the handlers, with
// notifications off, waiting for a free chain when all are in flight;
// then it turns notifications back on and goes round again if chains
// slipped in meanwhile (virtio v1.2 §2.7.10). It returns false when the
// worker must stop: on Reset or a malformed queue.
func (w *worker) drain() bool {
	for {
		w.mu.Lock()
		w.q.DisableNotify()
		w.mu.Unlock()
		for {
			var c *virtio.Chain
			select {
			case c = <-w.free:
			case <-w.stop:
				return false
			}
			w.mu.Lock()
			ok, err := w.q.Pop(c)
			if err != nil {
				w.failed = true
			}
			w.mu.Unlock()
			if err != nil {
				w.free <- c
				w.fail(fmt.Errorf("virtio-fs %s: queue %d: %w", w.d.tag, w.index, err))
				return false
			}
			if !ok {
				w.free <- c
				break
			}
			w.work <- c
		}
		w.mu.Lock()
		more := w.q.EnableNotify()
		w.mu.Unlock()
		if !more || w.stopped() {
			return !w.stopped()
		}
	}
}

// handle answers chains until run closes work. Once the queue failed,
// answers are dropped: the device must not use the queue any more
// (virtio v1.2 §2.1.2), and the driver resets it.
func (w *worker) handle() {
	defer w.handlers.Done()
	for c := range w.work {
		n := w.d.srv.Handle(c.Readable, c.Writable)
		need := false
		w.mu.Lock()
		if !w.failed {
			w.q.Push(c.Head, uint32(n))
			need = w.q.NeedInterrupt()
		}
		w.mu.Unlock()
		if need {
			w.interrupt()
		}
		c.Readable, c.Writable = nil, nil // drop references to guest RAM
		w.free <- c
	}
}
