package inputfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(reg, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		kind       Kind
		want       string // error text; "" for success
		notReg     bool
	}{
		{"regular", reg, Regular, "", false},
		{"symlink to regular", link, Regular, "", false},
		{"missing", filepath.Join(dir, "none"), Regular, "no such file", false},
		{"directory", dir, Regular, "is a directory, not a regular file", true},
		{"character device", "/dev/zero", Regular, "/dev/zero: not a regular file", true},
		{"character device, pipes allowed", "/dev/null", RegularOrPipe, "/dev/null: not a regular file or pipe", true},
		// Without O_NONBLOCK this open would wait for a writer forever.
		{"FIFO without writer", fifo, Regular, "not a regular file", true},
		{"FIFO without writer, pipes allowed", fifo, RegularOrPipe, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			var f *os.File
			var err error
			go func() {
				defer close(done)
				f, err = Open(tc.path, tc.kind)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Open did not return")
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				f.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrNotRegular) != tc.notReg {
				t.Errorf("errors.Is(%v, ErrNotRegular) = %v", err, !tc.notReg)
			}
		})
	}
}

// A regular file comes back blocking, as os.Open gives it; an accepted
// FIFO reads to its end once the writer closes it, and as end of file
// while no writer has it open.
func TestOpenModes(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(reg, Regular)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("regular file flags %#x, %v: want blocking", fl, err)
	}

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Open(fifo, RegularOrPipe)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.Write([]byte("late "))
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte("bytes"))
		w.Close()
	}()
	b, err := io.ReadAll(p)
	if err != nil || string(b) != "late bytes" {
		t.Errorf("read %q, %v; want %q", b, err, "late bytes")
	}
}
