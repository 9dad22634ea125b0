package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"
	"time"
)

// TestPortStdin: the job reads through the pipe exactly what the port
// gave, in reads of whatever size, and end of file where the port's
// ended; a failing port ends the job's input too.
func TestPortStdin(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320,000 bytes, several chunks
	for _, tc := range []struct {
		name string
		src  io.Reader
		want []byte
	}{
		{"to end of file", iotest.HalfReader(bytes.NewReader(data)), data},
		{"empty", bytes.NewReader(nil), nil},
		{"port fails", io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(errors.New("device reset"))), data[:100]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			go relayPort(tc.src, pw)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(pr)
				got <- b
			}()
			select {
			case b := <-got:
				if !bytes.Equal(b, tc.want) {
					t.Fatalf("the job read %d bytes, want %d", len(b), len(tc.want))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the job's stdin never ended")
			}
		})
	}
}

// TestPortStdinReaderGone: a job that closes its stdin early stops the
// copy instead of leaving it blocked on a pipe nobody reads.
func TestPortStdinReaderGone(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close()
	done := make(chan struct{})
	go func() {
		relayPort(endless{}, pw)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the copy went on with nobody reading")
	}
}

// endless is a port whose input never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }
