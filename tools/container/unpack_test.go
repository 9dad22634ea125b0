package container

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// rec is one newc record for tests; the writer is ours so that tests can
// build archives no well-behaved tool would (names with "..", broken
// headers).
type rec struct {
	name  string
	mode  uint32
	ino   uint32
	nlink uint32
	data  string
}

func newcBytes(recs []rec, trailer bool) []byte {
	var b bytes.Buffer
	put := func(r rec) {
		nlink := r.nlink
		if nlink == 0 {
			nlink = 1
		}
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			r.ino, r.mode, 0, 0, nlink, 0, len(r.data), 0, 0, 0, 0, len(r.name)+1, 0)
		b.WriteString(r.name)
		b.WriteByte(0)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
		b.WriteString(r.data)
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	for _, r := range recs {
		put(r)
	}
	if trailer {
		put(rec{name: newcTrailer})
	}
	return b.Bytes()
}

// tree lists a directory as "path mode [-> target | = content]" lines.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " = " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestUnpack(t *testing.T) {
	const (
		dir  = modeDir | 0o755
		file = modeReg | 0o644
		exe  = modeReg | 0o755
		link = modeLink | 0o777
	)
	tests := []struct {
		name    string
		recs    []rec
		want    []string
		wantErr string
	}{
		{
			name: "files dirs symlinks",
			recs: []rec{
				{name: ".", mode: dir},
				{name: "bin", mode: dir},
				{name: "bin/init", mode: exe, data: "#!/bin/sh\n"},
				{name: "init", mode: link, data: "bin/init"},
				{name: "etc/deep/file", mode: file, data: "x"}, // parents implied
				{name: "dev/console", mode: 0o020000 | 0o600},  // skipped
				{name: "sticky", mode: modeDir | 0o1777},
			},
			want: []string{
				"bin drwxr-xr-x", "bin/init -rwxr-xr-x = #!/bin/sh\n",
				"dev drwxr-xr-x",
				"etc drwxr-xr-x", "etc/deep drwxr-xr-x", "etc/deep/file -rw-r--r-- = x",
				"init Lrwxrwxrwx -> bin/init",
				"sticky dtrwxrwxrwx",
			},
		},
		{
			name: "later entries replace earlier ones",
			recs: []rec{
				{name: "a", mode: file, data: "old"},
				{name: "a", mode: file, data: "new"},
				{name: "b", mode: link, data: "a"},
				{name: "b", mode: file, data: "file now"},
			},
			want: []string{"a -rw-r--r-- = new", "b -rw-r--r-- = file now"},
		},
		{
			name: "hard links: the first carries the data",
			recs: []rec{
				{name: "x", mode: exe, ino: 7, nlink: 2, data: "payload"},
				{name: "y", mode: exe, ino: 7, nlink: 2},
			},
			want: []string{"x -rwxr-xr-x = payload", "y -rwxr-xr-x = payload"},
		},
		{
			name: "dot-dot stays inside",
			recs: []rec{
				{name: "../../escape", mode: file, data: "no"},
				{name: "/abs", mode: file, data: "abs"},
			},
			want: []string{"abs -rw-r--r-- = abs", "escape -rw-r--r-- = no"},
		},
		{
			name: "symlinks cannot lead out",
			recs: []rec{
				{name: "up", mode: link, data: "../../.."},
				{name: "up/out", mode: file, data: "inside"},
				{name: "abs", mode: link, data: "/"},
				{name: "abs/root-file", mode: file, data: "inside too"},
			},
			want: []string{
				"abs Lrwxrwxrwx -> /", "out -rw-r--r-- = inside",
				"root-file -rw-r--r-- = inside too", "up Lrwxrwxrwx -> ../../..",
			},
		},
		{
			name:    "symlink target too long",
			recs:    []rec{{name: "l", mode: link, data: strings.Repeat("a", maxSymlink+1)}},
			wantErr: "symlink target of 4097 bytes",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Unpack(bytes.NewReader(newcBytes(tt.recs, true)), root)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tree(t, root); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if got := tree(t, parent); len(got) != len(tt.want)+1 {
				t.Fatalf("something outside root:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

func TestUnpackStreams(t *testing.T) {
	one := newcBytes([]rec{{name: "a", mode: modeReg | 0o600, data: "1"}}, true)
	two := newcBytes([]rec{{name: "b", mode: modeReg | 0o600, data: "2"}}, true)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(one)
	zw.Close()
	tests := []struct {
		name    string
		in      []byte
		files   int
		wantErr string
	}{
		{"plain", one, 1, ""},
		{"gzip", gz.Bytes(), 1, ""},
		{"concatenated with padding", append(append(append([]byte(nil), one...), 0, 0, 0, 0, 0, 0, 0, 0), two...), 2, ""},
		{"trailing zeros", append(append([]byte(nil), one...), 0, 0), 1, ""},
		{"no trailer", newcBytes([]rec{{name: "a", mode: modeReg | 0o600, data: "1"}}, false), 1, ""},
		{"empty", nil, 0, "initramfs: EOF"},
		{"not cpio", []byte(strings.Repeat("not an archive ", 10)), 0, "bad magic"},
		{"truncated data", one[:len(one)-130], 0, "unexpected EOF"},
		{"truncated header", one[:50], 0, "unexpected EOF"},
		{"huge name", []byte("070701" + strings.Repeat("0", 11*8) + "ffffffff" + "00000000"), 0, "name size 4294967295 out of range"},
		{"bad hex", []byte("070701" + strings.Repeat("g", 13*8)), 0, "not hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			st, err := Unpack(bytes.NewReader(tt.in), root)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Files != tt.files {
				t.Fatalf("%d files, want %d", st.Files, tt.files)
			}
		})
	}
}

// FuzzUnpack feeds arbitrary archives to Unpack: it must not panic, and
// nothing may appear outside the root directory, whatever names, links
// and hard links the archive holds.
func FuzzUnpack(f *testing.F) {
	f.Add(newcBytes([]rec{
		{name: "dir", mode: modeDir | 0o755},
		{name: "dir/f", mode: modeReg | 0o644, data: "data"},
		{name: "l", mode: modeLink | 0o777, data: "../.."},
		{name: "l/x", mode: modeReg | 0o644, data: "x"},
		{name: "h1", mode: modeReg | 0o644, ino: 3, nlink: 2, data: "h"},
		{name: "h2", mode: modeReg | 0o644, ino: 3, nlink: 2},
	}, true))
	f.Fuzz(func(t *testing.T, in []byte) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		Unpack(bytes.NewReader(in), root)
		ents, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "root" {
			t.Fatalf("outside root: %v", ents)
		}
	})
}
