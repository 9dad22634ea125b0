package iotool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fs-files creates, stats and reads back every file, in directories of
// 1,000, and reports each phase; fs-seq-read reads exactly what it is
// asked for. (Without -drop-caches: dropping needs root.)
func TestFSWorkloads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "files")
	r, err := FSFiles(context.Background(), FSFilesOptions{Dir: dir, Count: 1500, Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"create_s", "stat_s", "read_s", "seconds"} {
		if v, err := r.Float(k); err != nil || v < 0 {
			t.Errorf("%s: %v, %v in %s", k, v, err, r)
		}
	}
	if n, _ := r.Int("files"); n != 1500 {
		t.Errorf("files %d in %s", n, r)
	}
	for _, d := range []string{"d000", "d001"} {
		ents, err := os.ReadDir(filepath.Join(dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{"d000": 1000, "d001": 500}[d]; len(ents) != want {
			t.Errorf("%s holds %d files, want %d", d, len(ents), want)
		}
	}
	if _, err := FSFiles(context.Background(), FSFilesOptions{Dir: dir, Count: 1, Size: 1}); err == nil || !strings.Contains(err.Error(), "create") {
		t.Errorf("a second run over existing files: %v, want a create error", err)
	}

	f := filepath.Join(t.TempDir(), "seq")
	if err := os.WriteFile(f, bytes.Repeat([]byte{7}, 3<<20+5), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bytes, bs int64
		ok        bool
	}{
		{3 << 20, 1 << 20, true},
		{3<<20 + 5, 4096, true},
		{3<<20 + 6, 1 << 20, false}, // longer than the file
	}
	for _, tt := range tests {
		r, err := FSSeqRead(context.Background(), FSSeqReadOptions{Path: f, Bytes: tt.bytes, BlockSize: int(tt.bs)})
		if (err == nil) != tt.ok {
			t.Errorf("%d bytes in %d: %v", tt.bytes, tt.bs, err)
			continue
		}
		if n, _ := r.Int("bytes"); tt.ok && n != tt.bytes {
			t.Errorf("%d bytes in %d: read %d", tt.bytes, tt.bs, n)
		}
	}
}

// Bad options are usage errors, found before anything is touched.
func TestFSWorkloadUsage(t *testing.T) {
	for _, o := range []FSFilesOptions{{Count: 1}, {Dir: "x"}, {Dir: "x", Count: 1, Size: 2 << 20}} {
		if _, err := FSFiles(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%+v: %v is not a usage error", o, err)
		}
	}
	if _, err := FSSeqRead(context.Background(), FSSeqReadOptions{Path: "x"}); err == nil {
		t.Error("no -bytes: no error")
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), "iotool", []string{"fs-files", "-dir", t.TempDir() + "/x", "-count", "3", "-size", "2K"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "iotool: fs-files files=3 size=2048 ") {
		t.Errorf("Main: status %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
