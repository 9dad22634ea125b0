package blk

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
)

// These tests hand process chains built directly, so every layout of
// header, data and status is under the test's control; worker_test.go
// drives the same code through a real queue.

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sector   uint64
		readable []int // split of the 16-byte header and extra bytes
		extra    int   // readable bytes after the header, which IN ignores
		writable []int // data buffers then status; the status is the last byte
	}{
		{"one sector", 0, nil, 0, []int{512, 1}},
		{"header split 8+8", 3, []int{8, 8}, 0, []int{512, 1}},
		{"header split 1+15", 5, []int{1, 15}, 0, []int{1024, 1}},
		{"data across 3 buffers", 7, nil, 0, []int{512, 1024, 512, 1}},
		{"odd buffer boundaries", 9, nil, 0, []int{100, 700, 224, 1}},
		{"status shares the data buffer", 11, nil, 0, []int{512, 1024 + 1}},
		{"status alone after data sharing", 12, nil, 0, []int{1, 1023, 1}},
		{"last sectors", testSectors - 4, nil, 0, []int{2048, 1}},
		{"whole disk", 0, nil, 0, []int{testSectors * SectorSize, 1}},
		{"12 buffers (two preadv batches)", 20, nil, 0, append(sizes(12, 512), 1)},
		{"zero length", testSectors, nil, 0, []int{1}},
		{"readable bytes after the header are ignored", 2, []int{10}, 100, []int{512, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path, _ := newDisk(t, testSectors, false)
			want := readFile(t, path)
			hdr := append(header(typeIn, tc.sector), repeat(0x55, tc.extra)...)
			c := &virtio.Chain{Head: 7, Readable: split(hdr, tc.readable...), Writable: writable(tc.writable...)}
			used := d.process(c)
			w := concat(c.Writable)
			n := len(w) - 1
			if used != uint32(n+1) || status(c) != statusOK {
				t.Fatalf("used %d status %d, want %d and OK", used, status(c), n+1)
			}
			off := int(tc.sector) * SectorSize
			if !bytes.Equal(w[:n], want[off:off+n]) {
				t.Errorf("read data differs from sectors %d..", tc.sector)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sector   uint64
		size     int
		readable []int // split of header+data
		writable []int
	}{
		{"header and data in one buffer", 0, 512, nil, []int{1}},
		{"header split 8+8", 4, 1024, []int{8, 8}, []int{1}},
		{"header shares a buffer with data", 6, 512, []int{20, 100}, []int{1}},
		{"data across 3 buffers", 10, 2048, []int{16, 512, 1024}, []int{1}},
		{"12 buffers (two pwritev batches)", 20, 12 * 512, append([]int{16}, sizes(11, 512)...), []int{1}},
		{"last sector", testSectors - 1, 512, []int{16}, []int{1}},
		{"writable bytes before the status are left alone", 30, 512, []int{16}, []int{8, 1}},
		{"zero length", testSectors, 0, nil, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path, _ := newDisk(t, testSectors, false)
			want := readFile(t, path)
			data := make([]byte, tc.size)
			for i := range data {
				data[i] = byte(i*31 + 7)
			}
			c := &virtio.Chain{Readable: split(append(header(typeOut, tc.sector), data...), tc.readable...), Writable: writable(tc.writable...)}
			if used := d.process(c); used != 1 || status(c) != statusOK {
				t.Fatalf("used %d status %d, want 1 and OK", used, status(c))
			}
			if w := concat(c.Writable); !bytes.Equal(w[:len(w)-1], repeat(0xee, len(w)-1)) {
				t.Errorf("writable bytes before the status were modified: %x", w)
			}
			copy(want[tc.sector*SectorSize:], data)
			if got := readFile(t, path); !bytes.Equal(got, want) {
				t.Errorf("disk content differs from what was written")
			}
		})
	}
}

// TestRejected covers requests that must fail without touching the file or
// writing the guest's data buffers.
func TestRejected(t *testing.T) {
	const last = testSectors - 1
	for _, tc := range []struct {
		name     string
		readOnly bool
		readable [][]byte
		writable []int
		want     int
	}{
		{"read past the end", false, [][]byte{header(typeIn, last)}, []int{1024, 1}, statusIOErr},
		{"read at capacity", false, [][]byte{header(typeIn, testSectors)}, []int{512, 1}, statusIOErr},
		{"read at max sector", false, [][]byte{header(typeIn, math.MaxUint64)}, []int{512, 1}, statusIOErr},
		{"read wrapping sector*512", false, [][]byte{header(typeIn, math.MaxUint64/SectorSize+1)}, []int{512, 1}, statusIOErr},
		{"read of 511 bytes", false, [][]byte{header(typeIn, 0)}, []int{511, 1}, statusIOErr},
		{"read of 513 bytes", false, [][]byte{header(typeIn, 0)}, []int{513, 1}, statusIOErr},
		{"write past the end", false, [][]byte{header(typeOut, last), make([]byte, 1024)}, []int{1}, statusIOErr},
		{"write at max sector", false, [][]byte{header(typeOut, math.MaxUint64), make([]byte, 512)}, []int{1}, statusIOErr},
		{"write of 511 bytes", false, [][]byte{header(typeOut, 0), make([]byte, 511)}, []int{1}, statusIOErr},
		{"write of 1 byte", false, [][]byte{header(typeOut, 0), {0}}, []int{1}, statusIOErr},
		{"header of 15 bytes", false, [][]byte{header(typeOut, 0)[:15]}, []int{1}, statusIOErr},
		{"no readable bytes", false, nil, []int{512, 1}, statusIOErr},
		{"SCSI command (legacy type 2)", false, [][]byte{header(2, 0)}, []int{1}, statusUnsupp},
		{"GET_LIFETIME", false, [][]byte{header(10, 0)}, []int{6, 1}, statusUnsupp},
		{"SECURE_ERASE", false, [][]byte{header(14, 0), segment(0, 1, 0)}, []int{1}, statusUnsupp},
		{"type 0xffffffff", false, [][]byte{header(math.MaxUint32, 0)}, []int{1}, statusUnsupp},
		{"discard past the end", false, [][]byte{header(typeDiscard, 0), segment(last, 2, 0)}, []int{1}, statusIOErr},
		{"discard at max sector", false, [][]byte{header(typeDiscard, 0), segment(math.MaxUint64, 1, 0)}, []int{1}, statusIOErr},
		{"discard with unmap", false, [][]byte{header(typeDiscard, 0), segment(0, 1, flagUnmap)}, []int{1}, statusUnsupp},
		{"discard with a reserved flag", false, [][]byte{header(typeDiscard, 0), segment(0, 1, 2)}, []int{1}, statusUnsupp},
		{"discard without a segment", false, [][]byte{header(typeDiscard, 0)}, []int{1}, statusIOErr},
		{"discard with half a segment", false, [][]byte{header(typeDiscard, 0), segment(0, 1, 0)[:8]}, []int{1}, statusIOErr},
		{"discard with two segments", false, [][]byte{header(typeDiscard, 0), segment(0, 1, 0), segment(4, 1, 0)}, []int{1}, statusIOErr},
		{"write zeroes past the end", false, [][]byte{header(typeWriteZeroes, 0), segment(1, testSectors, 0)}, []int{1}, statusIOErr},
		{"write zeroes of max sectors", false, [][]byte{header(typeWriteZeroes, 0), segment(0, math.MaxUint32, 0)}, []int{1}, statusIOErr},
		{"write zeroes with a reserved flag", false, [][]byte{header(typeWriteZeroes, 0), segment(0, 1, 1<<31|flagUnmap)}, []int{1}, statusUnsupp},
		{"read-only: write", true, [][]byte{header(typeOut, 0), make([]byte, 512)}, []int{1}, statusIOErr},
		{"read-only: zero-length write", true, [][]byte{header(typeOut, 0)}, []int{1}, statusIOErr},
		{"read-only: discard", true, [][]byte{header(typeDiscard, 0), segment(0, 8, 0)}, []int{1}, statusIOErr},
		{"read-only: write zeroes", true, [][]byte{header(typeWriteZeroes, 0), segment(0, 8, flagUnmap)}, []int{1}, statusIOErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path, sink := newDisk(t, testSectors, tc.readOnly)
			before := fileHash(t, path)
			c := &virtio.Chain{Readable: tc.readable, Writable: writable(tc.writable...)}
			used := d.process(c)
			if used != 1 || status(c) != tc.want {
				t.Errorf("used %d status %d, want 1 and %d", used, status(c), tc.want)
			}
			if w := concat(c.Writable); !bytes.Equal(w[:len(w)-1], repeat(0xee, len(w)-1)) {
				t.Errorf("data buffers modified by a failed request")
			}
			if fileHash(t, path) != before {
				t.Errorf("disk modified by a failed request")
			}
			if tc.want == statusIOErr && !tc.readOnly && sink.count() == 0 {
				t.Errorf("driver error not logged")
			}
		})
	}
}

