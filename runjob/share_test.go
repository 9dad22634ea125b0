package runjob

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// job is a minimal valid job spec.
func job() guestabi.Spec { return guestabi.Spec{Args: []string{"true"}} }

// records reads an archive Layer built back, by name.
func records(t *testing.T, b []byte) map[string]cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]cpio.Record{}
	for _, r := range recs {
		m[r.Name] = r
	}
	return m
}

func data(t *testing.T, r cpio.Record) string {
	t.Helper()
	d, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(d)
}

// TestLayerShareRootSymlink: -share naming a symlink to a directory
// shares the directory, as `cp -r link/` copies it. Before, /share in the
// guest was that symlink, pointing at a host path the guest does not have.
func TestLayerShareRootSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.MkdirAll(filepath.Join(real, "sub"), 0o750)
	os.WriteFile(filepath.Join(real, "sub", "a.txt"), []byte("hello"), 0o644)
	os.Symlink("sub/a.txt", filepath.Join(real, "inner-link"))
	link := filepath.Join(dir, "link")
	os.Symlink(real, link)
	relLink := filepath.Join(dir, "rel-link")
	os.Symlink("real", relLink)

	for _, share := range []string{link, relLink, link + "/"} {
		b, err := Layer(job(), share)
		if err != nil {
			t.Fatalf("%s: %v", share, err)
		}
		got := records(t, b)
		if m := got["share"].Mode; m&cpio.S_IFMT != cpio.S_IFDIR || m&0o777 != 0o750 {
			t.Errorf("%s: /share has mode %o, want a directory with the target's 0750", share, m)
		}
		if r, ok := got["share/sub/a.txt"]; !ok || data(t, r) != "hello" {
			t.Errorf("%s: share/sub/a.txt missing or wrong", share)
		}
		// Symlinks inside the tree stay symlinks.
		if r := got["share/inner-link"]; r.Mode&cpio.S_IFMT != cpio.S_IFLNK || data(t, r) != "sub/a.txt" {
			t.Errorf("%s: inner link has mode %o", share, r.Mode)
		}
	}
}

// TestLayerShareTooLarge: a file of 4 GiB does not fit newc's 8-hex-digit
// size field. Before, Layer read it whole and wrote a 9-digit size, which
// shifted every later header. The file is sparse: it costs no disk.
func TestLayerShareTooLarge(t *testing.T) {
	share := t.TempDir()
	big := filepath.Join(share, "disk.img")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(cpioMaxFileSize + 1)
	f.Close()
	if err != nil {
		t.Skipf("cannot make a 4 GiB sparse file here: %v", err)
	}
	start := time.Now()
	_, err = Layer(job(), share)
	if err == nil || !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), "4 GiB") {
		t.Errorf("got %v; want an error naming %s and the 4 GiB limit", err, big)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: the file was read before being refused", d)
	}
}

func TestLayerShareRefuses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(share string) string // returns the entry that must be named
		want  string
	}{
		{"fifo", func(s string) string {
			p := filepath.Join(s, "pipe")
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, "not a regular file, directory or symlink"},
		{"unreadable directory", func(s string) string {
			p := filepath.Join(s, "locked")
			os.Mkdir(p, 0)
			return p
		}, "permission denied"},
	} {
		if tt.name == "unreadable directory" && os.Geteuid() == 0 {
			continue // root reads it anyway
		}
		share := t.TempDir()
		p := tt.setup(share)
		done := make(chan error, 1)
		go func() { _, err := Layer(job(), share); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: got %v; want an error naming %s and saying %q", tt.name, err, p, tt.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Layer blocked", tt.name)
		}
	}
}

// TestReadRegular checks the open a file is read through: a FIFO is
// refused without waiting for a writer, and a symlink or a directory is
// refused rather than followed or read.
func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), []byte("data"), 0o640)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("SECRET"), 0o600)
	os.Symlink("secret", filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "dir"), 0o755)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fd := int(d.Fd())
	if b, perm, err := readRegular(fd, "file"); err != nil || string(b) != "data" || perm != 0o640 {
		t.Errorf("file: %q, %o, %v", b, perm, err)
	}
	for _, n := range []string{"link", "dir", "fifo"} {
		done := make(chan error, 1)
		go func() { _, _, err := readRegular(fd, n); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, errChanged) {
				t.Errorf("%s: got %v, want %v", n, err, errChanged)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: readRegular blocked", n)
		}
	}
}

// TestLayerShareEntrySwapped races Layer against a tree whose entry "f"
// keeps turning into a regular file, a symlink to a secret file outside
// the share and a FIFO, by rename, so that it changes between the walk
// seeing it and reading it. Layer may fail (the tree changed), but must
// never read the secret through the symlink nor block on the FIFO.
// Before, it followed the symlink within a few hundred rounds, and
// opening the FIFO blocked it for good.
func TestLayerShareEntrySwapped(t *testing.T) {
	share, stage := t.TempDir(), t.TempDir()
	secret := filepath.Join(stage, "secret")
	os.WriteFile(secret, []byte("SECRET"), 0o644)
	f := filepath.Join(share, "f")
	os.WriteFile(f, []byte("plain"), 0o644)

	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		tmp := filepath.Join(stage, "tmp")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			switch i % 3 {
			case 0:
				err = os.WriteFile(tmp, []byte("plain"), 0o644)
			case 1:
				err = os.Symlink(secret, tmp)
			case 2:
				err = unix.Mkfifo(tmp, 0o644)
			}
			if err == nil {
				err = os.Rename(tmp, f)
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-swapped }()

	deadline := time.Now().Add(3 * time.Second)
	rounds := 0
	for ; rounds < 2000 && time.Now().Before(deadline); rounds++ {
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() { b, err := Layer(job(), share); done <- result{b, err} }()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Layer blocked (opened a FIFO?)", rounds)
		}
		if r.err != nil {
			continue // the tree changed under it: refusing is right
		}
		rec, ok := records(t, r.b)["share/f"]
		if ok && rec.Mode&cpio.S_IFMT == cpio.S_IFREG && data(t, rec) == "SECRET" {
			t.Fatalf("round %d: read the secret through a symlink", rounds)
		}
	}
	t.Logf("%d rounds", rounds)
}
