package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// pipeMax stands in for what the job's pipe held when the job ended if
// the kernel will not say (FIONREAD, which Linux answers for every pipe
// in pipe_ioctl, fs/pipe.c): the most an unprivileged process can make
// a pipe hold (/proc/sys/fs/pipe-max-size's default); the copy then
// also stops at the first read that waits finishPoll.
const pipeMax = 1 << 20

// finishPoll is how long a read of the copy's may wait once the job has
// ended before finish wakes it to look whether the pipe is empty (and so
// every byte the job wrote taken), which something the job left running
// may hold open; also how often finish looks.
const finishPoll = 20 * time.Millisecond

// outChunk is the most one write to the port moves: Linux's
// port_fops_write takes at most 32 KiB a call.
const outChunk = 32 << 10

// openOutputPort opens the virtio-console port vmm gives the job's
// stdout, or returns nil when the VM has no virtio console (another VMM,
// a kernel without the driver: the job keeps the serial port, quietly).
// A console whose port does not come up in portWait is said on stderr.
func openOutputPort() *os.File {
	f, err := openPort(guestabi.JobOutputPort, os.O_WRONLY, portWait)
	if err != nil {
		if !errors.Is(err, errNoConsole) {
			fmt.Fprintf(os.Stderr, "vmm-init: job output port: %v; using %s\n", err, guestabi.JobTTY)
		}
		return nil
	}
	return f
}

// openPort's errors when the port is not there: the VM has no virtio
// console with a driver (another VMM, a kernel without virtio_console),
// or none of its ports got the name in time.
var (
	errNoConsole = errors.New("no virtio console")
	errNoPort    = errors.New("no such virtio-console port")
)

// openPort opens the virtio-console port called name with flag (O_RDONLY
// or O_WRONLY), waiting up to wait for the port to be named. Its error is
// errNoConsole or wraps errNoPort when the port is not there, and is the
// open's when it is there but cannot be opened.
func openPort(name string, flag int, wait time.Duration) (*os.File, error) {
	if !hasVirtioConsole(virtioDevicesDir) {
		return nil, errNoConsole
	}
	dev, ok := waitForPort(name, wait)
	if !ok {
		return nil, fmt.Errorf("%w named %s after %v", errNoPort, name, wait)
	}
	return os.OpenFile(filepath.Join("/dev", dev), flag|unix.O_NOCTTY, 0)
}

// waitForPort looks for the port called name until it appears or wait
// has passed, and returns its device name.
func waitForPort(name string, wait time.Duration) (string, bool) {
	deadline := time.Now().Add(wait)
	for {
		if dev, ok := findPort(virtioPortsDir, name); ok {
			return dev, true
		}
		if !time.Now().Before(deadline) {
			return "", false
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
func hasVirtioConsole(dir string) bool { return virtioConsoles(dir) > 0 }

// virtioConsoles counts the virtio consoles with a driver bound to them
// among the devices listed in dir: `vmm run` gives a job one for its
// output and, with piped input, one for its input.
func virtioConsoles(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "device"))
		if err != nil || strings.TrimSpace(string(b)) != virtioConsoleID {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "driver")); err == nil {
			n++
		}
	}
	return n
}

// awaitPort waits up to portWait for the port called name to appear, when
// the VM has at least consoles virtio consoles with drivers (else it
// never will), and reports whether it did.
func awaitPort(name string, consoles int) bool {
	if virtioConsoles(virtioDevicesDir) < consoles {
		return false
	}
	_, ok := waitForPort(name, portWait)
	return ok
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
// vmm-init's end of the pipe and waits until the copy has written to the
// port every byte the job wrote, whose writes return once vmm has the
// bytes queued (vmm takes what is queued before it acts on the exit
// status). A write to the port waits as long as the host's reader takes:
// nothing is dropped for a slow reader.
//
// When the job has ended, everything it wrote is in the pipe or already
// copied, so the copy stops at end of file, or once it finds the pipe
// empty or has read what the pipe held then, even if something the job
// left running (a daemon a CI step started) still holds the pipe open and
// keeps writing to it. Its later output is not the job's, and a chatty
// one would otherwise keep the VM from ending. (So a job that hands its
// output to a process it does not wait for, `exec > >(tee log)`, loses
// what that process writes after the job's end, as it would at a
// terminal once vmm has gone.)
//
// If the port fails (its device reset or unbound under the job: the
// hostile-guest test does that), the rest goes to fallback, the job's
// serial port, so the output is not lost.
func portStdout(port, fallback io.Writer) (stdout *os.File, finish func(), err error) {
	return pipeCopy(port, fallback)
}

// pipeCopy is portStdout's pipe and copy, for any writer: the job's
// stderr (jobStderr) has one too, with no fallback.
func pipeCopy(port, fallback io.Writer) (*os.File, func(), error) {
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
		c.end(r, done)
		r.Close()
	}, nil
}

