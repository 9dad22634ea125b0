package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmm-dev/vmm/guestabi"
)

// inChunk is what one read of the input port asks for: Linux's driver
// hands back at most one of its page-sized buffers a read, and the pipe
// takes 64 KiB before the job must read.
const inChunk = 64 << 10

// portStdin returns the job's stdin when the spec asks for it from the
// input port: a pipe that a goroutine fills from the port and closes at
// the port's end of file, which Linux's driver gives once vmm has closed
// its side (the end of vmm's own stdin) and every byte sent before is
// read (port_fops_read), so the job reads end of file where vmm's stdin
// ended. A pipe rather than the port itself, because the driver lets one
// file at a time have a port open and a job may open /dev/stdin again
// (`cat /dev/stdin`, a shell's `<(...)`). The goroutine finds and opens
// the port while the job starts, not before: vmm sends nothing until the
// port is open, and the job's first read waits for the pipe anyway.
// Where the port does not come up (a kernel without virtio_console), it
// raises OUT1 on tty instead, and relays the serial port's input as
// jobStdin does. The copy stops when the job's side of the pipe is
// closed (the job closed its stdin or ended); done closes vmm-init's
// copy of that side, after the job.
func portStdin(tty *os.File) (stdin *os.File, done func()) {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; using %s\n", err, guestabi.JobTTY)
		if tty == os.Stdout {
			return tty, func() {}
		}
		raiseOUT1(tty)
		return jobStdin(tty)
	}
	go func() {
		if port := openPort(guestabi.JobInputPort, os.O_RDONLY, "job input port"); port != nil {
			relayPort(port, w)
			return
		}
		if tty == os.Stdout {
			w.Close() // no job port either: the input is empty
			return
		}
		raiseOUT1(tty)
		fd, err := openRelayFD()
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; the job's stdin is empty\n", err)
			w.Close()
			return
		}
		relayInput(fd, w)
	}()
	return r, func() { r.Close() }
}

// relayPort copies src to w until src ends or fails, or w's reader is
// gone, then closes w.
func relayPort(src io.Reader, w io.WriteCloser) {
	defer w.Close()
	buf := make([]byte, inChunk)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // nobody reads the job's stdin any more
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "vmm-init: job input port: %v; the job's stdin ends here\n", err)
			}
			return
		}
	}
}
