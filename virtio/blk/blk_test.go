package blk

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
)

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.img", 4096)
	unreadable := write("unreadable.img", 4096)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		o        Options
		contains string
		skip     string
	}{
		// A read-only open(2) of a FIFO would wait for a writer.
		{"FIFO read-only", Options{Path: fifo, ReadOnly: true}, "not a regular file or block device", ""},
		{"FIFO", Options{Path: fifo}, "not a regular file or block device", ""},
		{"missing", Options{Path: filepath.Join(dir, "missing.img")}, "no such file", ""},
		{"directory", Options{Path: dir}, "is a directory", ""},
		{"directory read-only", Options{Path: dir, ReadOnly: true}, "not a regular file or block device", ""},
		{"character device", Options{Path: "/dev/null"}, "not a regular file or block device", ""},
		{"empty", Options{Path: write("empty.img", 0)}, "empty", ""},
		{"partial sector", Options{Path: write("odd.img", 1000)}, "not a multiple of 512", ""},
		{"one byte short of 2 sectors", Options{Path: write("short.img", 1023)}, "not a multiple of 512", ""},
		{"serial too long", Options{Path: good, Serial: strings.Repeat("x", 21)}, "longer than 20", ""},
		{"serial not ASCII", Options{Path: good, Serial: "disk\u00e9"}, "printable ASCII", ""},
		{"serial with NUL", Options{Path: good, Serial: "a\x00b"}, "printable ASCII", ""},
		{"unreadable", Options{Path: unreadable}, "permission denied",
			"running as root: permission bits do not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" && os.Geteuid() == 0 {
				t.Skip(tc.skip)
			}
			var d *Device
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				d, err = Open(tc.o)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Open did not return within 10s")
			}
			if err == nil {
				d.Close()
				t.Fatalf("Open succeeded")
			}
			if strings.Count(err.Error(), tc.o.Path) != 1 || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not name %s once and say %q", err, tc.o.Path, tc.contains)
			}
		})
	}
	if _, err := Open(Options{}); err == nil {
		t.Errorf("Open without a path succeeded")
	}
}

func TestOpenReadOnlyFile(t *testing.T) {
	// A file the user may only read opens read-only even for a non-root
	// user; as root this checks that ReadOnly does not ask for write access.
	path := tempDisk(t, "ro.img", 4096)
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Capacity() != 8 {
		t.Errorf("capacity %d sectors, want 8", d.Capacity())
	}
}

func TestOpenLocks(t *testing.T) {
	path := tempDisk(t, "shared.img", 4096)
	for _, tc := range []struct {
		name          string
		first, second bool // ReadOnly of each
		ok            bool
	}{
		{"two readers", true, true, true},
		{"writer then reader", false, true, false},
		{"reader then writer", true, false, false},
		{"two writers", false, false, false},
	} {
		d1, err := Open(Options{Path: path, ReadOnly: tc.first})
		if err != nil {
			t.Fatal(err)
		}
		d2, err := Open(Options{Path: path, ReadOnly: tc.second})
		if tc.ok != (err == nil) {
			t.Errorf("%s: second Open: %v", tc.name, err)
		}
		if err != nil && (!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "in use")) {
			t.Errorf("%s: error %q does not name %s and say it is in use", tc.name, err, path)
		}
		if d2 != nil {
			d2.Close()
		}
		d1.Close()
	}
	// The lock goes with Close.
	d, err := Open(Options{Path: path})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	d.Close()
}

