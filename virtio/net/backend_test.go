package net

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// seqBackend is a Backend on one end of a SOCK_SEQPACKET socketpair: like
// a TAP, each read returns one whole message and each write sends one,
// and, wrapped non-blocking with os.NewFile, it parks in the netpoller
// and honours deadlines. The test holds the other end (peer).
//
// It also counts Read calls, under a mutex: a test that waits for the
// RX worker's n-th Read knows the worker is parked in it, and the mutex
// orders everything the worker did before with what the test does next,
// which the race detector cannot see through a socket.
type seqBackend struct {
	f *os.File

	mu         sync.Mutex
	cond       sync.Cond
	reads      int      // Read calls started
	offloads   []uint32 // every SetOffload call, in order
	offloadErr func(flags uint32) error
	writeErr   error // when set, Write fails with it instead of writing
}

func (b *seqBackend) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.reads++
	b.cond.Broadcast()
	b.mu.Unlock()
	return b.f.Read(p)
}

func (b *seqBackend) Write(p []byte) (int, error) {
	b.mu.Lock()
	err := b.writeErr
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return b.f.Write(p)
}

func (b *seqBackend) SetReadDeadline(t time.Time) error  { return b.f.SetReadDeadline(t) }
func (b *seqBackend) SetWriteDeadline(t time.Time) error { return b.f.SetWriteDeadline(t) }

func (b *seqBackend) SetOffload(flags uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.offloads = append(b.offloads, flags)
	if b.offloadErr != nil {
		return b.offloadErr(flags)
	}
	return nil
}

func (b *seqBackend) offloadCalls() []uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint32(nil), b.offloads...)
}

func (b *seqBackend) setWriteErr(err error) {
	b.mu.Lock()
	b.writeErr = err
	b.mu.Unlock()
}

func (b *seqBackend) readCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reads
}

// waitReads waits up to 5 s for the n-th Read call to start.
func (b *seqBackend) waitReads(t testing.TB, n int) {
	t.Helper()
	timer := time.AfterFunc(5*time.Second, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(5 * time.Second)
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.reads < n {
		if time.Now().After(deadline) {
			t.Fatalf("RX worker made %d Read calls, want %d", b.reads, n)
		}
		b.cond.Wait()
	}
}

// newSeqBackend returns the device's end and the test's.
func newSeqBackend(t testing.TB) (*seqBackend, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	// Room for a few maximum-size frames in each direction.
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	b := &seqBackend{f: os.NewFile(uintptr(fds[0]), "backend")}
	b.cond.L = &b.mu
	peer := os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() {
		b.f.Close()
		peer.Close()
	})
	return b, peer
}

var errTestOffload = errors.New("offload refused")

// memBackend is a Backend for synchronous tests and fuzzing: Write keeps
// a copy of the last frame and counts, Read is never expected.
type memBackend struct {
	last   []byte
	writes int
}

func (m *memBackend) Read(p []byte) (int, error)       { return 0, errors.New("memBackend: no frames") }
func (m *memBackend) SetOffload(uint32) error          { return nil }
func (m *memBackend) SetReadDeadline(time.Time) error  { return nil }
func (m *memBackend) SetWriteDeadline(time.Time) error { return nil }
func (m *memBackend) Write(p []byte) (int, error) {
	m.last = append(m.last[:0], p...)
	m.writes++
	return len(p), nil
}

// tryBackend is seqBackend with TryRead, as *tap.Tap has it; the plain
// seqBackend keeps covering backends without one.
type tryBackend struct{ *seqBackend }

func (b tryBackend) TryRead(p []byte) (int, bool, error) {
	rc, err := b.f.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool { n, rerr = unix.Read(int(fd), p); return true }); err != nil {
		return 0, false, err
	}
	if rerr == unix.EAGAIN {
		return 0, false, nil
	}
	if rerr != nil {
		return 0, false, rerr
	}
	return n, true, nil
}

// vecBackend is seqBackend with WriteVectors, as *tap.Tap has it: one
// writev(2) per frame on the SOCK_SEQPACKET socket, which, like a TAP,
// makes one message of it. max is its MaxVectors; calls counts the
// frames it sent, so a test knows which path a frame took.
type vecBackend struct {
	*seqBackend
	max   int
	calls int // under seqBackend.mu
}

func (b *vecBackend) MaxVectors() int { return b.max }

func (b *vecBackend) WriteVectors(bufs [][]byte) (int, error) {
	if len(bufs) > b.max {
		return 0, fmt.Errorf("vecBackend: %d buffers, more than %d", len(bufs), b.max)
	}
	b.mu.Lock()
	err := b.writeErr
	b.calls++
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	rc, err := b.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		n, werr = unix.Writev(int(fd), bufs)
		return werr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, werr
}

func (b *vecBackend) vectorCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// memVecBackend is memBackend with WriteVectors, for the allocation test.
type memVecBackend struct{ memBackend }

func (m *memVecBackend) MaxVectors() int { return 64 }

func (m *memVecBackend) WriteVectors(bufs [][]byte) (int, error) {
	m.last = m.last[:0]
	for _, b := range bufs {
		m.last = append(m.last, b...)
	}
	m.writes++
	return len(m.last), nil
}
