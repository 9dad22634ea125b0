package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/tools/kvmstats"
)

func TestMkdisk(t *testing.T) {
	for _, size := range []int64{1, 1 << 20, 3<<20 + 5} {
		p := filepath.Join(t.TempDir(), "disk.img")
		os.WriteFile(p, make([]byte, 5<<20), 0o644) // truncated, not kept
		if err := mkdisk(p, size); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != size {
			t.Fatalf("size %d, want %d", len(b), size)
		}
		for i := 0; i < len(b); i += 4093 {
			if b[i] == 0 {
				t.Fatalf("size %d: zero byte at %d; the image must have no holes", size, i)
			}
		}
	}
	// The shared directory's file: its directory is made.
	dir := t.TempDir()
	if err := mkdisk(filepath.Join(dir, "share", "seq.img"), 4096); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "share", "seq.img")); err != nil || st.Size() != 4096 {
		t.Fatalf("%v %v", st, err)
	}
	// Under a file there is no directory to make.
	if err := mkdisk(filepath.Join(dir, "share", "seq.img", "x"), 1); err == nil {
		t.Error("mkdisk under a regular file succeeded")
	}
}

// rm takes a directory with everything in it (the guest's small files).
func TestRemoveTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "files")
	if err := mkdisk(filepath.Join(dir, "d000", "f00001"), 10); err != nil {
		t.Fatal(err)
	}
	if err := remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
}

// vmstat finds the one process by name and prints its VM's sample; none
// or two are errors.
func TestVMStat(t *testing.T) {
	root := t.TempDir()
	p := kvmstats.Paths{Debugfs: filepath.Join(root, "debug"), Proc: filepath.Join(root, "proc")}
	write := func(path, s string) {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := "41 (vmm) S" + strings.Repeat(" 0", 10) + " 30 5" + strings.Repeat(" 0", 27) + " 20" + strings.Repeat(" 0", 9) + "\n"
	write(filepath.Join(p.Debugfs, "kvm", "42-12", "exits"), "77\n")
	write(filepath.Join(p.Proc, "41", "comm"), "vmm\n")
	write(filepath.Join(p.Proc, "41", "stat"), stat)
	os.MkdirAll(filepath.Join(p.Proc, "41", "task", "42"), 0o755)
	write(filepath.Join(p.Proc, "50", "comm"), "qemu-system-x86\n")
	write(filepath.Join(p.Proc, "51", "comm"), "qemu-system-x86\n")

	var b strings.Builder
	if err := vmstat(p, "vmm", &b); err != nil {
		t.Fatal(err)
	}
	var s kvmstats.Sample
	if err := json.Unmarshal([]byte(b.String()), &s); err != nil {
		t.Fatalf("%q: %v", b.String(), err)
	}
	want := kvmstats.Sample{PID: 41, VM: "42-12", Counters: kvmstats.Counters{"exits": 77}, CPU: kvmstats.CPU{User: 30, System: 5, Guest: 20}, Procs: []string{"vmm"}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("sample %+v, want %+v", s, want)
	}
	for _, comm := range []string{"qemu-system-x86", "none"} {
		if err := vmstat(p, comm, io.Discard); err == nil || !strings.Contains(err.Error(), "want one") {
			t.Errorf("vmstat %s: %v", comm, err)
		}
	}
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("0123456789"), 0o644)
	for _, c := range []struct {
		n    int64
		want string
	}{{4, "6789"}, {10, "0123456789"}, {100, "0123456789"}} {
		var b strings.Builder
		if err := tail(p, c.n, &b); err != nil || b.String() != c.want {
			t.Errorf("tail %d: %q %v, want %q", c.n, b.String(), err, c.want)
		}
	}
	if err := tail(filepath.Join(t.TempDir(), "none"), 4, io.Discard); err == nil {
		t.Error("tail of a missing file succeeded")
	}
}