func TestNoStatusByte(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readable [][]byte
		writable [][]byte
	}{
		{"no writable buffer", [][]byte{header(typeIn, 0)}, nil},
		{"empty writable buffers", [][]byte{header(typeIn, 0)}, [][]byte{{}, {}}},
		{"write without status", [][]byte{header(typeOut, 0), make([]byte, 512)}, nil},
		{"nothing at all", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, path, sink := newDisk(t, testSectors, false)
			before := fileHash(t, path)
			c := &virtio.Chain{Readable: tc.readable, Writable: tc.writable}
			if used := d.process(c); used != 0 {
				t.Errorf("used %d, want 0", used)
			}
			if fileHash(t, path) != before {
				t.Errorf("disk modified by a request without a status byte")
			}
			if sink.count() != 1 {
				t.Errorf("%d log lines, want 1", sink.count())
			}
		})
	}
}

func TestLogRateLimited(t *testing.T) {
	d, _, sink := newDisk(t, testSectors, false)
	for range 100 {
		d.process(&virtio.Chain{})
	}
	if n := sink.count(); n != 1 {
		t.Errorf("100 bad requests in a burst logged %d lines, want 1", n)
	}
}

func TestFlush(t *testing.T) {
	for _, ro := range []bool{false, true} {
		d, _, _ := newDisk(t, testSectors, ro)
		c := &virtio.Chain{Readable: [][]byte{header(typeFlush, 0)}, Writable: writable(1)}
		if used := d.process(c); used != 1 || status(c) != statusOK {
			t.Errorf("read-only %v: flush used %d status %d, want 1 and OK", ro, used, status(c))
		}
	}
}

