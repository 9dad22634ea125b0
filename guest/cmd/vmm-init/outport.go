package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// Where the kernel lists virtio devices and named virtio-console ports.
const (
	virtioDevicesDir = "/sys/bus/virtio/devices"
	virtioPortsDir   = "/sys/class/virtio-ports"
)

// virtioConsoleID is the console's virtio device ID as sysfs prints it
// (virtio v1.2 §5.3.1; drivers/virtio/virtio.c, device_show).
const virtioConsoleID = "0x0003"

// portWait bounds the wait for the output port's name: the driver learns
// it from vmm in a control message a moment after the module binds,
// which vmm-init did at boot (modprobe.go); a job restored from a
// snapshot finds it long there.
const portWait = 2 * time.Second

// orphanGrace is how long the job's output pipe is read after the job
// has ended while something the job left running still holds it open: a
// daemon's later output, like one a CI runner's step leaves behind, is
// not the job's.
const orphanGrace = 200 * time.Millisecond

// outChunk is the most one write to the port moves: Linux's
// port_fops_write takes at most 32 KiB a call.
const outChunk = 32 << 10

// openOutputPort opens the virtio-console port vmm gives the job's
// stdout, or returns nil when the VM has no virtio console (another VMM,
// a kernel without the driver: the job keeps the serial port, quietly).
// A console whose port does not come up in portWait is said on stderr.
func openOutputPort() *os.File {
	if !hasVirtioConsole(virtioDevicesDir) {
		return nil
	}
	deadline := time.Now().Add(portWait)
	for {
		if dev, ok := findPort(virtioPortsDir, guestabi.JobOutputPort); ok {
			f, err := os.OpenFile(filepath.Join("/dev", dev), os.O_WRONLY|unix.O_NOCTTY, 0)
			if err != nil {
				fmt.Fprintf(os.Stderr, "vmm-init: job output port: %v; using %s\n", err, guestabi.JobTTY)
				return nil
			}
			return f
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "vmm-init: no virtio-console port named %s after %v; using %s\n", guestabi.JobOutputPort, portWait, guestabi.JobTTY)
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasVirtioConsole reports whether a virtio console with a driver bound
// to it is among the devices listed in dir (each entry's device file
// holds its ID; driver is the link to its driver). vmm-init loaded the
// drivers at boot, so a console without one will never have ports: a
// kernel without virtio_console (the minimal one) keeps the serial port
// without waiting for them.
func hasVirtioConsole(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "device"))
		if err != nil || strings.TrimSpace(string(b)) != virtioConsoleID {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "driver")); err == nil {
			return true
		}
	}
	return false
}

// findPort returns the device name (vportNpM) of the port called name
// among those listed in dir, whose name files the driver creates when
// the device names a port.
func findPort(dir, name string) (string, bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "name"))
		if err == nil && strings.TrimRight(string(b), "\n") == name && !strings.ContainsAny(e.Name(), "/.") {
			return e.Name(), true
		}
	}
	return "", false
}

// portStdout returns the job's stdout: a pipe whose bytes a goroutine
// copies to port. finish, called once the job has ended, closes
// vmm-init's end of the pipe and waits until the copy has read the pipe
// to its end and written it all to the port, whose writes return once
// vmm has the bytes queued (vmm takes what is queued before it acts on
// the exit status). A write to the port waits as long as the host's
// reader takes: nothing is dropped for a slow reader. Only when
// something the job left running still holds the pipe open does the
// copy stop early: once it has waited orphanGrace on an empty pipe.
//
// If the port fails (its device reset or unbound under the job: the
// hostile-guest test does that), the rest goes to fallback, the job's
// serial port, so the output is not lost.
func portStdout(port, fallback io.Writer) (stdout *os.File, finish func(), err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	c := &outCopy{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.run(port, fallback, r); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: job output: %v\n", err)
		}
	}()
	return w, func() {
		w.Close()
		tick := time.NewTicker(orphanGrace / 4)
		defer tick.Stop()
		for {
			select {
			case <-done:
				r.Close()
				return
			case <-tick.C:
			}
			if c.idleReading(orphanGrace) {
				// A read that has waited that long has an empty
				// pipe: the job's own bytes were all taken.
				r.SetReadDeadline(time.Now())
			}
		}
	}, nil
}

// outCopy is the copy from the job's pipe to the port, with what finish
// needs to know: whether it is waiting in a read, and since when.
type outCopy struct {
	mu        sync.Mutex
	reading   bool
	readSince time.Time
}

// idleReading reports whether the copy has been waiting in one read for
// at least d.
func (c *outCopy) idleReading(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reading && time.Since(c.readSince) >= d
}

func (c *outCopy) setReading(on bool) {
	c.mu.Lock()
	c.reading, c.readSince = on, time.Now()
	c.mu.Unlock()
}

// run copies r to port until r ends or its read deadline passes. A port
// that fails is said once on stderr and the rest, the failed write
// included, goes to fallback (discarded if that is nil or fails too), so
// the job never blocks on a full pipe.
func (c *outCopy) run(port, fallback io.Writer, r io.Reader) error {
	buf := make([]byte, outChunk)
	var werr error
	w := port
	for {
		c.setReading(true)
		n, err := r.Read(buf)
		c.setReading(false)
		if n > 0 && w != nil {
			if _, perr := w.Write(buf[:n]); perr != nil {
				if w == port {
					fmt.Fprintf(os.Stderr, "vmm-init: job output: writing to the port: %v; the rest goes to %s\n", perr, guestabi.JobTTY)
					w = fallback
					if w != nil {
						_, perr = w.Write(buf[:n])
					}
				}
				if perr != nil {
					werr = fmt.Errorf("writing the job's output: %w (the rest is discarded)", perr)
					w = nil
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
				return werr
			}
			return errors.Join(werr, err)
		}
	}
}
