package hostout

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gatedWriter is a host file whose reader the test controls: every
// Write waits for a token on open (or for open to be closed), then
// answers from errs if anything is left there.
type gatedWriter struct {
	open chan struct{}

	mu    sync.Mutex
	got   bytes.Buffer
	calls int
	errs  []error
}

func newGated() *gatedWriter { return &gatedWriter{open: make(chan struct{})} }

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	if len(g.errs) > 0 {
		err := g.errs[0]
		g.errs = g.errs[1:]
		if err != nil {
			return 0, err
		}
	}
	g.got.Write(p)
	return len(p), nil
}

func (g *gatedWriter) bytes() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return bytes.Clone(g.got.Bytes())
}

func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s took longer than %v", what, d)
	}
}

func TestWriteNeverBlocks(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		writes    []string
		wantTaken string // what reaches the host once it reads
		dropped   uint64
	}{
		{"fits", 16, []string{"hello ", "world"}, "hello world", 0},
		{"exactly full", 4, []string{"ab", "cd"}, "abcd", 0},
		{"overflow drops the tail", 4, []string{"abc", "def"}, "abcd", 2},
		{"drops whole writes when full", 3, []string{"abc", "d", "e"}, "abc", 2},
		{"one byte at a time", 8, []string{"x", "y", "z"}, "xyz", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGated()
			q := New(w, tc.size)
			within(t, time.Second, "writes to a stalled host", func() {
				for _, s := range tc.writes {
					q.Write([]byte(s))
				}
			})
			if got := q.Dropped(); got != tc.dropped {
				t.Errorf("dropped %d, want %d", got, tc.dropped)
			}
			close(w.open)
			if err := q.Drain(context.Background(), 0); err != nil {
				t.Fatal(err)
			}
			if got := w.bytes(); string(got) != tc.wantTaken {
				t.Errorf("host got %q, want %q", got, tc.wantTaken)
			}
			q.Close()
		})
	}
}

// TestRingGrows fills a large queue behind a stalled reader so that the
// ring, which starts small, wraps and then grows while the writer is in
// the middle of a write from the old ring: every byte arrives once and
// in order, and only what exceeds the queue's size is dropped.
func TestRingGrows(t *testing.T) {
	const size = 1 << 16
	w := &enteringWriter{gatedWriter: newGated(), entered: make(chan int, 1)}
	q := New(w, size)
	defer q.Close()
	var want []byte
	put := func(n int) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(len(want) + i*31)
		}
		if k, err := q.Write(b); k != n || err != nil {
			t.Fatalf("Write of %d bytes: %d, %v", n, k, err)
		}
		want = append(want, b...)
	}
	put(maxChunk - 96)
	<-w.entered // the writer holds those bytes and waits for the reader
	put(96)     // the first ring is full
	w.open <- struct{}{}
	if n := <-w.entered; n != 96 { // the writer holds the ring's last 96 bytes
		t.Fatalf("writer's second write is %d bytes, want 96", n)
	}
	put(3000) // wraps to the ring's front
	put(5000) // grows the ring under the writer
	put(size - 8096)
	if k, err := q.Write([]byte("x")); k != 0 || !errors.Is(err, ErrFull) {
		t.Fatalf("Write to a full queue: %d, %v; want 0, ErrFull", k, err)
	}
	close(w.open)
	go func() {
		for range w.entered {
		}
	}()
	if err := q.Drain(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if got := w.bytes(); !bytes.Equal(got, want) {
		t.Fatalf("host got %d bytes, not the %d written in order", len(got), len(want))
	}
	if got := q.Dropped(); got != 1 {
		t.Errorf("dropped %d, want 1", got)
	}
}

// enteringWriter is a gatedWriter that says how long each write is as
// it starts, before it waits for the reader.
type enteringWriter struct {
	*gatedWriter
	entered chan int
}

func (e *enteringWriter) Write(p []byte) (int, error) {
	e.entered <- len(p)
	return e.gatedWriter.Write(p)
}

