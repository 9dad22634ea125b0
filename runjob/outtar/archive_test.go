package outtar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, body string
	typ        byte
	link       string
}

func tarOf(t testing.TB, entries ...entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	// The out disk is larger than the archive: zeros follow it.
	return append(buf.Bytes(), make([]byte, 4096)...)
}

func TestExtract(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(outside, []byte("keep"), 0o644)
	// A symlink already in the output directory must be replaced, not
	// written through.
	os.Symlink(outside, filepath.Join(dir, "planted"))
	n, err := Extract(context.Background(), bytes.NewReader(tarOf(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "./result.txt", body: "ok\n", typ: tar.TypeReg},
		entry{name: "deep/er/file", body: "x", typ: tar.TypeReg},
		entry{name: "planted", body: "guest", typ: tar.TypeReg},
		entry{name: "evil-link", typ: tar.TypeSymlink, link: "/etc/passwd"},
		entry{name: "fifo", typ: tar.TypeFifo},
		entry{name: "deep/er/link", typ: tar.TypeSymlink, link: "../../result.txt"},
	)), dir, DefaultLimits(1<<20), nil)
	if err != nil || n != 4 {
		t.Fatalf("Extract: %d files, %v", n, err)
	}
	for name, want := range map[string]string{"result.txt": "ok\n", "deep/er/file": "x", "planted": "guest"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", name, b, err)
		}
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Errorf("file outside the output directory changed to %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "evil-link")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink to the host's /etc/passwd was created")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "deep/er/link")); err != nil || string(b) != "ok\n" {
		t.Errorf("deep/er/link: %q, %v; want result.txt's bytes through the link", b, err)
	}
}

// linkInside checks that symlink p, made by Extract in dir, leads to a
// place inside dir: resolved through the file system when it resolves,
// and by its text from its real parent when it dangles.
func linkInside(dir, p string) error {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	inside := func(q string) bool {
		return q == realDir || strings.HasPrefix(q, realDir+string(filepath.Separator))
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		if !inside(r) {
			return fmt.Errorf("symlink %s resolves to %s, outside %s", p, r, dir)
		}
		return nil
	}
	target, err := os.Readlink(p)
	if err != nil {
		return err
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return nil // its parent is gone or loops: nothing to follow
	}
	if filepath.IsAbs(target) || !inside(filepath.Join(parent, target)) {
		return fmt.Errorf("symlink %s -> %q leads outside %s", p, target, dir)
	}
	return nil
}

// TestExtractSymlinks checks which links from the guest are made: those
// that stay inside the output directory, as a tool that later reads or
// uploads it would follow them, and the rest skipped with a warning.
func TestExtractSymlinks(t *testing.T) {
	for _, tt := range []struct {
		name    string
		entries []entry
		made    []string // links that must exist
		warns   []string // substrings of the warnings, in order
	}{
		{"sibling", []entry{{name: "lib.so", typ: tar.TypeSymlink, link: "lib.so.1"}}, []string{"lib.so"}, nil},
		{"climbs within", []entry{{name: "a/b/l", typ: tar.TypeSymlink, link: "../../x"}}, []string{"a/b/l"}, nil},
		{"to the directory itself", []entry{{name: "self", typ: tar.TypeSymlink, link: "."}}, []string{"self"}, nil},
		{"absolute", []entry{{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}}, nil, []string{`l: skipped: a symbolic link to "/etc/passwd"`}},
		{"climbs out", []entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../x"}}, nil, []string{"a/l: skipped"}},
		{"climbs after descending", []entry{{name: "l", typ: tar.TypeSymlink, link: "a/../x"}}, nil, []string{"l: skipped"}},
		{"empty target", []entry{{name: "l", typ: tar.TypeSymlink}}, nil, []string{"l: skipped"}},
		// self -> . would let self/l's ".." reach dir's parent.
		{"inside a link", []entry{{name: "self", typ: tar.TypeSymlink, link: "."}, {name: "self/l", typ: tar.TypeSymlink, link: "../x"}}, []string{"self"}, []string{"self/l: skipped: a symbolic link inside another"}},
		{"over a directory", []entry{{name: "d/", typ: tar.TypeDir}, {name: "d", typ: tar.TypeSymlink, link: "x"}}, nil, []string{"d: skipped: a symbolic link in place of a directory"}},
		{"replaces a file", []entry{{name: "f", body: "x", typ: tar.TypeReg}, {name: "f", typ: tar.TypeSymlink, link: "g"}}, []string{"f"}, nil},
		{"fifo", []entry{{name: "p", typ: tar.TypeFifo}}, nil, []string{"p: skipped: a FIFO"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var warns []string
			_, err := Extract(context.Background(), bytes.NewReader(tarOf(t, tt.entries...)), dir, DefaultLimits(1<<20), func(m string) { warns = append(warns, m) })
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.made {
				if st, err := os.Lstat(filepath.Join(dir, l)); err != nil || st.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s: not a symlink (%v)", l, err)
				}
			}
			if len(warns) != len(tt.warns) {
				t.Fatalf("warnings %q, want %d", warns, len(tt.warns))
			}
			for i, w := range tt.warns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %q, want it to say %q", warns[i], w)
				}
			}
			filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
				if err == nil && info.Mode()&os.ModeSymlink != 0 {
					if err := linkInside(dir, p); err != nil {
						t.Error(err)
					}
				}
				return nil
			})
		})
	}
}

