package runjob_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/runjob"
	"github.com/vmm-dev/vmm/runjob/outtar"
)

// helperEnv makes this test binary the -out helper, as vmm-unpack is:
// "outtar" for the real one (unconfined, as the race detector's runtime
// makes calls the filter denies), "crash" for one that dies at once,
// "other-build" for one that speaks another wire, "stuck" for one that
// says it is ready and then ignores vmm.
const helperEnv = "VMM_RUNJOB_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "outtar":
		os.Exit(outtar.HelperMain(os.Args[2:], os.Stdin, os.Stdout, os.NewFile(3, "control"), nil))
	case "crash":
		os.Exit(3)
	case "other-build":
		args := append([]string(nil), os.Args[2:]...)
		args[1] = "out-0"
		os.Exit(outtar.HelperMain(args, os.Stdin, os.Stdout, os.NewFile(3, "control"), nil))
	case "stuck":
		os.Stdout.WriteString(runjob.OutReady + "\n")
		time.Sleep(time.Hour)
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
		name      string
		helper    string
		archive   []byte
		stop      bool   // ctx ended before Collect
		stopLater bool   // ctx ends during Collect
		abandon   bool   // Close without Collect
		notReady  string // Ready's error
		wait      time.Duration
		within    time.Duration // Collect's bound
		files     int
		err       string
		warns     []string
		made      []string
	}{
		{name: "unpacked", helper: "outtar", archive: tarOf(t, "a", "d/b"), files: 2, made: []string{"a", "d/b"}},
		{name: "skipped", helper: "outtar", archive: tarOf(t, "p|", "a"), files: 1, warns: []string{"-out: p: skipped: a FIFO"}, made: []string{"a"}},
		{name: "hostile", helper: "outtar", archive: tarOf(t, "../a"), err: `-out: guest output archive: unsafe name "../a"`},
		{name: "stopped", helper: "outtar", archive: tarOf(t, "a"), stop: true, err: "-out: stopped: " + cause.Error()},
		{name: "helper died", helper: "crash", archive: tarOf(t, "a"), notReady: "-out: vmm-unpack ended before the job (exit status 3)"},
		{name: "another build", helper: "other-build", archive: tarOf(t, "a"),
			notReady: `-out: vmm-unpack out: another wire version: vmm speaks "out-0", this helper "` + runjob.OutWire + `": vmm and vmm-unpack come from different builds`},
		// Killed when the wait for its word ends (3 s here): not after
		// a second wait in Close (6 s), nor never.
		{name: "stuck", helper: "stuck", archive: tarOf(t, "a"), stopLater: true, wait: 3 * time.Second, within: 5 * time.Second, err: "-out: stopped: " + cause.Error()},
		{name: "abandoned", helper: "outtar", archive: tarOf(t, "a"), abandon: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(helperEnv, tt.helper)
			dir := t.TempDir()
			c, err := runjob.StartCollector(os.Args[0], scratch(t, tt.archive), dir, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wait != 0 {
				runjob.SetWait(c, tt.wait)
			}
			defer c.Close()
			if err := c.Ready(t.Context()); errText(err) != tt.notReady {
				t.Fatalf("Ready: %v, want %q", err, tt.notReady)
			}
			if tt.notReady != "" {
				return
			}
			if tt.abandon {
				start := time.Now()
				c.Close()
				if st := runjob.ExitState(c); !st.Success() {
					t.Errorf("the helper ended with %v when vmm left: it was killed rather than ending", st)
				}
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("Close took %v: the helper did not end when vmm left", d)
				}
			} else {
				ctx, cancel := context.WithCancelCause(context.Background())
				defer cancel(nil)
				if tt.stop {
					cancel(cause)
				}
				if tt.stopLater {
					time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })
				}
				start := time.Now()
				var warns []string
				n, err := c.Collect(ctx, func(m string) { warns = append(warns, m) })
				if got := errText(err); n != tt.files || got != tt.err {
					t.Errorf("Collect: %d files, %q; want %d, %q", n, got, tt.files, tt.err)
				}
				if strings.Join(warns, "|") != strings.Join(tt.warns, "|") {
					t.Errorf("warnings %q, want %q", warns, tt.warns)
				}
				if d := time.Since(start); tt.within != 0 && d > tt.within {
					t.Errorf("Collect took %v, want at most %v", d, tt.within)
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
	dir := t.TempDir()
	c, err := runjob.StartCollector(os.Args[0], disk, dir, 1<<30, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(t.Context()); err != nil {
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
		// Stop once the first file is out, so that the stop lands in
		// the second, whatever the helper's speed.
		chunk := make([]byte, 64<<10)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
				break
			}
		}
		cancel(cause)
		for i := 0; i < 1000; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	_, err = c.Collect(ctx, nil)
	// 0 when the stop came between the first file's data and its count.
	if !regexp.MustCompile(`^-out: stopped after [01] files: ` + regexp.QuoteMeta(cause.Error()) + `$`).MatchString(errText(err)) {
		t.Errorf("Collect: %v; want the files so far and %q", err, cause)
	}
}

// Close from another goroutine (vmm's backstop removing the job's files)
// ends a Collect whose helper is stuck in a read, killing the helper
// after the collector's wait.
func TestCollectorClosedWhileCollecting(t *testing.T) {
	t.Setenv(helperEnv, "outtar")
	disk := filepath.Join(t.TempDir(), "disk")
	if err := unix.Mkfifo(disk, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	w, err := os.OpenFile(disk, os.O_RDWR, 0) // an empty FIFO: reads wait
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := runjob.StartCollector(os.Args[0], disk, t.TempDir(), 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	runjob.SetWait(c, 300*time.Millisecond) // then killed, stuck or not
	if err := c.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Collect(context.Background(), nil)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Collect succeeded after Close")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Collect still running 20s after Close")
	}
}