// TestRingWraps sends far more than the ring holds through a reader that
// takes what it is given: every byte arrives once and in order.
func TestRingWraps(t *testing.T) {
	w := newGated()
	close(w.open)
	q := New(w, 7)
	var want []byte
	for i := range 5000 {
		b := []byte{byte(i), byte(i >> 8), byte(i * 7)}[:1+i%3]
		for q.Pending()+len(b) > 7 {
			time.Sleep(10 * time.Microsecond)
		}
		q.Write(b)
		want = append(want, b...)
	}
	if err := q.Drain(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if got := w.bytes(); !bytes.Equal(got, want) || q.Dropped() != 0 {
		t.Fatalf("host got %d bytes (equal %v), dropped %d; want %d", len(got), bytes.Equal(got, want), q.Dropped(), len(want))
	}
}

func TestDrain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reader  string // "stalled", "reads", "gone"
		ctx     time.Duration
		stall   time.Duration
		want    error
		maxTime time.Duration
	}{
		{"reader keeps up", "reads", 0, 0, nil, time.Second},
		{"stalled reader, stall limit", "stalled", 0, 50 * time.Millisecond, ErrStalled, time.Second},
		{"stalled reader, context", "stalled", 50 * time.Millisecond, 0, context.DeadlineExceeded, time.Second},
		{"reader gone", "gone", 0, 0, nil, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGated()
			if tc.reader == "gone" {
				w.errs = []error{syscall.EPIPE}
			}
			if tc.reader != "stalled" {
				close(w.open)
			}
			q := New(w, 64)
			q.Write([]byte("pending output"))
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			var err error
			within(t, tc.maxTime, "Drain", func() { err = q.Drain(ctx, tc.stall) })
			if !errors.Is(err, tc.want) {
				t.Errorf("Drain = %v, want %v", err, tc.want)
			}
			if tc.reader == "stalled" {
				if q.Pending() != len("pending output") {
					t.Errorf("%d bytes pending after giving up, want them kept", q.Pending())
				}
				q.Close()
				if got := q.Dropped(); got != 14 {
					t.Errorf("Close counted %d bytes as dropped, want the 14 a stalled write holds", got)
				}
				// The write returns after all: those bytes were not lost.
				close(w.open)
				deadline := time.Now().Add(time.Second)
				for q.Dropped() != 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if got := q.Dropped(); got != 0 {
					t.Errorf("%d bytes dropped after the stalled write completed", got)
				}
			}
		})
	}
}

// TestReaderGone: after a write error the queue discards and counts, and
// a Paced queue stops making its device wait.
func TestReaderGone(t *testing.T) {
	w := newGated()
	w.errs = []error{&os.PathError{Op: "write", Path: "/dev/stdout", Err: syscall.EPIPE}}
	p := NewPaced(w, 8)
	notified := make(chan struct{}, 1)
	p.NotifyReady(func() { notified <- struct{}{} }, 0)
	p.Write([]byte("12345678"))
	if p.Ready(4) {
		t.Fatal("Ready(4) with the ring full")
	}
	close(w.open)
	select {
	case <-notified:
	case <-time.After(time.Second):
		t.Fatal("device waiting for room never told the reader is gone")
	}
	if err := p.Err(); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Err = %v, want EPIPE", err)
	}
	if !p.Ready(8) {
		t.Error("Ready false after the reader is gone: the guest would wait forever")
	}
	if n, err := p.Write([]byte("more")); n != 0 || !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write after EPIPE = %d, %v", n, err)
	}
	if got := p.Dropped(); got != 12 {
		t.Errorf("dropped %d, want 12", got)
	}
}

func TestEAGAINIsRetried(t *testing.T) {
	w := newGated()
	w.errs = []error{syscall.EAGAIN, syscall.EAGAIN, nil}
	close(w.open)
	q := New(w, 16)
	q.Write([]byte("kept"))
	if err := q.Drain(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if got := w.bytes(); string(got) != "kept" || q.Err() != nil || q.Dropped() != 0 {
		t.Fatalf("host got %q, err %v, dropped %d", got, q.Err(), q.Dropped())
	}
}

func TestPacedReady(t *testing.T) {
	w := newGated()
	p := NewPaced(w, 32)
	notified := make(chan struct{}, 4)
	p.NotifyReady(func() { notified <- struct{}{} }, 0)
	for _, step := range []struct {
		write string
		ask   int
		want  bool
	}{
		{"", 16, true},
		{"0123456789abcdef", 16, true}, // 16 free
		{"x", 16, false},               // 15 free
		{"", 15, true},
		{"", 40, false}, // more than the ring: room for all of it will do
	} {
		p.Write([]byte(step.write))
		if got := p.Ready(step.ask); got != step.want {
			t.Fatalf("after %q: Ready(%d) = %v, want %v", step.write, step.ask, got, step.want)
		}
	}
	select {
	case <-notified:
		t.Fatal("notified before the host read anything")
	default:
	}
	close(w.open)
	select {
	case <-notified:
	case <-time.After(time.Second):
		t.Fatal("no notification once the ring drained")
	}
	if !p.Ready(32) {
		t.Error("drained ring not ready")
	}
	select {
	case <-notified:
		t.Error("a second notification for one refusal")
	case <-time.After(20 * time.Millisecond):
	}
}

// TestStalledPipe is the case that hung vmm: a real pipe nobody reads.
// Writes return at once, Drain gives up, Close returns, and once the
// reader closes its end the queue sees EPIPE (Go raises no SIGPIPE for
// fds other than 1 and 2).
func TestStalledPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	q := New(w, 1<<20)
	chunk := bytes.Repeat([]byte("console output "), 1000)
	within(t, time.Second, "4 MiB into a pipe nobody reads", func() {
		for range 4 << 20 / len(chunk) {
			q.Write(chunk)
		}
	})
	if q.Dropped() == 0 {
		t.Error("nothing dropped although the pipe and the ring are full")
	}
	within(t, time.Second, "Drain with a stall limit", func() {
		if err := q.Drain(context.Background(), 100*time.Millisecond); !errors.Is(err, ErrStalled) {
			t.Errorf("Drain = %v, want ErrStalled", err)
		}
	})
	r.Close()
	deadline := time.Now().Add(time.Second)
	for q.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := q.Err(); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Err = %v after the reader closed, want EPIPE", err)
	}
	within(t, time.Second, "Close", q.Close)
}