func TestDefaultSerial(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"disk.img", "disk.img"},
		{"a-very-long-disk-image-name.raw", "a-very-long-disk-ima"},
		{"caf\u00e9 disk", "caf__ disk"},
	} {
		path := tempDisk(t, tc.name, 512)
		d, err := Open(Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		if got := string(bytes.TrimRight(d.serial[:], "\x00")); got != tc.want {
			t.Errorf("serial for %q is %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFeatures(t *testing.T) {
	common := uint64(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc |
		1<<FeatureSegMax | 1<<FeatureBlkSize | 1<<FeatureFlush)
	rw, _, _ := newDisk(t, testSectors, false)
	ro, _, _ := newDisk(t, testSectors, true)
	wantRW := common | 1<<FeatureWriteZeroes
	if rw.punch {
		wantRW |= 1 << FeatureDiscard
	}
	if got := rw.Features(); got != wantRW {
		t.Errorf("read-write features %#x, want %#x", got, wantRW)
	}
	if got, want := ro.Features(), common|1<<FeatureRO; got != want {
		t.Errorf("read-only features %#x, want %#x", got, want)
	}
	if rw.Type() != virtio.TypeBlock {
		t.Errorf("type %d", rw.Type())
	}
	if q := rw.QueueMax(); len(q) != 1 || q[0] != queueSize {
		t.Errorf("QueueMax %v", q)
	}
}

func TestConfig(t *testing.T) {
	rw, _, _ := newDisk(t, testSectors, false)
	ro, _, _ := newDisk(t, testSectors, true)
	if !rw.punch {
		t.Skip("host file system cannot punch holes")
	}
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	for _, tc := range []struct {
		name string
		d    *Device
		off  uint64
		want []byte
	}{
		{"capacity", rw, 0, binary.LittleEndian.AppendUint64(nil, testSectors)},
		{"capacity high half", rw, 4, u32(0)},
		{"size_max unused", rw, 8, u32(0)},
		{"seg_max", rw, 12, u32(254)},
		{"geometry unused", rw, 16, u32(0)},
		{"blk_size", rw, 20, u32(512)},
		{"topology unused", rw, 24, make([]byte, 8)},
		{"writeback, unused0, num_queues", rw, 32, u32(0)},
		{"max_discard_sectors", rw, 36, u32(maxZeroSectors)},
		{"max_discard_seg", rw, 40, u32(1)},
		{"discard_sector_alignment", rw, 44, u32(8)},
		{"max_write_zeroes_sectors", rw, 48, u32(maxZeroSectors)},
		{"max_write_zeroes_seg", rw, 52, u32(1)},
		{"write_zeroes_may_unmap and padding", rw, 56, u32(1)},
		{"byte of seg_max", rw, 12, []byte{254}},
		{"across the end", rw, 56, []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{"secure erase and zoned read as zero", rw, 60, make([]byte, 40)},
		{"far beyond", rw, 4096, make([]byte, 4)},
		{"offset overflow", rw, math.MaxUint64, make([]byte, 8)},
		{"read-only: no discard fields", ro, 36, make([]byte, 24)},
		{"read-only: capacity", ro, 0, []byte{testSectors}},
	} {
		data := bytes.Repeat([]byte{0xcc}, len(tc.want))
		tc.d.ReadConfig(tc.off, data)
		if !bytes.Equal(data, tc.want) {
			t.Errorf("%s: ReadConfig(%d) = %x, want %x", tc.name, tc.off, data, tc.want)
		}
	}
	before := rw.config
	rw.WriteConfig(0, bytes.Repeat([]byte{0xff}, configSize))
	rw.WriteConfig(32, []byte{1}) // writeback: not offered, ignored
	if rw.config != before {
		t.Errorf("WriteConfig changed the configuration")
	}
}

// TestResetBeforeActivate pins that Reset and Close are safe on a device
// that never ran, and that Close reports a second close.
func TestResetBeforeActivate(t *testing.T) {
	path := tempDisk(t, "d.img", 4096)
	d, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	d.Reset()
	d.Reset()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("second Close: %v", err)
	}
}

func TestActivateErrors(t *testing.T) {
	d, _, _ := newDisk(t, testSectors, false)
	for _, env := range []virtio.Env{
		{},
		{Queues: []*virtio.Queue{virtio.NewQueue(queueSize)}},
		{Queues: []*virtio.Queue{nil}, Notifiers: []virtio.Notifier{nil}, Interrupt: func() {}, Fail: func(error) {}},
	} {
		if err := d.Activate(env); err == nil {
			t.Errorf("Activate(%+v) succeeded", env)
		}
	}
}
