package main

import (
	"io"
	"sync"
)

// escapeKey is Ctrl-A, QEMU's console escape.
const escapeKey = 0x01

// escapeReader passes terminal input through, except that Ctrl-A x calls
// quit and Ctrl-A Ctrl-A sends one Ctrl-A. Any other key after Ctrl-A is
// sent with the Ctrl-A, so nothing typed is lost.
type escapeReader struct {
	r       io.Reader
	quit    func()
	pending bool // the previous byte was an unconsumed Ctrl-A
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) < 4 {
		return e.r.Read(p) // too small to filter safely
	}
	// Read into the back half and filter into the front: each input
	// byte yields at most one output byte plus one held-over Ctrl-A, so
	// the write position never overtakes the read position.
	in := p[len(p)/2:]
	n, err := e.r.Read(in)
	out := 0
	for _, b := range in[:n] {
		if e.pending {
			e.pending = false
			switch b {
			case 'x', 'X':
				e.quit()
				return out, io.EOF
			case escapeKey:
				p[out] = escapeKey
				out++
			default:
				p[out], p[out+1] = escapeKey, b
				out += 2
			}
			continue
		}
		if b == escapeKey {
			e.pending = true
			continue
		}
		p[out] = b
		out++
	}
	return out, err
}

// terminalInput reads the terminal on a goroutine of its own, through an
// escapeReader, into a queue that Read drains. Its reader, the machine's
// console forwarder, waits whenever the guest's UART has no room, as it
// has none while the guest reads nothing (a hung guest, a kernel that
// never opened its console): had the escape been filtered in that
// reader, Ctrl-A x typed then would have waited behind the input before
// it, and the way out of a hung guest is the time it matters. The queue
// holds at most maxQueued bytes, past which the goroutine waits too, so
// nothing typed is dropped; only a paste larger than that into a guest
// that reads nothing delays the escape until the guest reads.
type terminalInput struct {
	mu    sync.Mutex
	cond  sync.Cond
	queue []byte
	err   error // the terminal's read error (io.EOF after Ctrl-A x)
}

// maxQueued bounds terminalInput's queue: far more than anyone types,
// and more than most pastes.
const maxQueued = 256 << 10

func newTerminalInput(r io.Reader, quit func()) *terminalInput {
	t := &terminalInput{}
	t.cond.L = &t.mu
	go t.fill(&escapeReader{r: r, quit: quit})
	return t
}

func (t *terminalInput) fill(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		t.mu.Lock()
		for len(t.queue) >= maxQueued {
			t.cond.Wait()
		}
		t.mu.Unlock()
		n, err := r.Read(buf)
		t.mu.Lock()
		t.queue = append(t.queue, buf[:n]...)
		if err != nil {
			t.err = err
		}
		t.cond.Broadcast()
		t.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Read returns what is queued, waiting for input when nothing is, and
// the terminal's error once the queue is empty.
func (t *terminalInput) Read(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.queue) == 0 && t.err == nil {
		t.cond.Wait()
	}
	if len(t.queue) == 0 {
		return 0, t.err
	}
	n := copy(p, t.queue)
	t.queue = t.queue[n:]
	if len(t.queue) == 0 {
		t.queue = nil // the next append starts a fresh, small array
	}
	t.cond.Broadcast()
	return n, nil
}