// A device writes from its vCPU thread for every byte the guest sends.
func TestWriteAllocatesNothing(t *testing.T) {
	w := newGated()
	close(w.open)
	p := NewPaced(w, 1<<16)
	b := []byte{'x'}
	if n := testing.AllocsPerRun(1000, func() {
		p.Write(b)
		p.Ready(16)
	}); n != 0 {
		t.Fatalf("%v allocations per byte", n)
	}
	full := New(newGated(), 1)
	full.Write(b)
	if n := testing.AllocsPerRun(1000, func() { full.Write(b) }); n != 0 {
		t.Fatalf("%v allocations per dropped byte", n)
	}
}

// Two devices writing to one Paced queue (a job's UART and its console
// port) are both told when room comes back: Ready does not say who was
// refused.
func TestPacedTwoDevices(t *testing.T) {
	w := newGated()
	p := NewPaced(w, 8)
	var a, b = make(chan struct{}, 1), make(chan struct{}, 1)
	p.NotifyReady(func() { a <- struct{}{} }, 0)
	p.NotifyReady(func() { b <- struct{}{} }, 0)
	p.Write([]byte("12345678"))
	if p.Ready(4) {
		t.Fatal("Ready(4) with the ring full")
	}
	close(w.open)
	for i, ch := range []chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatalf("device %d never told of the room", i)
		}
	}
}

// TestPacedPromisesKept: a job's UART and its console port share one
// Paced queue and write from different threads, each after its own Ready
// said yes. Whatever order their checks and writes interleave in, no
// byte is dropped: a yes to one is not spent by the other. Checked
// against the free room alone, it was: the port was told yes with room
// for its piece, the guest went on writing through the UART (each byte
// fitting) before the port's goroutine wrote, and the piece no longer
// fitted (seed 30 lost 361 bytes).
func TestPacedPromisesKept(t *testing.T) {
	const uartLoad, piece = 16, 4096
	for seed := range int64(200) {
		w := newGated() // the reader takes nothing until the end
		p := NewPaced(w, 64<<10+int(seed)*37)
		p.NotifyReady(func() {}, uartLoad)
		p.NotifyReady(func() {}, piece)
		rng := rand.New(rand.NewSource(seed))
		// The UART: after each byte it asks for a FIFO load, and while
		// it is told yes the guest may write up to that many more. The
		// port: asks for a piece, then writes it, often much later.
		uartLeft, uartBusy := 0, false
		portGranted, portBusy := false, false
		for steps := 0; !(uartBusy && portBusy) && steps < 1e6; steps++ {
			if rng.Intn(2) == 0 && !uartBusy {
				if uartLeft == 0 {
					if !p.Ready(uartLoad) {
						uartBusy = true
						continue
					}
					uartLeft = uartLoad
				}
				p.Write([]byte{'u'})
				uartLeft--
				// Linux writes the whole load without looking; the
				// UART asks again after each byte, and a no makes
				// the next load wait, not this one.
				if !p.Ready(uartLoad) {
					uartBusy = uartLeft == 0
				} else {
					uartLeft = uartLoad
				}
			} else if !portBusy {
				if !portGranted {
					if portGranted = p.Ready(piece); !portGranted {
						portBusy = true
					}
					continue
				}
				// The port's goroutine may wait a while for a CPU
				// between its yes and its write; the vCPU goes on.
				if rng.Intn(64) == 0 {
					p.Write(bytes.Repeat([]byte{'c'}, piece))
					portGranted = false
				}
			}
		}
		if got := p.Dropped(); got != 0 {
			t.Fatalf("seed %d: %d bytes dropped with both devices keeping to their yes", seed, got)
		}
		if !uartBusy || !portBusy {
			t.Fatalf("seed %d: the queue never filled", seed)
		}
		close(w.open)
		p.Close()
	}
}

// MidLine follows the last byte queued, not what the host took, and a
// write that found no room changes nothing.
func TestMidLine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   bool
	}{
		{"nothing", nil, false},
		{"empty", []string{""}, false},
		{"line", []string{"ok\n"}, false},
		{"prompt", []string{"$ "}, true},
		{"line then prompt", []string{"a\n", "b"}, true},
		{"prompt then newline", []string{"a", "\n"}, false},
		{"a carriage return", []string{"a\r"}, true},
		// A size of 4: "abc\n" fills the queue, "x" is dropped.
		{"dropped", []string{"abc\n", "x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGated() // never opened: everything stays queued
			q := New(g, 4)
			defer func() { close(g.open); q.Close() }()
			for _, w := range tc.writes {
				q.Write([]byte(w))
			}
			if got := q.MidLine(); got != tc.want {
				t.Errorf("MidLine() = %v after %q, want %v", got, tc.writes, tc.want)
			}
		})
	}
}
