package pty

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// A byte written to the terminal end comes out of the master, and a read
// deadline on the master works (Open leaves it non-blocking).
func TestOpen(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx here")
	}
	master, term, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer term.Close()
	if _, err := term.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := master.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(master, b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q, %v; want x", b, err)
	}
	if err := master.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := master.Read(b)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read with nothing to read: %v, want the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read past its deadline still blocks: the master is in blocking mode")
	}
}
