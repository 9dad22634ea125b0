package outtar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deepName is a name n directories deep.
func deepName(n int) string {
	return strings.TrimSuffix(strings.Repeat("d/", n-1)+"f", "/")
}

// TestExtractDefaultLimits checks the limits of `vmm run -out` on
// archives just inside and just past each of them. Before they existed,
// every archive here was extracted whole.
func TestExtractDefaultLimits(t *testing.T) {
	// A name of exactly n bytes, in components under NAME_MAX.
	longName := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(strings.Repeat("n", min(200, n-b.Len())))
		}
		return b.String()
	}
	for _, tt := range []struct {
		name  string
		entry entry
		want  string // "" means extracted
	}{
		{"at max depth", entry{name: deepName(MaxDepth), body: "x", typ: tar.TypeReg}, ""},
		{"past max depth", entry{name: deepName(MaxDepth + 1), body: "x", typ: tar.TypeReg}, "deep"},
		{"directory past max depth", entry{name: deepName(MaxDepth+1) + "/", typ: tar.TypeDir}, "deep"},
		{"skipped entry past max depth", entry{name: deepName(MaxDepth + 1), typ: tar.TypeSymlink, link: "x"}, "deep"},
		{"name at max length", entry{name: longName(MaxNameLen), body: "x", typ: tar.TypeReg}, ""},
		{"name past max length", entry{name: longName(MaxNameLen + 1), body: "x", typ: tar.TypeReg}, "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if l := len(tt.entry.name); tt.want == "" && l > MaxNameLen {
				t.Fatalf("test name is %d bytes", l)
			}
			dir := t.TempDir()
			n, err := Extract(context.Background(), bytes.NewReader(tarOf(t, tt.entry)), dir, DefaultLimits(1<<20), nil)
			if tt.want == "" {
				if err != nil || n != 1 {
					t.Fatalf("Extract: %d files, %v", n, err)
				}
				if _, err := os.Stat(filepath.Join(dir, tt.entry.name)); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %d files, %v; want an error saying %q", n, err, tt.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("created %v", ents)
			}
		})
	}
}

// TestExtractMaxEntries streams symlink entries, which Extract skips and
// which therefore cost nothing but their header, until Extract refuses
// them, and a deep name of implied directories just over the budget.
func TestExtractMaxEntries(t *testing.T) {
	var one bytes.Buffer
	tw := tar.NewWriter(&one)
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "x"})
	tw.Flush()
	r := &endless{body: one.Bytes(), cancelAt: math.MaxInt}
	n, err := Extract(context.Background(), r, t.TempDir(), DefaultLimits(1<<20), nil)
	if err == nil || !strings.Contains(err.Error(), "more than 100000 entries") {
		t.Fatalf("%d files, %v; want the entry limit", n, err)
	}
	if got, want := r.served, (MaxEntries+1)*512; got > want+64<<10 {
		t.Errorf("read %d bytes, %d entries' worth; want about %d", got, got/512, want)
	}
}

func TestExtractLimitsTable(t *testing.T) {
	many := make([]entry, 5)
	for i := range many {
		many[i] = entry{name: "f", body: "x", typ: tar.TypeReg}
	}
	lim := Limits{Bytes: 100, Entries: 4, Depth: 3, NameLen: 10}
	deep := Limits{Bytes: 100, Entries: 4, Depth: 10, NameLen: 100}
	for _, tt := range []struct {
		name    string
		lim     Limits
		tar     []byte
		files   int
		wantErr string
	}{
		{"entries", lim, tarOf(t, many...), 4, "more than 4 entries"},
		{"entries count the skipped", lim, tarOf(t, many[0], many[0], entry{name: "l", typ: tar.TypeSymlink}, entry{name: "p", typ: tar.TypeFifo}, many[0]), 2, "more than 4"},
		{"implied directories count", deep, tarOf(t, entry{name: "a/b/c/d/f", typ: tar.TypeReg}), 0, "more than 4"},
		{"implied directories at the limit", deep, tarOf(t, entry{name: "a/b/c/f", typ: tar.TypeReg}), 1, ""},
		{"listed directories count once", deep, tarOf(t, entry{name: "a/", typ: tar.TypeDir}, entry{name: "a/b/", typ: tar.TypeDir}, entry{name: "a/b/f", typ: tar.TypeReg}, entry{name: "a/g", typ: tar.TypeReg}), 2, ""},
		{"depth", lim, tarOf(t, entry{name: "a/b/c/d", typ: tar.TypeReg}), 0, "4 directories deep, more than 3"},
		{"depth counts after cleaning", lim, tarOf(t, entry{name: "a/./b//c", body: "x", typ: tar.TypeReg}), 1, ""},
		{"name length", lim, tarOf(t, entry{name: "abcdefghijk", typ: tar.TypeReg}), 0, "longer than 10"},
	} {
		n, err := Extract(context.Background(), bytes.NewReader(tt.tar), t.TempDir(), tt.lim, nil)
		if n != tt.files || (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: %d files, %v; want %d files and %q", tt.name, n, err, tt.files, tt.wantErr)
		}
	}
}