// end tells the copy reading r the job has ended and waits until it is
// done, waking each read of the copy's that has waited finishPoll, so
// that the copy looks whether the pipe is empty.
func (c *outCopy) end(r io.Reader, done <-chan struct{}) {
	c.jobEnded()
	tick := time.NewTicker(finishPoll)
	defer tick.Stop()
	for {
		if c.waitedFor(finishPoll) {
			setReadDeadline(r, time.Now())
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// pipeHolds is how many bytes wait in the pipe r; false when the
// kernel does not say.
func pipeHolds(r io.Reader) (int, bool) {
	n := -1
	if sc, ok := r.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				// TIOCINQ is FIONREAD's other name.
				if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
					n = v
				}
			})
		}
	}
	return n, n >= 0
}

// setReadDeadline sets r's read deadline where it has one (a pipe).
func setReadDeadline(r io.Reader, t time.Time) error {
	d, ok := r.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return errors.ErrUnsupported
	}
	return d.SetReadDeadline(t)
}

// outCopy is the copy from the job's pipe to the port, with what it and
// finish tell each other: that the job has ended, and since when the
// copy waits in a read.
type outCopy struct {
	mu           sync.Mutex
	ended        bool
	waitingSince time.Time // zero when not in a read
}

// jobEnded tells the copy the job has ended.
func (c *outCopy) jobEnded() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
}

func (c *outCopy) hasEnded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// waitedFor reports whether the job has ended and the copy has waited in
// one read for at least d: a read of a pipe that holds bytes returns at
// once, so the pipe is most likely empty.
func (c *outCopy) waitedFor(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended && !c.waitingSince.IsZero() && time.Since(c.waitingSince) >= d
}

func (c *outCopy) setWaiting(on bool) {
	c.mu.Lock()
	c.waitingSince = time.Time{}
	if on {
		c.waitingSince = time.Now()
	}
	c.mu.Unlock()
}

// run copies r to port until r ends, or until the job has ended and
// either the pipe is found empty or the copy has read what the pipe held
// when the job ended. The pipe is first in, first out and the job writes
// no more, so once it is empty every byte the job wrote has been taken;
// the bound stops a copy that something the job left running would feed
// for ever (see portStdout). Finding the pipe empty is finish's wake-up
// of a read that waited, then FIONREAD, which also ends a copy whose
// bytes another reader took (a job that opened /proc/1/fd/N): the copy
// never counts on bytes arriving. A port that fails is said once on
// stderr and the rest, the failed write included, goes to fallback
// (discarded if that is nil or fails too), so the job never blocks on a
// full pipe.
func (c *outCopy) run(port, fallback io.Writer, r io.Reader) error {
	buf := make([]byte, outChunk)
	var werr error
	w := port
	bounded, left := false, 0 // left: bytes to read once bounded
	for {
		if !bounded && c.hasEnded() {
			bounded = true
			var ok bool
			if left, ok = pipeHolds(r); !ok {
				left = pipeMax
			}
		}
		size := len(buf)
		if bounded {
			if left == 0 {
				return werr
			}
			size = min(size, left)
		}
		c.setWaiting(true)
		n, err := r.Read(buf[:size])
		c.setWaiting(false)
		if bounded {
			left -= n
		}
		if n > 0 && w != nil {
			if _, perr := w.Write(buf[:n]); perr != nil {
				if w == port && fallback != nil {
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
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return werr
		case errors.Is(err, os.ErrDeadlineExceeded) && c.hasEnded():
			// finish woke a read that had waited: stop if the pipe
			// is empty. A wake-up that came as bytes arrived fails
			// one read, and the copy goes on.
			setReadDeadline(r, time.Time{})
			if held, ok := pipeHolds(r); !ok || held == 0 {
				return werr
			}
		default:
			return errors.Join(werr, err)
		}
	}
}