func TestGetID(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serial   string
		writable []int
		want     []byte
	}{
		{"short serial is NUL-padded", "abc", []int{20, 1}, append([]byte("abc"), make([]byte, 17)...)},
		{"20-byte serial has no terminator", "0123456789abcdefghij", []int{20, 1}, []byte("0123456789abcdefghij")},
		{"split buffer", "0123456789abcdefghij", []int{5, 15, 1}, []byte("0123456789abcdefghij")},
		{"short buffer gets a prefix", "0123456789abcdefghij", []int{8, 1}, []byte("01234567")},
		{"long buffer gets 20 bytes", "xyz", []int{64, 1}, append([]byte("xyz"), make([]byte, 17)...)},
		{"no data buffer", "xyz", []int{1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tempDisk(t, "d.img", 8*SectorSize)
			d, err := Open(Options{Path: path, Serial: tc.serial})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c := &virtio.Chain{Readable: [][]byte{header(typeGetID, 0)}, Writable: writable(tc.writable...)}
			used := d.process(c)
			if used != uint32(len(tc.want)+1) || status(c) != statusOK {
				t.Fatalf("used %d status %d, want %d and OK", used, status(c), len(tc.want)+1)
			}
			w := concat(c.Writable)
			if !bytes.Equal(w[:len(tc.want)], tc.want) {
				t.Errorf("id %q, want %q", w[:len(tc.want)], tc.want)
			}
			if rest := w[len(tc.want) : len(w)-1]; !bytes.Equal(rest, repeat(0xee, len(rest))) {
				t.Errorf("bytes beyond the id were written: %q", rest)
			}
		})
	}
}

func TestZero(t *testing.T) {
	for _, tc := range []struct {
		name        string
		typ         uint32
		sector      uint64
		count       uint32
		flags       uint32
		readable    []int
		noZeroRange bool // force the writing fallback
	}{
		{"discard", typeDiscard, 3, 5, 0, nil, false},
		{"discard, segment split 4+12", typeDiscard, 8, 16, 0, []int{16, 4}, false},
		{"discard, header and segment split 10+22", typeDiscard, 0, 1, 0, []int{10}, false},
		{"discard of the last sector", typeDiscard, testSectors - 1, 1, 0, nil, false},
		{"discard of nothing", typeDiscard, 4, 0, 0, nil, false},
		{"write zeroes", typeWriteZeroes, 2, 9, 0, nil, false},
		{"write zeroes with unmap", typeWriteZeroes, 17, 30, flagUnmap, nil, false},
		{"write zeroes of the whole disk", typeWriteZeroes, 0, testSectors, 0, nil, false},
		{"write zeroes by writing", typeWriteZeroes, 5, 3, 0, nil, true},
		{"write zeroes by writing, more than the buffer", typeWriteZeroes, 1, zeroBufSize/SectorSize + 3, 0, nil, true},
		{"write zeroes with unmap by writing", typeWriteZeroes, 9, 4, flagUnmap, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sectors := max(testSectors, int(tc.count)+int(tc.sector))
			d, path, _ := newDisk(t, sectors, false)
			if !d.punch {
				t.Skip("host file system cannot punch holes")
			}
			d.req.noZeroRange = tc.noZeroRange
			if tc.noZeroRange {
				d.punch = false // unmap falls through to ZERO_RANGE, skipped too
			}
			want := readFile(t, path)
			c := &virtio.Chain{Readable: split(append(header(tc.typ, 0), segment(tc.sector, tc.count, tc.flags)...), tc.readable...), Writable: writable(1)}
			if used := d.process(c); used != 1 || status(c) != statusOK {
				t.Fatalf("used %d status %d, want 1 and OK", used, status(c))
			}
			clear(want[tc.sector*SectorSize : (tc.sector+uint64(tc.count))*SectorSize])
			if got := readFile(t, path); !bytes.Equal(got, want) {
				t.Errorf("disk content wrong after zeroing sectors %d+%d", tc.sector, tc.count)
			}
		})
	}
}

