package nested

import (
	"bytes"
	"sync"
)

// tailBuffer keeps the last bytes of a stream for error messages. It is
// safe for concurrent use because QEMU's stderr is copied by os/exec.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append(t.b[:0:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// Lines returns the last n lines.
func (t *tailBuffer) Lines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastLines(t.b, n)
}

// lastLines returns the last n lines of b, ignoring a trailing newline, and
// drops carriage returns so tails from tty output print cleanly in logs.
func lastLines(b []byte, n int) string {
	b = bytes.TrimRight(b, "\r\n")
	i := len(b)
	for ; n > 0 && i > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			i = 0
			break
		}
		i = j
		if n == 1 {
			i = j + 1
		}
	}
	return string(bytes.ReplaceAll(b[i:], []byte("\r"), nil))
}
