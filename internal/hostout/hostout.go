// Package hostout carries a guest's output to a host file without ever
// making the guest, or whoever stops vmm, wait for that file.
//
// A device writes into a Queue from a vCPU thread; the Queue copies the
// bytes into a bounded ring (grown on demand up to its size) and returns at once, and one goroutine per
// Queue does the write(2) calls. A reader that stalls (a full pipe
// nobody drains, a terminal stopped with Ctrl-S) therefore blocks only
// that goroutine: the vCPU keeps running, -timeout and signals still
// stop the machine, and the exit path waits for output only as long as
// it chooses (Drain) and never on a write(2) in progress. Exiting the
// process with the goroutine still blocked is fine; nothing else waits
// for it.
//
// What happens when the ring is full is the caller's choice of type:
//
//   - A Queue (New) drops what does not fit and counts it. It is for
//     output a person reads and the guest must not wait for: the console.
//   - A Paced queue (NewPaced) also never blocks, but tells a device when
//     it has room (Ready) and when room comes back (NotifyReady), so a
//     UART can hold its transmitter busy and the guest waits, not the
//     vCPU. It is for output that must arrive whole: a job's stdout.
//
// A write error other than EAGAIN (EPIPE once the reader has gone,
// EIO from a hung-up terminal) ends the queue's output for good: what
// is queued and everything written later is discarded and counted, and
// a Paced queue reports room from then on so the guest never waits for
// a reader that is not there.
package hostout

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"time"
)

// ErrStalled is Drain's error when the reader stopped taking bytes.
var ErrStalled = errors.New("hostout: output not being read")

// ErrFull is Write's error for the bytes it had no room for.
var ErrFull = errors.New("hostout: queue full")

// retryAfter is how long the writer waits after EAGAIN, which a host fd
// gives when someone made it non-blocking after Go opened it: polling at
// this rate costs nothing and keeps the bytes instead of losing them.
const retryAfter = 10 * time.Millisecond

// maxChunk bounds one write(2). Drain measures progress by completed
// writes, so a large write to a slow but live reader (a terminal over a
// slow link) must not look like a stalled one; a page is also what a
// pipe takes atomically.
const maxChunk = 4096

// drainPoll is how often Drain looks at the writer's progress. Drain runs
// once, on the exit path, so polling is simpler than a condition
// variable that would also have to wake on a context and a stall timer.
const drainPoll = 2 * time.Millisecond

// Queue is a bounded, never-blocking writer in front of a host file. Its
// zero value is not usable; call New.
type Queue struct {
	w    io.Writer
	wake chan struct{} // a token when bytes arrive or Close is called

	mu      sync.Mutex
	buf     []byte // ring: n bytes from head are waiting; grows up to size
	size    int    // the most bytes the queue holds
	head, n int
	written uint64 // bytes the host took
	dropped uint64 // bytes discarded: no room, reader gone, or closed
	err     error  // the write error that ended output
	closed  bool
	midLine bool // the last byte queued was not a newline

	// For Paced: the room a device asked for and was refused, whom to
	// tell when it is there (every device writing to the queue), and the
	// room Ready keeps free for the promises devices may hold.
	want    int
	notify  []func()
	reserve int
}

// New returns a Queue of size bytes that writes to w from its own
// goroutine, dropping what does not fit. The ring starts at one write's
// worth and grows only when a reader falls that far behind: size is
// for a burst a slow reader may need held, and a process that never
// sees one should not pay for it (issue 12).
func New(w io.Writer, size int) *Queue {
	if size < 1 {
		size = 1
	}
	q := &Queue{w: w, wake: make(chan struct{}, 1), buf: make([]byte, min(size, maxChunk)), size: size}
	go q.run()
	return q
}

// Write queues p for the host and returns at once. The bytes that do not
// fit are dropped and counted (the error is then ErrFull); once output
// has failed or the queue is closed, everything is discarded and counted
// (the error says why). It allocates only when the backlog reaches a
// new high (the ring doubles, at most a handful of times in a queue's
// life), so a device may call it for every byte a guest writes.
func (q *Queue) Write(p []byte) (int, error) {
	q.mu.Lock()
	if q.err != nil || q.closed {
		err := q.err
		if err == nil {
			err = io.ErrClosedPipe
		}
		q.dropped += uint64(len(p))
		q.mu.Unlock()
		return 0, err
	}
	n := min(len(p), q.size-q.n)
	if q.n+n > len(q.buf) {
		q.grow(q.n + n)
	}
	for i := 0; i < n; {
		tail := (q.head + q.n) % len(q.buf)
		c := copy(q.buf[tail:], p[i:n])
		q.n += c
		i += c
	}
	q.dropped += uint64(len(p) - n)
	if n > 0 {
		q.midLine = p[n-1] != '\n'
	}
	q.mu.Unlock()
	if n > 0 {
		q.poke()
	}
	if n < len(p) {
		return n, ErrFull
	}
	return n, nil
}

// grow makes the ring hold at least need bytes, need being at most
// q.size, and moves the waiting bytes to its front. The writer may be
// writing from the old ring without the lock: the bytes it holds are
// the first ones of the new ring, where its update of head expects them.
func (q *Queue) grow(need int) {
	c := len(q.buf)
	for c < need {
		c *= 2
	}
	b := make([]byte, min(c, q.size))
	k := copy(b, q.buf[q.head:min(q.head+q.n, len(q.buf))])
	copy(b[k:], q.buf[:q.n-k])
	q.buf, q.head = b, 0
}

