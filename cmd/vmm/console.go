package main

import "io"

// escapeKey is Ctrl-A, QEMU's console escape.
const escapeKey = 0x01

// escapeReader passes terminal input through, except that Ctrl-A x calls
// quit and Ctrl-A Ctrl-A sends one Ctrl-A. Any other key after Ctrl-A is
// sent with the Ctrl-A, so nothing typed is lost.
type escapeReader struct {
	r       io.Reader
	quit    func()
	pending bool // the previous byte was an unconsumed Ctrl-A
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) < 4 {
		return e.r.Read(p) // too small to filter safely
	}
	// Read into the back half and filter into the front: each input
	// byte yields at most one output byte plus one held-over Ctrl-A, so
	// the write position never overtakes the read position.
	in := p[len(p)/2:]
	n, err := e.r.Read(in)
	out := 0
	for _, b := range in[:n] {
		if e.pending {
			e.pending = false
			switch b {
			case 'x', 'X':
				e.quit()
				return out, io.EOF
			case escapeKey:
				p[out] = escapeKey
				out++
			default:
				p[out], p[out+1] = escapeKey, b
				out += 2
			}
			continue
		}
		if b == escapeKey {
			e.pending = true
			continue
		}
		p[out] = b
		out++
	}
	return out, err
}
