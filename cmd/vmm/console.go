package main

import (
	"io"

	"golang.org/x/sys/unix"
)

// makeRaw puts the terminal on fd into raw mode so every key, Ctrl-C
// included, reaches the guest, and returns the function that restores it.
// It fails when fd is not a terminal (a pipe, /dev/null).
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

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