// TestWriteZeroesFallback runs write zeroes on tmpfs, which punches holes
// but has no FALLOC_FL_ZERO_RANGE: without unmap the device must learn
// that and write zeros itself.
func TestWriteZeroesFallback(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "blktest")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")
	const sectors = 2*zeroBufSize/SectorSize + 8
	if err := os.WriteFile(path, pattern(sectors*SectorSize), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := readFile(t, path)
	for _, seg := range [][3]uint32{{3, sectors - 4, 0}, {1, 1, flagUnmap}} {
		c := &virtio.Chain{Readable: [][]byte{header(typeWriteZeroes, 0), segment(uint64(seg[0]), seg[1], seg[2])}, Writable: writable(1)}
		if used := d.process(c); used != 1 || status(c) != statusOK {
			t.Fatalf("segment %v: used %d status %d", seg, used, status(c))
		}
		clear(want[seg[0]*SectorSize : (seg[0]+seg[1])*SectorSize])
		if !bytes.Equal(readFile(t, path), want) {
			t.Errorf("segment %v: disk content wrong", seg)
		}
	}
	if !d.req.noZeroRange {
		t.Errorf("ZERO_RANGE worked on tmpfs: the writing fallback was not tested")
	}
}

// TestProcessAllocs pins that request processing allocates nothing, with
// as many data buffers as a Linux guest uses and more than one preadv
// batch.
func TestProcessAllocs(t *testing.T) {
	d, _, _ := newDisk(t, testSectors, false)
	for _, tc := range []struct {
		name string
		c    *virtio.Chain
	}{
		{"read 1 buffer", &virtio.Chain{Readable: [][]byte{header(typeIn, 1)}, Writable: writable(4096, 1)}},
		{"read 32 buffers", &virtio.Chain{Readable: [][]byte{header(typeIn, 2)}, Writable: writable(append(sizes(32, 512), 1)...)}},
		{"write 3 buffers, header split", &virtio.Chain{Readable: split(append(header(typeOut, 3), make([]byte, 4096)...), 8, 8, 1024, 1024), Writable: writable(1)}},
		{"write 32 buffers", &virtio.Chain{Readable: split(append(header(typeOut, 4), make([]byte, 32*512)...), sizes(33, 16)...), Writable: writable(1)}},
		{"flush", &virtio.Chain{Readable: [][]byte{header(typeFlush, 0)}, Writable: writable(1)}},
		{"get id", &virtio.Chain{Readable: [][]byte{header(typeGetID, 0)}, Writable: writable(20, 1)}},
		{"discard", &virtio.Chain{Readable: [][]byte{header(typeDiscard, 0), segment(4, 4, 0)}, Writable: writable(1)}},
		{"write zeroes", &virtio.Chain{Readable: [][]byte{header(typeWriteZeroes, 0), segment(8, 4, 0)}, Writable: writable(1)}},
		{"unsupported", &virtio.Chain{Readable: [][]byte{header(99, 0)}, Writable: writable(1)}},
	} {
		if allocs := testing.AllocsPerRun(20, func() { d.process(tc.c) }); allocs != 0 {
			t.Errorf("%s: %.1f allocations per request, want 0", tc.name, allocs)
		}
		if status(tc.c) == statusIOErr {
			t.Errorf("%s: IOERR", tc.name)
		}
	}
}

func sizes(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

func tempDisk(t testing.TB, name string, size int) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, pattern(size), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
