package blk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
)

// testSectors is the size of the disks tests use.
const testSectors = 64

// pattern is the initial content of test disks: no two sectors alike and
// no zero bytes, so a read from the wrong place or a zeroed range shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/SectorSize*13+i%251) | 1
	}
	return b
}

// logSink collects what the device logs.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logSink) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// newDisk writes a patterned disk image of sectors sectors and opens it.
func newDisk(t testing.TB, sectors int, readOnly bool) (*Device, string, *logSink) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, pattern(sectors*SectorSize), 0o644); err != nil {
		t.Fatal(err)
	}
	sink := &logSink{}
	d, err := Open(Options{Path: path, ReadOnly: readOnly, Serial: "test-serial", Logf: sink.logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path, sink
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	return sha256.Sum256(readFile(t, path))
}

// header is a struct virtio_blk_req header.
func header(typ uint32, sector uint64) []byte {
	h := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0xdeadbeef) // reserved: ignored
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// segment is a struct virtio_blk_discard_write_zeroes.
func segment(sector uint64, count, flags uint32) []byte {
	s := make([]byte, segmentSize)
	binary.LittleEndian.PutUint64(s[0:], sector)
	binary.LittleEndian.PutUint32(s[8:], count)
	binary.LittleEndian.PutUint32(s[12:], flags)
	return s
}

// split cuts stream into buffers of the given sizes (copies, as separate
// descriptors would be); what is left over becomes one more buffer.
func split(stream []byte, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		n = min(n, len(stream))
		out = append(out, bytes.Clone(stream[:n]))
		stream = stream[n:]
	}
	if len(stream) > 0 {
		out = append(out, bytes.Clone(stream))
	}
	return out
}

// writable allocates device-writable buffers of the given sizes, filled
// with 0xee so untouched bytes are recognisable.
func writable(sizes ...int) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = bytes.Repeat([]byte{0xee}, n)
	}
	return out
}

func concat(bufs [][]byte) []byte { return bytes.Join(bufs, nil) }

// status is the last writable byte of c, or -1.
func status(c *virtio.Chain) int {
	w := concat(c.Writable)
	if len(w) == 0 {
		return -1
	}
	return int(w[len(w)-1])
}

func repeat(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
