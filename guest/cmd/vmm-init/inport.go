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
// (`cat /dev/stdin`, a shell's `<(...)`).
//
// vmm sends the input to the port once it is open, so it is opened here
// when it is already named, and otherwise by the goroutine while the job
// starts: the job's first read waits for the pipe anyway. Where the port
// never comes (a kernel without virtio_console) the goroutine raises OUT1
// on tty instead and relays the serial port's input as jobStdin does.
// A port that is there but will not open leaves the job an empty stdin:
// vmm may already be sending to the port (the job itself opened it).
//
// A restored job (restored) has no serial input to fall back on (vmm
// sent only the job message there): without its port it does not run,
// and err says why. The copy stops when the job's side of the pipe is
// closed (the job closed its stdin or ended); done closes vmm-init's copy
// of that side, after the job.
func portStdin(tty *os.File, restored bool) (stdin *os.File, done func(), err error) {
	var port *os.File
	if restored {
		if port, err = openPort(guestabi.JobInputPort, os.O_RDONLY, portWait); err != nil {
			return nil, nil, fmt.Errorf("job input port: %w", err)
		}
	} else if _, named := findPort(virtioPortsDir, guestabi.JobInputPort); named {
		if port, err = openPort(guestabi.JobInputPort, os.O_RDONLY, 0); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: job input port: %v; the job's stdin is empty\n", err)
			return emptyStdin(), func() {}, nil
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		if port != nil {
			// The input is the port's: the job reads it itself.
			fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; the job reads the port itself\n", err)
			return port, func() {}, nil
		}
		fmt.Fprintf(os.Stderr, "vmm-init: job input: %v; using %s\n", err, guestabi.JobTTY)
		if tty == os.Stdout {
			return tty, func() {}, nil
		}
		raiseOUT1(tty)
		stdin, done := jobStdin(tty)
		return stdin, done, nil
	}
	go func() {
		if port != nil {
			relayPort(port, w)
			return
		}
		p, err := openPort(guestabi.JobInputPort, os.O_RDONLY, portWait)
		if err == nil {
			relayPort(p, w)
			return
		}
		if !errors.Is(err, errNoConsole) && !errors.Is(err, errNoPort) {
			fmt.Fprintf(os.Stderr, "vmm-init: job input port: %v; the job's stdin is empty\n", err)
			w.Close()
			return
		}
		if tty == os.Stdout {
			w.Close() // no job port either: the input is empty
			return
		}
		if errors.Is(err, errNoPort) {
			fmt.Fprintf(os.Stderr, "vmm-init: job input port: %v; using %s\n", err, guestabi.JobTTY)
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
	return r, func() { r.Close() }, nil
}

// emptyStdin is a stdin at end of file: the read end of a pipe whose
// write end is closed, or /dev/null.
func emptyStdin() *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		f, _ := os.Open(os.DevNull)
		return f
	}
	w.Close()
	return r
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
