package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestInitrdHas(t *testing.T) {
	p := filepath.Join(t.TempDir(), "initrd.cpio")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	recs := []cpio.Record{cpio.Directory("bin", 0o755), cpio.StaticFile("bin/vmm-iotool", "x", 0o755), cpio.StaticFile("init", "y", 0o755)}
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tt := range []struct {
		name string
		want bool
	}{{"bin/vmm-iotool", true}, {"/bin/vmm-iotool", true}, {"bin/vmm-init", false}, {"bin", true}} {
		got, err := InitrdHas(p, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("InitrdHas(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	os.WriteFile(p, bytes.Repeat([]byte("not a cpio archive "), 20), 0o644)
	if _, err := InitrdHas(p, "init"); err == nil {
		t.Error("garbage archive accepted")
	}
}
