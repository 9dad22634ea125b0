package remote

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/usernet/vnethdr"
)

// modeEnv makes this test binary a helper (TestMain) whose network is
// echo: every frame vmm sends comes back. Its value says how it behaves.
const modeEnv = "VMM_REMOTE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(modeEnv); mode != "" {
		os.Exit(fakeHelper(mode))
	}
	os.Exit(m.Run())
}

// echo is a Backend that returns every frame written to it.
type echo struct {
	frames chan []byte
	logf   func(format string, args ...any)
}

func (e *echo) Read(p []byte) (int, error) { return copy(p, <-e.frames), nil }
func (e *echo) Write(p []byte) (int, error) {
	e.frames <- bytes.Clone(p)
	return len(p), nil
}
func (e *echo) SetOffload(flags uint32) error {
	e.logf("offload %d", flags)
	return nil
}

func fakeHelper(mode string) int {
	if mode == "exit-early" {
		return 3
	}
	h, err := HelperFiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch mode {
	case "fail":
		h.Fail(errors.New("user network: hostfwd tcp:127.0.0.1:22-10.0.2.15:22: address already in use"))
		return 1
	case "exit-after-ready":
		h.send(msgReady)
		return 4
	case "hang":
		// Up, then deaf: it never reads its sockets, so it never sees
		// vmm close them.
		h.send(msgReady)
		time.Sleep(time.Hour)
		return 0
	}
	h.Logf("starting")
	if err := h.Serve(&echo{frames: make(chan []byte, 16), logf: h.Logf}); err != nil {
		return 1
	}
	return 0
}

