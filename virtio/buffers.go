package virtio

import (
	"errors"
	"io"
)

// Buffers is one direction of a descriptor chain (Chain.Readable or
// Chain.Writable) seen as a single byte stream: the buffers in chain
// order, back to back. A driver may split a device's header, a frame or a
// reply across descriptors at any byte (virtio v1.2 §2.7.4.2 lets it lay
// out a message however it likes), so devices address the stream by
// offset and never by buffer.
//
// ReadAt and WriteAt follow io.ReaderAt and io.WriterAt; AppendRange
// hands a byte range on as buffers of its own (to preadv/pwritev) without
// copying. None of them allocates, so they fit a queue worker's hot path.
// Empty buffers are allowed anywhere and carry nothing.
type Buffers [][]byte

// errNegativeOffset is what ReadAt and WriteAt return for an offset below
// zero, which io.ReaderAt and io.WriterAt leave to the implementation.
var errNegativeOffset = errors.New("virtio: buffers: negative offset")

// Len is the stream's length: the total bytes of the buffers.
func (b Buffers) Len() int {
	n := 0
	for _, s := range b {
		n += len(s)
	}
	return n
}

// ReadAt copies the stream's bytes from offset off into p. When fewer
// than len(p) are there (a driver that posted less than the device
// expects) it copies those and returns io.EOF, as io.ReaderAt asks; an
// empty p reads nothing and succeeds at any offset.
func (b Buffers) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	n := 0
	for _, s := range b {
		if n == len(p) {
			break
		}
		if off >= int64(len(s)) {
			off -= int64(len(s))
			continue
		}
		n += copy(p[n:], s[off:])
		off = 0
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the stream at offset off. The stream never grows:
// when the buffers end before p does it writes what fits and returns
// io.ErrShortWrite, as io.WriterAt asks; an empty p writes nothing and
// succeeds at any offset.
func (b Buffers) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	n := 0
	for _, s := range b {
		if n == len(p) {
			break
		}
		if off >= int64(len(s)) {
			off -= int64(len(s))
			continue
		}
		n += copy(s[off:], p[n:])
		off = 0
	}
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// AppendRange appends to dst the pieces of b that hold the stream's bytes
// [off, off+n), aliasing b's memory, and returns the extended slice: a
// device hands them to preadv/pwritev, or keeps them to fill in a field
// later. The range is clipped to the stream (so a range wholly outside it
// appends nothing) and no empty piece is appended; it appends at most as
// many pieces as b has, which a dst with that capacity holds without
// allocating.
func (b Buffers) AppendRange(dst Buffers, off, n int) Buffers {
	if n <= 0 {
		return dst
	}
	if off < 0 {
		n += off // no overflow: n > 0
		off = 0
	}
	for _, s := range b {
		if n <= 0 {
			break
		}
		if off >= len(s) {
			off -= len(s)
			continue
		}
		piece := s[off:]
		if len(piece) > n {
			piece = piece[:n]
		}
		dst = append(dst, piece)
		n -= len(piece)
		off = 0
	}
	return dst
}
