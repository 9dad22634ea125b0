package runjob_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/runjob"
	"github.com/vmm-dev/vmm/runjob/outtar"
)

// helperEnv makes this test binary the -out helper, as vmm-unpack is:
// "outtar" for the real one (unconfined, as the race detector's runtime
// makes calls the filter denies), "crash" for one that dies at once.
const helperEnv = "VMM_RUNJOB_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "outtar":
		os.Exit(outtar.HelperMain(os.Args[2:], os.Stdin, os.Stdout, os.NewFile(3, "control"), nil))
	case "crash":
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// scratch writes archive to a disk file, zeros after it as on the real
// disk.
func scratch(t *testing.T, archive []byte) string {
	p := filepath.Join(t.TempDir(), "out.img")
	if err := os.WriteFile(p, append(archive, make([]byte, 8192)...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tarOf(t *testing.T, names ...string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		typ, body := byte(tar.TypeReg), "made by the job\n"
		if strings.HasSuffix(n, "|") {
			n, typ, body = strings.TrimSuffix(n, "|"), tar.TypeFifo, ""
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: typ, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	return b.Bytes()
}

// TestCollector runs vmm's end against the helper in a process of its
// own, as vmm does: the files arrive, skipped entries are told, a stop
// and a helper that died are errors naming what happened, and a
// Collector closed without collecting unpacks nothing.
func TestCollector(t *testing.T) {
	cause := errors.New("guest stopped: -timeout 1s reached")
	for _, tt := range []struct {
		name    string
		helper  string
		archive []byte
		stop    bool // ctx ended before Collect
		abandon bool // Close without Collect
		files   int
		err     string
		warns   []string
		made    []string
	}{
		{name: "unpacked", helper: "outtar", archive: tarOf(t, "a", "d/b"), files: 2, made: []string{"a", "d/b"}},
		{name: "skipped", helper: "outtar", archive: tarOf(t, "p|", "a"), files: 1, warns: []string{"-out: p: skipped: a FIFO"}, made: []string{"a"}},
		{name: "hostile", helper: "outtar", archive: tarOf(t, "../a"), err: `-out: guest output archive: unsafe name "../a"`},
		{name: "stopped", helper: "outtar", archive: tarOf(t, "a"), stop: true, err: "-out: stopped: " + cause.Error()},
		{name: "helper died", helper: "crash", archive: tarOf(t, "a"), err: "-out: vmm-unpack ended without unpacking the job's files (exit status 3)"},
		{name: "abandoned", helper: "outtar", archive: tarOf(t, "a"), abandon: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(helperEnv, tt.helper)
			dir := t.TempDir()
			c, err := runjob.StartCollector(os.Args[0], scratch(t, tt.archive), dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			if tt.abandon {
				start := time.Now()
				c.Close()
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("Close took %v: the helper did not end when vmm left", d)
				}
			} else {
				ctx, cancel := context.WithCancelCause(context.Background())
				defer cancel(nil)
				if tt.stop {
					cancel(cause)
				}
				var warns []string
				n, err := c.Collect(ctx, func(m string) { warns = append(warns, m) })
				if got := errText(err); n != tt.files || got != tt.err {
					t.Errorf("Collect: %d files, %q; want %d, %q", n, got, tt.files, tt.err)
				}
				if strings.Join(warns, "|") != strings.Join(tt.warns, "|") {
					t.Errorf("warnings %q, want %q", warns, tt.warns)
				}
				c.Close() // again, as jobFiles.remove does
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) > 0 && tt.made == nil {
				t.Errorf("unpacked %d entries, want none", len(ents))
			}
			for _, f := range tt.made {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != "made by the job\n" {
					t.Errorf("%s: %q, %v", f, b, err)
				}
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A stop while the helper unpacks reaches it: the error says how far it
// got and why, with the run's cause.
func TestCollectorStoppedWhileUnpacking(t *testing.T) {
	t.Setenv(helperEnv, "outtar")
	// A FIFO for a disk: the helper reads what the test writes, so the
	// stop lands inside the archive.
	disk := filepath.Join(t.TempDir(), "disk")
	if err := unix.Mkfifo(disk, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	w, err := os.OpenFile(disk, os.O_RDWR, 0) // never blocks, unlike O_WRONLY
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := runjob.StartCollector(os.Args[0], disk, t.TempDir(), 1<<30, false)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "done", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 29})
	tw.Flush()
	w.Write(b.Bytes())
	cause := errors.New("vmm: stopped by interrupt")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		// Feed the big file until the helper stops reading it.
		chunk := make([]byte, 64<<10)
		time.Sleep(200 * time.Millisecond)
		cancel(cause)
		for i := 0; i < 1000; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	_, err = c.Collect(ctx, nil)
	if want := "-out: stopped after 1 files: " + cause.Error(); errText(err) != want {
		t.Errorf("Collect: %v; want %q", err, want)
	}
}
