package pty

import (
	"io"
	"os"
	"testing"
	"time"
)

// A byte written to the terminal end comes out of the master, and the
// terminal end is a terminal.
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
}
