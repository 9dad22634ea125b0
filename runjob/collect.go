package runjob

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/internal/helperbin"
)

// The -out helper's wire, which vmm (Collector) and the helper (package
// runjob/outtar, run as `vmm-unpack out`) both speak:
//
//	vmm-unpack out --wire OutWire --dir DIR --bytes N [--no-sandbox]
//
// Standard input is the scratch disk, read-only; descriptor 3 the
// control pipe, on which one byte from vmm means unpack now, and its end
// (vmm closed it, or vmm is gone) means stop, or never start; standard
// output the result lines, each a word and its value. The first is
// OutReady, once the helper has read its arguments and confined itself,
// or OutFail and a quoted message if it could not; after vmm's byte come
// OutWarn and a quoted message for each entry the helper skipped, then
// one of OutDone and the files written, OutStopped and the files written
// before the stop, or OutFail and a quoted message. A message is at most
// MaxOutMessage bytes before quoting. Standard error is vmm's own, for a
// crash's trace.
//
// Extraction lives in a helper so that vmm neither links nor maps the
// tar reader (archive/tar, os/user and the extractor: 124 KB of vmm's
// code and read-only data), and so that the guest's archive, hostile
// input, is parsed in a process that holds no guest memory, no KVM
// descriptor and no disk but the scratch one. The helper is started
// during setup, before vmm's sandbox forbids starting processes, and
// waits; vmm checks it is ready (Ready) before the guest runs, so that a
// helper that cannot work (another build's, found first in $PATH) fails
// the run before the job rather than losing its output after it.
const (
	OutMode    = "out" // the helper's first argument
	OutWire    = "out-2"
	OutReady   = "ready"
	OutWarn    = "warn"
	OutDone    = "done"
	OutStopped = "stopped"
	OutFail    = "fail"
)

// OutHelper is the helper's file name (the kernel cache's decompressor,
// whose binary unpacks -out too).
const OutHelper = "vmm-unpack"

// MaxOutMessage bounds a message the helper sends, in bytes before
// quoting (the helper cuts longer ones): a warning names an entry
// (outtar's MaxNameLen, 1024 bytes) and a little more.
const MaxOutMessage = 2048

// maxResultLine bounds one result line: a word, and a message quoted,
// which is at most four times as long (\xff for each byte that is not
// UTF-8).
const maxResultLine = 16 + 4*MaxOutMessage + 2

// collectWait is how long Collector waits for a helper it told to stop
// to say so, or for one that has written its result to exit, before
// killing it; ReadyWait how long Ready waits for the helper to start.
const (
	collectWait = 5 * time.Second
	ReadyWait   = 30 * time.Second
)

// Collector is vmm's end of one -out helper.
type Collector struct {
	proc     *helperbin.Process
	ctl      *os.File // vmm's end of the control pipe
	results  *os.File
	sc       *bufio.Scanner // the result lines
	wait     time.Duration  // collectWait; shorter in tests
	closeCtl sync.Once
	closed   sync.Once
}

// StartCollector starts the helper at path to unpack, once Collect says
// so, the tar stream at the start of the scratch disk disk into dir,
// within outtar's default limits for a budget of bytes. sandbox makes
// the helper confine itself (vmm's -sandbox).
func StartCollector(path, disk, dir string, bytes int64, sandbox bool) (*Collector, error) {
	in, err := os.Open(disk)
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	defer in.Close()
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	defer ctlR.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		ctlW.Close()
		return nil, fmt.Errorf("-out: %w", err)
	}
	defer resW.Close()
	args := []string{OutMode, "--wire", OutWire, "--dir", dir, "--bytes", strconv.FormatInt(bytes, 10)}
	if !sandbox {
		args = append(args, "--no-sandbox")
	}
	// In a process group of its own (helperbin.Start): the terminal's
	// Ctrl-C is for vmm, which stops the helper by closing the control
	// pipe.
	proc, err := helperbin.Start(path, args, []*os.File{in, resW, os.Stderr, ctlR}, nil, syscall.SysProcAttr{})
	if err != nil {
		ctlW.Close()
		resR.Close()
		return nil, fmt.Errorf("-out: %w", err)
	}
	c := &Collector{proc: proc, ctl: ctlW, results: resR, wait: collectWait}
	c.sc = bufio.NewScanner(resR)
	c.sc.Buffer(make([]byte, 4096), maxResultLine)
	return c, nil
}

