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

	"golang.org/x/sys/unix"

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
// output the result lines, each a word and its value: OutWarn and a
// quoted message for an entry the helper skipped, then one of OutDone
// and the files written, OutStopped and the files written before the
// stop, or OutFail and a quoted message. Standard error is vmm's own, for
// a crash's trace.
//
// Extraction lives in a helper so that vmm neither links nor maps the
// tar reader (archive/tar, os/user and the extractor: 108 KB of vmm's
// code and read-only data), and so that the guest's archive, hostile
// input, is parsed in a process that holds no guest memory, no KVM
// descriptor and no disk but the scratch one. The helper is started
// during setup, before vmm's sandbox forbids starting processes, and
// waits.
const (
	OutMode    = "out" // the helper's first argument
	OutWire    = "out-1"
	OutWarn    = "warn"
	OutDone    = "done"
	OutStopped = "stopped"
	OutFail    = "fail"
)

// OutHelper is the helper's file name (the kernel cache's decompressor,
// whose binary unpacks -out too).
const OutHelper = "vmm-unpack"

// maxResultLine bounds one result line: a warning quotes at most an
// entry's name (outtar's MaxNameLen, 1024 bytes, four times that
// quoted) with a few words.
const maxResultLine = 16 << 10

// collectWait is how long Collector waits for a helper it told to stop,
// or that has written its result, to exit before killing it.
const collectWait = 5 * time.Second

// Collector is vmm's end of one -out helper.
type Collector struct {
	proc     *os.Process
	ctl      *os.File // vmm's end of the control pipe
	results  *os.File
	pidfd    int
	closeCtl sync.Once
	closed   sync.Once
	exited   chan struct{}
	state    *os.ProcessState
	waitErr  error
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
	c := &Collector{proc: proc, ctl: ctlW, results: resR, pidfd: -1, exited: make(chan struct{})}
	// The pidfd is how a helper that will not stop is killed once the
	// sandbox allows signals to vmm's own threads only.
	if fd, err := unix.PidfdOpen(proc.Pid, 0); err == nil {
		c.pidfd = fd
	}
	go func() {
		c.state, c.waitErr = proc.Wait()
		close(c.exited)
	}()
	return c, nil
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
	// A helper already gone makes this fail (EPIPE); its result lines,
	// or its exit status, then say why.
	c.ctl.Write([]byte{1})
	stop := context.AfterFunc(ctx, func() {
		c.stopHelper()
		c.results.SetReadDeadline(time.Now().Add(collectWait))
	})
	defer stop()
	sc := bufio.NewScanner(c.results)
	sc.Buffer(make([]byte, 4096), maxResultLine)
	var (
		files  int
		result error
		said   bool
	)
	for sc.Scan() {
		word, value, _ := strings.Cut(sc.Text(), " ")
		switch word {
		case OutWarn:
			if msg, err := strconv.Unquote(value); err == nil && warn != nil {
				warn(msg)
			}
			continue
		case OutDone:
			files, _ = strconv.Atoi(value)
		case OutStopped:
			files, _ = strconv.Atoi(value)
			result = fmt.Errorf("-out: stopped after %d files: %w", files, context.Cause(ctx))
		case OutFail:
			msg, err := strconv.Unquote(value)
			if err != nil {
				msg = "-out: " + value
			}
			result = errors.New(msg)
		default:
			continue
		}
		said = true
		break
	}
	if !said && ctx.Err() != nil {
		// Stopped, and the helper did not say so in time: it is
		// killed below.
		return 0, fmt.Errorf("-out: stopped: %w", context.Cause(ctx))
	}
	if !said {
		if err := sc.Err(); err != nil {
			return 0, fmt.Errorf("-out: reading %s's result: %w", OutHelper, err)
		}
		return 0, fmt.Errorf("-out: %s ended without unpacking the job's files (%s)", OutHelper, c.status())
	}
	return files, result
}

// status is the helper's exit status, once it exited, for a message.
func (c *Collector) status() string {
	select {
	case <-c.exited:
	case <-time.After(collectWait):
		return "still running"
	}
	if c.waitErr != nil {
		return c.waitErr.Error()
	}
	return c.state.String()
}

// stopHelper closes vmm's end of the control pipe: the helper stops, or
// never starts.
func (c *Collector) stopHelper() {
	c.closeCtl.Do(func() { c.ctl.Close() })
}

// Close stops the helper if it has not finished, waits a while for it to
// exit, and kills it through its pidfd if it has not. vmm calls it once
// a job's files are collected, or when it ends without collecting them;
// calls after the first do nothing.
func (c *Collector) Close() {
	c.closed.Do(func() {
		c.stopHelper()
		select {
		case <-c.exited:
		case <-time.After(collectWait):
			if c.pidfd >= 0 {
				unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
			}
		}
		c.results.Close()
		if c.pidfd >= 0 {
			unix.Close(c.pidfd)
		}
	})
}
