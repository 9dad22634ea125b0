package kernelcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
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
		ctx, cancel := context.WithTimeout(context.Background(), unpackTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, p, "--wire", kernelimage.UnpackWire, "--limit", strconv.Itoa(limit))
		cmd.Stdin = bytes.NewReader(payload)
		cmd.Stdout = out
		stderr := &capped{max: maxStderr}
		cmd.Stderr = stderr
		cmd.Env = []string{} // it needs nothing from vmm's environment
		// It dies with vmm if vmm is killed, rather than decompressing
		// for nobody; a process group of its own keeps the terminal's
		// Ctrl-C for vmm, which decides what a stop means (the fill
		// then finishes, as it did in vmm's own process).
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if err == nil {
			return nil
		}
		msg := strings.TrimSpace(stderr.String())
		var exit *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("%s did not finish within %v", kernelimage.UnpackHelper, unpackTimeout)
		case errors.As(err, &exit) && exit.ExitCode() == kernelimage.ExitNoDecoder:
			return fmt.Errorf("%s: %w", msg, kernelimage.ErrNoDecoder)
		case errors.As(err, &exit) && exit.ExitCode() == kernelimage.ExitWrite:
			// The helper knows the file only as its stdout.
			return fmt.Errorf("writing %s: %s", out.Name(), oneLine(msg))
		case msg != "":
			// The helper's line already says which payload and why.
			return errors.New(oneLine(msg))
		}
		return fmt.Errorf("%s: %w", kernelimage.UnpackHelper, err)
	}
}

// capped keeps the first max bytes written to it. Its buffer is a field,
// not embedded: an embedded bytes.Buffer would bring its ReadFrom, which
// io.Copy (os/exec's copy of the helper's stderr) would call instead of
// Write, and keep everything.
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