// Ready waits, at most ReadyWait or until ctx ends, for the helper to
// say it is ready, and returns why it is not. vmm calls it once the
// machine is built, before its sandbox and before the guest runs; the
// helper has started meanwhile, so this seldom waits.
func (c *Collector) Ready(ctx context.Context) error {
	c.results.SetReadDeadline(time.Now().Add(ReadyWait))
	stop := context.AfterFunc(ctx, func() { c.results.SetReadDeadline(time.Now()) })
	scanned := c.sc.Scan()
	stop()
	// Collect clears it again: a stop's callback may still run.
	c.results.SetReadDeadline(time.Time{})
	if scanned {
		word, value, _ := strings.Cut(c.sc.Text(), " ")
		switch word {
		case OutReady:
			return nil
		case OutFail:
			return errors.New(unquote(value))
		}
		return fmt.Errorf("-out: %s said %.40q before it was ready (another build's?)", OutHelper, c.sc.Text())
	}
	switch err := c.sc.Err(); {
	case ctx.Err() != nil:
		return fmt.Errorf("-out: stopped: %w", context.Cause(ctx))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("-out: %s did not start within %v", OutHelper, ReadyWait)
	case err != nil:
		return fmt.Errorf("-out: reading %s's result: %w", OutHelper, err)
	}
	return fmt.Errorf("-out: %s ended before the job (%s)", OutHelper, c.proc.Status(c.wait))
}

// Collect tells the helper to unpack and returns what it said: the files
// it wrote, and why it stopped short if it did. warn, if not nil, gets
// each entry it skipped, one line each. ctx's end (-timeout, a signal)
// stops the helper between reads, as it stops the guest; its cause is
// in the error.
func (c *Collector) Collect(ctx context.Context, warn func(string)) (int, error) {
	defer c.Close()
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("-out: stopped: %w", context.Cause(ctx))
	}
	c.results.SetReadDeadline(time.Time{}) // whatever Ready left
	// A helper already gone makes this fail (EPIPE); its result lines,
	// or its exit status, then say why.
	c.ctl.Write([]byte{1})
	stop := context.AfterFunc(ctx, func() {
		c.stopHelper()
		c.results.SetReadDeadline(time.Now().Add(c.wait))
	})
	defer stop()
	for c.sc.Scan() {
		word, value, _ := strings.Cut(c.sc.Text(), " ")
		switch word {
		case OutWarn:
			if warn != nil {
				warn(unquote(value))
			}
		case OutDone:
			n, _ := strconv.Atoi(value)
			return n, nil
		case OutStopped:
			n, _ := strconv.Atoi(value)
			return n, fmt.Errorf("-out: stopped after %d files: %w", n, context.Cause(ctx))
		case OutFail:
			return 0, errors.New(unquote(value))
		}
	}
	if ctx.Err() != nil {
		// Stopped, and the helper did not say so in time: it has had
		// its chance. Without a pidfd it ends at its next read, the
		// control pipe being closed.
		c.proc.Kill()
		return 0, fmt.Errorf("-out: stopped: %w", context.Cause(ctx))
	}
	if err := c.sc.Err(); err != nil {
		return 0, fmt.Errorf("-out: reading %s's result: %w", OutHelper, err)
	}
	return 0, fmt.Errorf("-out: %s ended without unpacking the job's files (%s)", OutHelper, c.proc.Status(c.wait))
}

// unquote is a message the helper quoted; one that is not quoted (it
// should be) is shown as it came.
func unquote(v string) string {
	if s, err := strconv.Unquote(v); err == nil {
		return s
	}
	return "-out: " + OutHelper + ": " + v
}

// stopHelper closes vmm's end of the control pipe: the helper stops, or
// never starts.
func (c *Collector) stopHelper() {
	c.closeCtl.Do(func() { c.ctl.Close() })
}

// Close stops the helper if it has not finished, waits a while for it to
// exit, and kills it if it has not. vmm calls it once a job's files are
// collected, or when it ends without collecting them; calls after the
// first do nothing, and a Collect in another goroutine (vmm's backstop
// removes the job's files while it runs) ends with an error.
func (c *Collector) Close() {
	c.closed.Do(func() {
		c.stopHelper()
		select {
		case <-c.proc.Exited():
		case <-time.After(c.wait):
			c.proc.Kill()
		}
		c.results.Close()
		c.proc.Release()
	})
}
