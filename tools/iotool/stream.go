package iotool

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// DefaultSeed is the seed every sender uses, so that a checker that was
// not part of the run (the host reading back a disk image, a test) can
// compute what should have arrived with StreamSHA256.
const DefaultSeed = 0x76_6d_6d_2d_69_6f_74_6f // "vmm-ioto"

const (
	// streamPeriod is the size of the pseudo-random pattern the stream
	// repeats: generated once, then copied, because generation (and
	// certainly a cryptographic generator) would cost a sender more CPU
	// than the transfer it is measuring.
	streamPeriod = 1 << 20
	// stampInterval is how often the stream carries its own offset. The
	// stamps make the stream non-periodic: a block written to the wrong
	// sector, or a chunk delivered twice, changes the checksum even
	// though the pattern underneath repeats.
	stampInterval = 4096
	stampSize     = 8
)

// Stream is an endless deterministic byte sequence: a pseudo-random 1 MiB
// pattern, repeated, with the little-endian 64-bit byte offset written over
// the first 8 bytes of every 4 KiB. The same seed always gives the same
// bytes. It is an io.Reader that never fails.
type Stream struct {
	base []byte
	off  int64
}

// NewStream returns a stream at offset 0.
func NewStream(seed uint64) *Stream {
	base := make([]byte, streamPeriod)
	x := seed | 1 // xorshift's state must not be zero
	for i := 0; i < len(base); i += 8 {
		// xorshift64 (Marsaglia 2003, shifts 13, 7, 17).
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(base[i:], x)
	}
	return &Stream{base: base}
}

// Offset is how many bytes the stream has produced.
func (s *Stream) Offset() int64 { return s.off }

// Read fills all of p with the stream's next bytes.
func (s *Stream) Read(p []byte) (int, error) {
	off := s.off
	for done := 0; done < len(p); {
		i := int((off + int64(done)) % streamPeriod)
		done += copy(p[done:], s.base[i:])
	}
	// Stamps whose 8 bytes overlap p, including one that began before it.
	first := off - off%stampInterval
	end := off + int64(len(p))
	var stamp [stampSize]byte
	for b := first; b < end; b += stampInterval {
		binary.LittleEndian.PutUint64(stamp[:], uint64(b))
		for k := int64(0); k < stampSize; k++ {
			if pos := b + k; pos >= off && pos < end {
				p[pos-off] = stamp[k]
			}
		}
	}
	s.off = end
	return len(p), nil
}

// StreamSHA256 is the hex SHA-256 of the first n bytes of the stream for
// seed: what a receiver of an n-byte transfer must report.
func StreamSHA256(seed uint64, n int64) string {
	h := sha256.New()
	s := NewStream(seed)
	buf := make([]byte, streamPeriod)
	for n > 0 {
		chunk := buf[:min(n, int64(len(buf)))]
		s.Read(chunk)
		h.Write(chunk) // a hash.Hash never fails to write
		n -= int64(len(chunk))
	}
	return hex.EncodeToString(h.Sum(nil))
}
