package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
)

// fuzzSectors keeps the fuzzed disks small, so checking them after every
// request is cheap.
const fuzzSectors = 16

// FuzzRequest hands the device a request of any shape: stream is the
// readable bytes (header, data, segments), cut into buffers whose sizes
// are the bytes of readable; writable holds le16 sizes of the writable
// buffers. Whatever the input, the device must not panic, must answer
// with status 0, 1 or 2 in the last writable byte (used length 0 when
// there is none), must leave data buffers alone when the request failed,
// must return the disk's content on a successful read, must never change
// the disk's size, and must never write to a read-only disk. The seeds
// are in testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	dir := f.TempDir()
	open := func(name string, ro bool) (*Device, string) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pattern(fuzzSectors*SectorSize), 0o644); err != nil {
			f.Fatal(err)
		}
		d, err := Open(Options{Path: path, ReadOnly: ro, Logf: func(string, ...any) {}})
		if err != nil {
			f.Fatal(err)
		}
		return d, path
	}
	rw, rwPath := open("rw.img", false)
	ro, roPath := open("ro.img", true)
	roContent := readFile(f, roPath)
	defer rw.Close()
	defer ro.Close()

	f.Fuzz(func(t *testing.T, stream, readable, writableSizes []byte, readOnly bool) {
		if len(stream) > 64<<10 {
			stream = stream[:64<<10]
		}
		var c virtio.Chain
		for _, n := range readable {
			n := min(int(n), len(stream))
			c.Readable = append(c.Readable, stream[:n:n])
			stream = stream[n:]
		}
		if len(stream) > 0 {
			c.Readable = append(c.Readable, stream)
		}
		for i := 0; i+1 < len(writableSizes) && i < 32; i += 2 {
			c.Writable = append(c.Writable, repeat(0xee, int(binary.LittleEndian.Uint16(writableSizes[i:]))))
		}
		d, path := rw, rwPath
		if readOnly {
			d, path = ro, roPath
		}
		before := readFile(t, path)

		used := d.process(&c)

		after := readFile(t, path)
		if len(after) != fuzzSectors*SectorSize {
			t.Fatalf("disk size changed to %d", len(after))
		}
		if readOnly && !bytes.Equal(after, roContent) {
			t.Fatalf("read-only disk written")
		}
		w := concat(c.Writable)
		if len(w) == 0 {
			if used != 0 {
				t.Fatalf("used %d without a status byte", used)
			}
			return
		}
		st := w[len(w)-1]
		if st > statusUnsupp || used < 1 || int(used) > len(w) {
			t.Fatalf("status %d used %d of %d writable bytes", st, used, len(w))
		}
		data := w[:used-1]
		if st != statusOK {
			if used != 1 || !bytes.Equal(w[:len(w)-1], repeat(0xee, len(w)-1)) {
				t.Fatalf("failed request (status %d, used %d) wrote data buffers", st, used)
			}
			if !bytes.Equal(after, before) {
				t.Fatalf("failed request (status %d) changed the disk", st)
			}
			return
		}
		var hdr [headerSize]byte
		c.Readable.ReadAt(hdr[:], 0)
		if binary.LittleEndian.Uint32(hdr[:]) == typeIn {
			off := binary.LittleEndian.Uint64(hdr[8:]) * SectorSize
			if !bytes.Equal(data, before[off:off+uint64(len(data))]) {
				t.Fatalf("read of %d bytes at %d returned other data", len(data), off)
			}
		}
	})
}