// endless serves a tar stream that never ends: head once, then body over
// and over. After cancelAt bytes it calls cancel, and it counts the bytes
// read after that.
type endless struct {
	head, body []byte
	off        int
	served     int
	cancelAt   int
	cancel     func()
	after      int
}

func (e *endless) Read(p []byte) (int, error) {
	if e.served >= e.cancelAt {
		if e.cancel != nil {
			e.cancel()
			e.cancel = nil
		} else {
			e.after += len(p)
		}
	}
	n := 0
	for n < len(p) {
		var src []byte
		if e.off < len(e.head) {
			src = e.head[e.off:]
		} else {
			src = e.body[(e.off-len(e.head))%len(e.body):]
		}
		c := copy(p[n:], src)
		n += c
		e.off += c
	}
	e.served += n
	return n, nil
}

// TestExtractCancel checks that cancelling the context stops Extract both
// between entries and inside one huge file, with the cause in the error
// and no further reads. Before, Extract took no context and ran until the
// archive or the byte limit ended.
func TestExtractCancel(t *testing.T) {
	// One entry's header and data, without the end-of-archive blocks
	// Close would add: repeated, it makes an endless archive of files.
	var one bytes.Buffer
	tw := tar.NewWriter(&one)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Flush()
	// A header for a file far larger than the test will ever read.
	var big bytes.Buffer
	tw = tar.NewWriter(&big)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	tw.Flush()

	cause := errors.New("-timeout 1s reached")
	for _, tt := range []struct {
		name string
		r    *endless
	}{
		{"between entries", &endless{body: one.Bytes(), cancelAt: 1 << 20}},
		{"inside a file", &endless{head: big.Bytes(), body: make([]byte, 4096), cancelAt: 1 << 20}},
	} {
		ctx, cancel := context.WithCancelCause(context.Background())
		tt.r.cancel = func() { cancel(cause) }
		start := time.Now()
		n, err := Extract(ctx, tt.r, t.TempDir(), Limits{Bytes: 1 << 41, Entries: 1 << 30, Depth: 8, NameLen: 100}, nil)
		if !errors.Is(err, cause) || !strings.Contains(err.Error(), "stopped") {
			t.Errorf("%s: %d files, %v; want an error wrapping %v", tt.name, n, err, cause)
		}
		if tt.r.after != 0 {
			t.Errorf("%s: read %d bytes after the cancel", tt.name, tt.r.after)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s: took %v", tt.name, d)
		}
		cancel(nil)
	}

	// Already cancelled: nothing is created.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := Extract(ctx, bytes.NewReader(tarOf(t, entry{name: "a", body: "b", typ: tar.TypeReg})), dir, DefaultLimits(1<<20), nil); !errors.Is(err, cause) {
		t.Errorf("cancelled before the start: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cancelled before the start, yet created %s", dir)
	}
}

// A file the archive ends inside, or that a stop cuts short, is removed:
// part of a file must not pass for the job's whole file under its name.
func TestExtractCutShortLeavesNoFile(t *testing.T) {
	var cut bytes.Buffer
	tw := tar.NewWriter(&cut)
	tw.WriteHeader(&tar.Header{Name: "whole", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("abc"))
	tw.WriteHeader(&tar.Header{Name: "cut", Typeflag: tar.TypeReg, Mode: 0o644, Size: 100})
	tw.Write([]byte("only ten b")) // the archive ends here
	dir := t.TempDir()
	if _, err := Extract(context.Background(), bytes.NewReader(cut.Bytes()), dir, DefaultLimits(1<<20), nil); err == nil {
		t.Error("an archive that ends inside a file extracted without an error")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "whole")); err != nil || string(b) != "abc" {
		t.Errorf("the whole file before it: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "cut")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file cut short is there: %v", err)
	}

	var big bytes.Buffer
	tw = tar.NewWriter(&big)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	r := &endless{head: big.Bytes(), body: make([]byte, 4096), cancelAt: 1 << 20, cancel: func() { cancel(errors.New("stop")) }}
	dir = t.TempDir()
	if _, err := Extract(ctx, r, dir, Limits{Bytes: 1 << 41, Entries: 8, Depth: 8, NameLen: 100}, nil); err == nil {
		t.Error("a stopped extraction returned no error")
	}
	if _, err := os.Lstat(filepath.Join(dir, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file a stop cut short is there: %v", err)
	}
}