// TestExtractWarningsBounded checks that an archive of many skipped
// entries names the first few and counts the rest.
func TestExtractWarningsBounded(t *testing.T) {
	var entries []entry
	for i := range maxWarnings + 5 {
		entries = append(entries, entry{name: fmt.Sprintf("p%d", i), typ: tar.TypeFifo})
	}
	var warns []string
	if _, err := Extract(context.Background(), bytes.NewReader(tarOf(t, entries...)), t.TempDir(), DefaultLimits(1<<20), func(m string) { warns = append(warns, m) }); err != nil {
		t.Fatal(err)
	}
	if len(warns) != maxWarnings+1 || !strings.Contains(warns[maxWarnings], "skipped 5 more entries") {
		t.Errorf("warnings %q, want %d named and a count of 5", warns, maxWarnings)
	}
}

func TestExtractRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		tar  []byte
		want string
	}{
		{"absolute", tarOf(t, entry{name: "/etc/x", typ: tar.TypeReg}), "unsafe name"},
		{"dotdot", tarOf(t, entry{name: "a/../../x", typ: tar.TypeReg}), "unsafe name"},
		{"over limit", tarOf(t, entry{name: "big", body: strings.Repeat("z", 100), typ: tar.TypeReg}), "exceeds"},
		{"garbage", bytes.Repeat([]byte{0x5a}, 1024), "archive"},
	} {
		dir := t.TempDir()
		if _, err := Extract(context.Background(), bytes.NewReader(tt.tar), dir, DefaultLimits(64), nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// FuzzExtract feeds guest-written bytes to Extract: it must never write
// outside its directory, more than the limits allow or a symlink that
// leads out of it, and never panic. The limits are small so that the fuzzer reaches each of
// them with short inputs.
func FuzzExtract(f *testing.F) {
	f.Add(tarOf(f, entry{name: "a", body: "b", typ: tar.TypeReg}))
	f.Add(tarOf(f, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/../../x", typ: tar.TypeReg}))
	f.Add([]byte{})
	f.Add(tarOf(f, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/l", typ: tar.TypeSymlink, link: "../x"}, entry{name: "s", typ: tar.TypeSymlink, link: "."}, entry{name: "s/m", typ: tar.TypeSymlink, link: "../y"}))
	lim := Limits{Bytes: 4096, Entries: 16, Depth: 4, NameLen: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "out")
		Extract(context.Background(), bytes.NewReader(data), dir, lim, nil)
		var total int64
		created := 0
		filepath.Walk(parent, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			if p == parent || p == dir {
				return nil
			}
			rel, ok := strings.CutPrefix(p, dir+string(filepath.Separator))
			if !ok {
				t.Errorf("created %s outside the output directory", p)
				return nil
			}
			created++
			if d := strings.Count(rel, string(filepath.Separator)) + 1; d > lim.Depth {
				t.Errorf("created %s, %d deep, limit %d", rel, d, lim.Depth)
			}
			if len(rel) > lim.NameLen {
				t.Errorf("created %s, a %d-byte name, limit %d", rel, len(rel), lim.NameLen)
			}
			if info.Mode().IsRegular() {
				total += info.Size()
			}
			if info.Mode()&os.ModeSymlink != 0 {
				if err := linkInside(dir, p); err != nil {
					t.Error(err)
				}
			}
			return nil
		})
		if total > lim.Bytes {
			t.Errorf("wrote %d bytes, limit %d", total, lim.Bytes)
		}
		// Every file or directory created, listed or implied by a name,
		// counts against Entries.
		if created > lim.Entries {
			t.Errorf("created %d files and directories, limit %d", created, lim.Entries)
		}
	})
}
