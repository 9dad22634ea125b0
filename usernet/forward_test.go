package usernet

import (
	"bytes"
	"errors"
	"io"
	"slices"
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

// copyLoop takes a large buffer after a read that fills the small one and
// keeps it, unless maxLarge copies hold one already; it passes on every
// byte in order and ends as io.Copy does on EOF, read errors, write
// errors and short writes.
func TestCopyLoop(t *testing.T) {
	errRead := errors.New("read failed")
	for _, c := range []struct {
		name      string
		steps     []readStep
		w         shortWriter
		othersOut int // large buffers other copies hold
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
			name:      "a later full read grows it, for good",
			steps:     []readStep{{n: 10}, {fill: true}, {n: 5}, {fill: true}},
			wantSizes: []int{copySmall, copySmall, copyLarge, copyLarge, copyLarge},
			wantBytes: 10 + copySmall + 5 + copyLarge,
		},
		{
			name:      "none grows while maxLarge copies hold a large buffer",
			steps:     []readStep{{fill: true}, {fill: true}},
			othersOut: maxLarge,
			wantSizes: []int{copySmall, copySmall, copySmall},
			wantBytes: 2 * copySmall,
		},
		{
			name:      "one below maxLarge grows",
			steps:     []readStep{{fill: true}, {fill: true}},
			othersOut: maxLarge - 1,
			wantSizes: []int{copySmall, copyLarge, copyLarge},
			wantBytes: copySmall + copyLarge,
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
			var large largeBuffers
			for range c.othersOut {
				if large.get() == nil {
					t.Fatal("largeBuffers lent fewer than maxLarge")
				}
			}
			err := copyLoop(&w, r, &large)
			if got := int(large.held.Load()); got != c.othersOut {
				t.Errorf("%d large buffers out after the copy, want the others' %d", got, c.othersOut)
			}
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
