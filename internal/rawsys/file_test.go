package rawsys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns a File on one end of a non-blocking SOCK_SEQPACKET pair
// (what the user network's frames travel on) and the other end.
func pair(t *testing.T) (*File, *os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
	t.Cleanup(func() { mine.Close(); theirs.Close() })
	x, err := NewFile(mine)
	if err != nil {
		t.Fatal(err)
	}
	return x, mine, theirs
}

// wait bounds a blocked call in a test.
const wait = 10 * time.Second

func TestFileReadWrite(t *testing.T) {
	x, _, theirs := pair(t)
	buf := make([]byte, 64)
	if n, ok, err := x.TryRead(buf); ok || err != nil || n != 0 {
		t.Fatalf("TryRead with nothing queued: %d %v %v", n, ok, err)
	}
	// Read waits for a message written later.
	go func() {
		time.Sleep(20 * time.Millisecond)
		theirs.Write([]byte("frame one"))
	}()
	if n, err := x.Read(buf); err != nil || string(buf[:n]) != "frame one" {
		t.Fatalf("Read: %q %v", buf[:n], err)
	}
	theirs.Write([]byte("frame two"))
	if n, ok, err := x.TryRead(buf); !ok || err != nil || string(buf[:n]) != "frame two" {
		t.Fatalf("TryRead: %q %v %v", buf[:n], ok, err)
	}
	if n, err := x.Write([]byte("to them")); err != nil || n != 7 {
		t.Fatalf("Write: %d %v", n, err)
	}
	if n, err := theirs.Read(buf); err != nil || string(buf[:n]) != "to them" {
		t.Fatalf("their Read: %q %v", buf[:n], err)
	}
	allocs := testing.AllocsPerRun(50, func() {
		x.Write(buf[:8])
		theirs.Read(buf)
		theirs.Write(buf[:8])
		x.Read(buf)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per round trip", allocs)
	}
}

// TestFileWriteWaits fills the socket, then checks that Write waits for
// room rather than failing with EAGAIN.
func TestFileWriteWaits(t *testing.T) {
	x, mine, theirs := pair(t)
	msg := make([]byte, 4096)
	var queued int
	for {
		_, err := unix.Write(int(mine.Fd()), msg)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		queued++
	}
	// mine.Fd() made the descriptor blocking; make it non-blocking
	// again, as the File requires.
	unix.SetNonblock(int(mine.Fd()), true)
	done := make(chan error, 1)
	go func() { _, err := x.Write(msg); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Write into a full socket returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	buf := make([]byte, len(msg))
	for range queued + 1 {
		if _, err := theirs.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Write still waiting after the socket was drained")
	}
}

// TestFileErrors checks what callers test for: io.EOF and EPIPE once the
// other end is gone, os.ErrDeadlineExceeded past a deadline, and
// os.ErrClosed when the file is closed under a waiting Read.
func TestFileErrors(t *testing.T) {
	t.Run("peer gone", func(t *testing.T) {
		x, _, theirs := pair(t)
		theirs.Close()
		buf := make([]byte, 8)
		if _, err := x.Read(buf); err != io.EOF {
			t.Errorf("Read: %v, want io.EOF", err)
		}
		if _, ok, err := x.TryRead(buf); ok || err != io.EOF {
			t.Errorf("TryRead: %v %v, want io.EOF", ok, err)
		}
		if _, err := x.Write(buf); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write: %v, want EPIPE", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		x, mine, _ := pair(t)
		mine.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := x.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read: %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("closed while reading", func(t *testing.T) {
		x, mine, _ := pair(t)
		done := make(chan error, 1)
		go func() { _, err := x.Read(make([]byte, 8)); done <- err }()
		time.Sleep(20 * time.Millisecond)
		mine.Close()
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read: %v, want os.ErrClosed", err)
			}
		case <-time.After(wait):
			t.Fatal("Read still waiting after Close")
		}
	})
}

// TestFileConcurrentWrites signals one eventfd from several goroutines at
// once, as a device's queue workers signal its interrupt: every write
// lands (the counter adds up) and each returns its own result.
func TestFileConcurrentWrites(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "eventfd")
	defer f.Close()
	x, err := NewFile(f)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 200
	errs := make(chan error, writers)
	for range writers {
		go func() {
			one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
			for range each {
				if n, err := x.Write(one); err != nil || n != 8 {
					errs <- fmt.Errorf("Write: %d, %v", n, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var buf [8]byte
	if n, err := x.Read(buf[:]); err != nil || n != 8 || binary.LittleEndian.Uint64(buf[:]) != writers*each {
		t.Fatalf("Read: %d, %v, counter %d, want %d", n, err, binary.LittleEndian.Uint64(buf[:]), writers*each)
	}
}

// TestNewFileBlocking: a blocking descriptor is refused, since a raw
// read of it would wait in the kernel holding a P.
func TestNewFileBlocking(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(p[0]), "pipe")
	defer r.Close()
	defer unix.Close(p[1])
	if _, err := NewFile(r); err == nil {
		t.Fatal("NewFile of a blocking pipe: no error")
	}
}

// TestNewConn reads and writes a TCP connection through its RawConn, as
// the user network's port forwards do, and sees the peer's close as EOF.
func TestNewConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	x, err := NewConn(c.(*net.TCPConn), "test connection")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := x.Write([]byte("ping")); err != nil || n != 4 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	buf := make([]byte, 16)
	peer.SetReadDeadline(time.Now().Add(wait))
	if n, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("peer read: %q, %v", buf[:n], err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("pong"))
		peer.Close()
	}()
	if n, err := x.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	if _, err := x.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v, want io.EOF", err)
	}
}

// TestNewConnWritesAll writes more to a TCP connection in one Write than
// its buffers hold, with the peer reading slowly: a stream socket takes
// part of it per call, and Write must still write it all (the user
// network's port forward lost connections to short writes once).
func TestNewConnWritesAll(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 16 << 20
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(wait))
		var all []byte
		buf := make([]byte, 64<<10)
		for len(all) < size {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
			if len(all) < 1<<20 {
				time.Sleep(time.Millisecond) // let the sender's buffers fill
			}
		}
		got <- all
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	x, err := NewConn(c.(*net.TCPConn), "test connection")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 13)
	}
	if n, err := x.Write(data); err != nil || n != size {
		t.Fatalf("Write: %d of %d, %v", n, size, err)
	}
	if all := <-got; !bytes.Equal(all, data) {
		t.Fatalf("peer read %d bytes, not what was written", len(all))
	}
}