// start runs this binary as a helper in mode, collecting what it logs.
func start(t *testing.T, mode string) (*Network, *logs, error) {
	t.Setenv(modeEnv, mode)
	l := &logs{}
	n, err := Start(Config{Helper: os.Args[0], Logf: l.logf})
	if err != nil {
		return nil, l, err
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Ready(); err != nil {
		return nil, l, err
	}
	return n, l, nil
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// waitFor waits until a logged line contains s.
func (l *logs) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, line := range l.lines {
			if strings.Contains(line, s) {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line says %q: %q", s, l.lines)
}

// Close before the helper is up ends it too, and Ready then fails.
func TestCloseBeforeReady(t *testing.T) {
	t.Setenv(modeEnv, "echo")
	n, err := Start(Config{Helper: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	select {
	case <-n.proc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the helper did not exit after Close")
	}
	<-n.ready
}

// Frames go both ways whole, offloads reach the backend, the helper's
// log reaches vmm's, and Close ends the helper.
func TestFrames(t *testing.T) {
	n, l, err := start(t, "echo")
	if err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, "starting")
	buf := make([]byte, maxFrame)
	for _, size := range []int{26, 1514 + 12, maxFrame} {
		frame := bytes.Repeat([]byte{byte(size)}, size)
		clear(frame[:vnethdr.Len]) // a whole frame, no offloads
		if k, err := n.Write(frame); err != nil || k != size {
			t.Fatalf("Write of %d bytes: %d, %v", size, k, err)
		}
		n.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := n.Read(buf)
		if err != nil || !bytes.Equal(buf[:k], frame) {
			t.Fatalf("Read after a %d-byte frame: %d bytes, %v", size, k, err)
		}
	}
	// TryRead: nothing queued, then a frame.
	if _, ok, err := n.TryRead(buf); ok || err != nil {
		t.Fatalf("TryRead with nothing queued: ok %v, %v", ok, err)
	}
	n.Write([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00abcdefghijklmnopqrstuvwxyz"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		k, ok, err := n.TryRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(buf[vnethdr.Len:k]) != "abcdefghijklmnopqrstuvwxyz" {
				t.Fatalf("TryRead: %q", buf[:k])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("TryRead never found the frame")
		}
		time.Sleep(time.Millisecond)
	}
	if err := n.SetOffload(3); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, "offload 3")
	// A deadline in the past wakes a waiting Read, as virtio-net's
	// Reset needs.
	n.SetReadDeadline(time.Now())
	if _, err := n.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	n.Close()
	select {
	case <-n.proc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the helper did not exit after Close")
	}
}

// A helper that cannot start its network says why, and Ready returns
// that line; one that dies says how.
func TestStartFails(t *testing.T) {
	for _, tt := range []struct{ mode, want string }{
		{"fail", "hostfwd tcp:127.0.0.1:22-10.0.2.15:22: address already in use"},
		{"exit-early", "vmm-net exited before its network was up (exit status 3)"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			n, _, err := start(t, tt.mode)
			if n != nil || err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Start and Ready: %v, want one line saying %q", err, tt.want)
			}
		})
	}
}

// Once the helper has gone, Read says so instead of waiting.
func TestHelperGone(t *testing.T) {
	n, _, err := start(t, "exit-after-ready")
	if err != nil {
		t.Fatal(err)
	}
	n.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := n.Read(make([]byte, 64)); err == nil || !strings.Contains(err.Error(), "vmm-net exited (exit status 4)") {
		t.Fatalf("Read: %v, want the helper's exit", err)
	}
}

// Without vmm-net next to the executable or in $PATH, FindHelper says
// where it looked.
func TestFindHelper(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := FindHelper(); err == nil || !strings.Contains(err.Error(), "neither next to vmm nor in $PATH") {
		t.Fatalf("FindHelper: %v", err)
	}
	dir := t.TempDir()
	p := dir + "/" + HelperName
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", dir)
	if got, err := FindHelper(); err != nil || got != p {
		t.Fatalf("FindHelper: %q, %v; want %s", got, err, p)
	}
}

// A frame the helper queued for an earlier driver is held to the
// offloads the driver takes now: a TSO segment is dropped without TSO,
// a partial checksum finished without CSUM, and both pass with them.
func TestFit(t *testing.T) {
	// An IPv4 TCP segment's checksum field at 14+20+16 = 50 of the frame
	// (csum_start 34, csum_offset 16), holding a pseudo-header sum.
	frame := func(flags, gso byte) []byte {
		p := make([]byte, vnethdr.Len+80)
		p[vnethdr.OffFlags], p[vnethdr.OffGSOType] = flags, gso
		binary.LittleEndian.PutUint16(p[vnethdr.OffCsumStart:], 34)
		binary.LittleEndian.PutUint16(p[vnethdr.OffCsumOffset:], 16)
		for i := vnethdr.Len + 34; i < len(p); i++ {
			p[i] = byte(i * 7)
		}
		binary.BigEndian.PutUint16(p[vnethdr.Len+50:], 0x1234)
		return p
	}
	// valid says the checksummed span sums to 0xffff, as RFC 1071 wants
	// of data with its checksum in place (the pseudo-header's share
	// being the 0x1234 the field held).
	valid := func(p []byte) bool {
		b := p[vnethdr.Len+34:]
		sum := uint32(0x1234)
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		return sum == 0xffff
	}
	for _, tt := range []struct {
		name       string
		offload    uint32
		flags, gso byte
		ok, summed bool
	}{
		{"whole frame, no offloads", 0, 0, 0, true, false},
		{"TSO segment, no TSO", vnethdr.TunCsum, vnethdr.FNeedsCsum, 1, false, false},
		{"TSO segment, TSO", vnethdr.TunCsum | vnethdr.TunTSO4, vnethdr.FNeedsCsum, 1, true, false},
		{"partial checksum, no CSUM", 0, vnethdr.FNeedsCsum, 0, true, true},
		{"partial checksum, CSUM", vnethdr.TunCsum, vnethdr.FNeedsCsum, 0, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := &Network{}
			n.offload.Store(tt.offload)
			p := frame(tt.flags, tt.gso)
			k, ok := n.fit(p, len(p))
			if ok != tt.ok {
				t.Fatalf("ok %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if k != len(p) {
				t.Fatalf("%d bytes, want %d", k, len(p))
			}
			if tt.summed {
				if p[vnethdr.OffFlags] != 0 || !valid(p) {
					t.Errorf("flags %#x after finishing, checksum valid %v", p[vnethdr.OffFlags], valid(p))
				}
			} else if binary.BigEndian.Uint16(p[vnethdr.Len+50:]) != 0x1234 {
				t.Errorf("the checksum field changed")
			}
		})
	}
	// A checksum field outside the frame: dropped, not written past it.
	n := &Network{}
	p := frame(vnethdr.FNeedsCsum, 0)
	binary.LittleEndian.PutUint16(p[vnethdr.OffCsumStart:], 70)
	if _, ok := n.fit(p, len(p)); ok {
		t.Error("a frame whose checksum field lies past its end passed")
	}
}

// A helper that does not end when vmm closes its sockets is killed, and
// Close returns.
func TestCloseKillsHungHelper(t *testing.T) {
	n, _, err := start(t, "hang")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		n.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(4 * closeWait):
		t.Fatal("Close did not return")
	}
	select {
	case <-n.proc.Exited():
	default:
		t.Fatal("the helper is still running after Close")
	}
}
