package kernelcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/helperbin"
	"github.com/vmm-dev/vmm/kernelimage"
)

// Unpack writes the vmlinux decompressed from a bzImage's payload, at
// most limit bytes of it, to out at out's current offset. The payload has
// passed kernelimage.Plan. An error wrapping kernelimage.ErrNoDecoder
// means a payload vmm leaves to the kernel's own decompressor. Helper is
// vmm's; tests decompress in the test's own process.
type Unpack func(payload []byte, limit int, out *os.File) error

// unpackTimeout bounds one run of the helper: Debian's cloud kernel
// (LZ4) takes about a second on a host and a few in the nested, emulated
// CI machines, its generic and RT kernels (xz) 6-9 s there; a helper
// still running after this is stuck, and the boot goes on with the
// bzImage.
const unpackTimeout = 2 * time.Minute

// maxStderr bounds what is kept of the helper's standard error: its one
// line, and not a flood from a broken helper.
const maxStderr = 4096

// Helper returns the Unpack that runs the vmm-unpack helper at path (see
// package kernelimage/unpack for why it is a process of its own); an
// empty path is found when first needed (next to vmm, else in $PATH).
// The payload goes to its standard input through a pipe, and out is its
// standard output, so the vmlinux goes from the decoder to the cache's
// file without passing through vmm.
func Helper(path string) Unpack {
	return func(payload []byte, limit int, out *os.File) error {
		p := path
		if p == "" {
			var err error
			if p, err = helperbin.Find(kernelimage.UnpackHelper, "decompressing a kernel for the kernel cache runs in"); err != nil {
				return err
			}
		}
		state, stderr, err := runHelper(p, []string{"--wire", kernelimage.UnpackWire, "--limit", strconv.Itoa(limit)}, payload, out)
		if err != nil {
			return err
		}
		if state.Success() {
			return nil
		}
		msg := strings.TrimSpace(stderr)
		switch {
		case state.ExitCode() == kernelimage.ExitNoDecoder:
			return fmt.Errorf("%s: %w", msg, kernelimage.ErrNoDecoder)
		case state.ExitCode() == kernelimage.ExitWrite:
			// The helper knows the file only as its stdout.
			return fmt.Errorf("writing %s: %s", out.Name(), oneLine(msg))
		case msg != "":
			// The helper's line already says which payload and why.
			return errors.New(oneLine(msg))
		}
		return fmt.Errorf("%s: %s", kernelimage.UnpackHelper, state)
	}
}

// runHelper runs the helper at path with args, the payload on its
// standard input through a pipe and out as its standard output, and
// returns how it ended and the start of its standard error (maxStderr
// bytes). A helper still running after unpackTimeout is killed, and
// that is the error.
func runHelper(path string, args []string, payload []byte, out *os.File) (*os.ProcessState, string, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", kernelimage.UnpackHelper, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, "", fmt.Errorf("%s: %w", kernelimage.UnpackHelper, err)
	}
	// An empty environment: it needs nothing from vmm's. It dies with
	// vmm if vmm is killed, rather than decompressing for nobody; its
	// process group of its own (helperbin.Start) keeps the terminal's
	// Ctrl-C for vmm, which decides what a stop means (the fill then
	// finishes, as it did in vmm's own process).
	proc, err := helperbin.Start(path, args, []*os.File{inR, out, errW}, []string{}, syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL})
	inR.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		errR.Close()
		return nil, "", fmt.Errorf("%s: %w", kernelimage.UnpackHelper, err)
	}
	// A helper that stops reading (it failed, or exited) ends the
	// write with EPIPE; the exit status says why.
	go func() {
		inW.Write(payload)
		inW.Close()
	}()
	stderr := &capped{max: maxStderr}
	stderrDone := make(chan struct{})
	go func() {
		io.Copy(stderr, errR)
		close(stderrDone)
	}()
	defer proc.Release()
	timer := time.NewTimer(unpackTimeout)
	defer timer.Stop()
	select {
	case <-proc.Exited():
	case <-timer.C:
		// This runs while vmm builds its machine, before the sandbox,
		// so kill(2) may stand in where the kernel has no pidfd.
		if !proc.Kill() {
			syscall.Kill(proc.Pid, syscall.SIGKILL)
		}
		<-proc.Exited()
		errR.Close()
		<-stderrDone
		return nil, "", fmt.Errorf("%s did not finish within %v", kernelimage.UnpackHelper, unpackTimeout)
	}
	// The helper is gone; its stderr ends with it, unless a process it
	// left holds the pipe (as os/exec's WaitDelay, a second). Closing
	// our end ends the copy either way, before its buffer is read.
	select {
	case <-stderrDone:
	case <-time.After(time.Second):
	}
	errR.Close()
	<-stderrDone
	state, err := proc.State()
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", kernelimage.UnpackHelper, err)
	}
	return state, stderr.String(), nil
}

