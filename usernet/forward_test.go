package usernet

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
)

// scriptReader answers each Read with the next of its steps, recording
// the buffer size it was given: fill reads as much as fits, n reads at
// most n bytes.
type scriptReader struct {
	steps []readStep
	sizes []int
	next  byte
}

type readStep struct {
	fill bool
	n    int
	err  error
}

func (r *scriptReader) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if len(r.steps) == 0 {
		return 0, io.EOF
	}
	s := r.steps[0]
	r.steps = r.steps[1:]
	n := min(s.n, len(p))
	if s.fill {
		n = len(p)
	}
	for i := range n {
		p[i] = r.next
		r.next++
	}
	return n, s.err
}

// shortWriter takes at most max bytes of each Write and reports no error,
// which io.Copy calls a short write; failAt > 0 fails that Write.
type shortWriter struct {
	bytes.Buffer
	max    int
	failAt int
	calls  int
}

var errWrite = errors.New("write failed")

func (w *shortWriter) Write(p []byte) (int, error) {
	w.calls++
	if w.calls == w.failAt {
		return 0, errWrite
	}
	if w.max > 0 && len(p) > w.max {
		p = p[:w.max]
	}
	return w.Buffer.Write(p)
}

// copyLoop takes a large buffer after a read that fills the small one,
// keeps it while reads return at least copySmall, goes back to the small
// one after a shorter read, passes on every byte in order, and ends as
// io.Copy does on EOF, read errors, write errors and short writes.
func TestCopyLoop(t *testing.T) {
	errRead := errors.New("read failed")
	for _, c := range []struct {
		name      string
		steps     []readStep
		w         shortWriter
		wantSizes []int
		wantErr   error
		wantBytes int
	}{
		{
			name:      "bulk grows after the first full read",
			steps:     []readStep{{fill: true}, {fill: true}, {fill: true}},
			wantSizes: []int{copySmall, copyLarge, copyLarge, copyLarge},
			wantBytes: copySmall + 2*copyLarge,
		},
		{
			name:      "short reads keep the small buffer",
			steps:     []readStep{{n: 100}, {n: copySmall - 1}, {n: 1}},
			wantSizes: []int{copySmall, copySmall, copySmall, copySmall},
			wantBytes: 100 + copySmall - 1 + 1,
		},
		{
			name:      "a later full read grows it",
			steps:     []readStep{{n: 10}, {fill: true}, {n: 5}},
			wantSizes: []int{copySmall, copySmall, copyLarge, copySmall},
			wantBytes: 10 + copySmall + 5,
		},
		{
			name:      "a large read short of full keeps the large buffer",
			steps:     []readStep{{fill: true}, {n: copySmall}, {n: copyLarge - 1}},
			wantSizes: []int{copySmall, copyLarge, copyLarge, copyLarge},
			wantBytes: copySmall + copySmall + copyLarge - 1,
		},
		{
			name:      "a short read goes back to the small buffer",
			steps:     []readStep{{fill: true}, {n: copySmall - 1}, {n: 3}, {fill: true}, {fill: true}},
			wantSizes: []int{copySmall, copyLarge, copySmall, copySmall, copyLarge, copyLarge},
			wantBytes: copySmall + copySmall - 1 + 3 + copySmall + copyLarge,
		},
		{
			name:      "data with EOF is written",
			steps:     []readStep{{n: 7, err: io.EOF}},
			wantSizes: []int{copySmall},
			wantBytes: 7,
		},
		{
			name:      "data with a read error is written, then the error",
			steps:     []readStep{{n: 7, err: errRead}},
			wantSizes: []int{copySmall},
			wantErr:   errRead,
			wantBytes: 7,
		},
		{
			name:      "write error",
			steps:     []readStep{{n: 7}, {n: 7}},
			w:         shortWriter{failAt: 2},
			wantSizes: []int{copySmall, copySmall},
			wantErr:   errWrite,
			wantBytes: 7,
		},
		{
			name:      "short write",
			steps:     []readStep{{n: 7}},
			w:         shortWriter{max: 3},
			wantSizes: []int{copySmall},
			wantErr:   io.ErrShortWrite,
			wantBytes: 3,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &scriptReader{steps: c.steps}
			w := c.w
			// A pool without New: copyLoop makes its own buffer.
			var pool sync.Pool
			err := copyLoop(&w, r, &pool)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Errorf("error %v, want %v", err, c.wantErr)
			}
			if !slices.Equal(r.sizes, c.wantSizes) {
				t.Errorf("read buffer sizes %v, want %v", r.sizes, c.wantSizes)
			}
			got := w.Bytes()
			if len(got) != c.wantBytes {
				t.Fatalf("wrote %d bytes, want %d", len(got), c.wantBytes)
			}
			for i, b := range got {
				if b != byte(i) {
					t.Fatalf("byte %d is %d, want %d: out of order or lost", i, b, byte(i))
				}
			}
		})
	}
}