func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine. It writes the ring's first contiguous run
// without holding the lock; Write only appends after it, so the bytes
// being written are never touched until the writer moves head past them.
func (q *Queue) run() {
	for {
		q.mu.Lock()
		for q.n == 0 && !q.closed && q.err == nil {
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		if q.closed || q.err != nil {
			q.mu.Unlock()
			return
		}
		chunk := q.buf[q.head:min(q.head+q.n, len(q.buf), q.head+maxChunk)]
		q.mu.Unlock()

		n, err := q.w.Write(chunk)

		q.mu.Lock()
		n = max(0, min(n, len(chunk)))
		if q.closed {
			// Close counted this write as dropped; some of it was not.
			q.written += uint64(n)
			q.dropped -= uint64(n)
			q.mu.Unlock()
			return
		}
		q.head = (q.head + n) % len(q.buf)
		q.n -= n
		if q.n == 0 {
			// Empty: start again at the front, so a reader that keeps
			// up only ever touches the ring's first pages, and the
			// rest of a large ring (the console's is 1 MiB) is never
			// made resident unless a burst really needs it.
			q.head = 0
		}
		q.written += uint64(n)
		retry := false
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) {
				retry = true
			} else {
				q.err = err
				q.dropped += uint64(q.n)
				q.head, q.n = 0, 0
			}
		}
		notify := q.takeNotify()
		q.mu.Unlock()
		if notify != nil {
			notify()
		}
		if retry {
			time.Sleep(retryAfter)
		}
	}
}

// takeNotify returns the Paced callback to run, if a device is waiting
// and its room is there (or will never be needed again); the caller runs
// it after unlocking, because the device calls back into Ready.
func (q *Queue) takeNotify() func() {
	if q.want == 0 || len(q.notify) == 0 {
		return nil
	}
	if q.err == nil && !q.closed && q.size-q.n < q.want {
		return nil
	}
	q.want = 0
	fs := q.notify
	return func() {
		for _, f := range fs {
			f()
		}
	}
}

// Drain waits until every byte queued before the call has been written,
// the context is done (its error), or, if stall is positive, the writer
// made no progress for that long (ErrStalled). Bytes left when it gives
// up stay queued. A queue whose output failed is drained: its error is
// Err's, not Drain's.
func (q *Queue) Drain(ctx context.Context, stall time.Duration) error {
	q.mu.Lock()
	target := q.written + uint64(q.n)
	q.mu.Unlock()
	last, lastAt := uint64(0), time.Now()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		q.mu.Lock()
		written, done := q.written, q.written >= target || q.err != nil || q.closed || q.n == 0
		q.mu.Unlock()
		if done {
			return nil
		}
		if written != last {
			last, lastAt = written, time.Now()
		} else if stall > 0 && time.Since(lastAt) >= stall {
			return ErrStalled
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops the queue: what is still queued is discarded and counted,
// later writes are discarded, and the writer goroutine ends once a
// write(2) in progress returns. It does not wait for that and is safe
// to call more than once.
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		// A write(2) in progress is counted too: the reader may never
		// take it. The writer takes back what it did write, if it
		// returns.
		q.dropped += uint64(q.n)
		q.head, q.n = 0, 0
	}
	notify := q.takeNotify()
	q.mu.Unlock()
	q.poke()
	if notify != nil {
		notify()
	}
}

// MidLine reports whether the bytes queued so far end in the middle of
// a line (the last one queued was not a newline), so that a message
// written after them needs a newline of its own first: a guest console
// that stopped mid-line. A queue with nothing written is not.
func (q *Queue) MidLine() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.midLine
}

// Dropped is how many bytes were discarded so far.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Err is the write error that ended the queue's output, or nil.
func (q *Queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Pending is how many bytes wait for the host.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Paced is a Queue that tells the devices writing to it when it has
// room, so a device can make the guest wait rather than lose bytes. It
// satisfies serial.Paced and console.Paced.
type Paced struct {
	*Queue
}

// NewPaced returns a Paced queue of size bytes writing to w.
func NewPaced(w io.Writer, size int) *Paced {
	return &Paced{New(w, size)}
}

// Ready reports whether the asking device may write n more bytes: Write
// would take them even if every other device writing to the queue then
// wrote all it may still write on the yeses it had (the most each said
// it has outstanding, NotifyReady). When it reports false, the functions
// given to NotifyReady are called once there is that room, from the
// writer goroutine with no lock held. After the output failed or the
// queue closed it always reports true: the bytes will be discarded, and
// nobody should wait for that.
//
// The reserve is what keeps two devices from losing bytes: a job's UART,
// told yes, shows its transmitter ready and the guest writes a FIFO load
// on a vCPU, while the job's console port, told yes on its own goroutine,
// writes a piece; checked against the free room alone, each promise
// could be spent by the other's write.
func (p *Paced) Ready(n int) bool {
	q := p.Queue
	q.mu.Lock()
	defer q.mu.Unlock()
	// A device that asks for more than the ring holds (or, with the
	// reserve, more than it holds) is told yes once the ring is empty;
	// such a yes keeps no reserve for the others. vmm's job queue
	// (256 KiB) is far larger than its devices' reserve (4 KiB and 16).
	need := min(n+q.reserve, q.size)
	if q.err != nil || q.closed || q.size-q.n >= need {
		return true
	}
	q.want = max(q.want, need)
	return false
}

// NotifyReady adds a device writing to the queue: each (a job's UART and
// its virtio-console port) calls it once, when it is built. f is called
// when room comes back after a refusal, for every device, since Ready does
// not say who was refused. most is the most bytes the device may write,
// at any moment, on the strength of a yes it had (a UART's FIFO load,
// which the guest writes whole after THRE even if the UART's next Ready
// said no; a console's piece); Ready keeps the sum of them free.
func (p *Paced) NotifyReady(f func(), most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = append(p.notify, f)
	p.reserve += max(most, 0)
}