// capped keeps the first max bytes written to it. Its buffer is a field,
// not embedded: an embedded bytes.Buffer would bring its ReadFrom, which
// io.Copy (runHelper's copy of the helper's stderr) would call instead
// of Write, and keep everything.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.buf.String() }

// oneLine joins a message's lines, as the user is shown one.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Fill has unpack write the decompressed payload, size bytes as
// kernelimage.Plan found (at most limit), into the entry being written,
// then heads it with the entry's header and renames it into place, as
// Commit does for bytes in memory. The vmlinux is trimmed
// (kernelimage.TrimZeroTails) and checksummed through a shared mapping
// of the file: it is never on vmm's heap.
func (p *Pending) Fill(unpack Unpack, payload []byte, size uint64, limit int) error {
	err := p.fill(unpack, payload, size, limit)
	if err != nil {
		p.Abort()
		return err
	}
	return nil
}

func (p *Pending) fill(unpack Unpack, payload []byte, size uint64, limit int) error {
	// The header's room first, so that an empty output still makes a
	// whole (if empty) entry; the data goes after it.
	if err := p.f.Truncate(int64(headerLen)); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	if _, err := p.f.Seek(int64(headerLen), io.SeekStart); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	// The room first: a full disk or quota then costs one call, not a
	// decompression that fails part way, having taken for a while the
	// space other jobs needed. KEEP_SIZE leaves the file's length to
	// what the helper writes, which is checked below; the final
	// truncate frees what the trimmed entry does not use.
	if err := unix.Fallocate(int(p.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, int64(headerLen)+int64(size)); err == unix.ENOSPC || err == unix.EDQUOT {
		return fmt.Errorf("kernel cache: no room for a %d MiB entry: %w", (uint64(headerLen)+size)>>20, err)
	}
	if err := unpack(payload, limit, p.f); err != nil {
		return err
	}
	st, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	// The helper holds its output to the payload's size trailer; a
	// program in its place that does not must not be cached.
	if n := st.Size() - int64(headerLen); n != int64(size) {
		return fmt.Errorf("kernel cache: %s wrote %d bytes, the payload's size trailer says %d", kernelimage.UnpackHelper, n, size)
	}
	m, err := unix.Mmap(int(p.f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("kernel cache: mmap %s: %w", p.f.Name(), err)
	}
	// The file is vmm's own, just written; a fault reading it (a disk
	// error) is guarded all the same. Its segments' zero tails are cut
	// off (kernelimage.TrimZeroTails): every boot from the entry then
	// checksums and copies less.
	v := mapped{what: "kernel cache entry " + p.f.Name(), mapping: m}
	var hdr []byte
	n := 0
	err = v.guard(func() error {
		n = kernelimage.TrimZeroTails(m[headerLen:])
		hdr = header(m[headerLen:][:n])
		return nil
	})
	v.Close()
	if err != nil {
		return fmt.Errorf("%s %w", v.what, err)
	}
	if err := p.f.Truncate(int64(headerLen + n)); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	if _, err := p.f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	if err := p.c.renameTemp(p.f, p.c.path(p.key)); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	return nil
}
