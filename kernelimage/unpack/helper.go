package unpack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/kernelimage"
)

// maxPayload bounds what the helper reads from its standard input: far
// above any kernel's payload (Debian's bzImage is 14 MB), the bound vmm
// puts on a kernel file it reads onto its heap (kernelcache's maxRead).
const maxPayload = 1 << 30

// outBuf is the helper's output buffer: decoders write in pieces of a
// few KiB, and a write per piece to the cache's file would be thousands
// of system calls for a 53 MB vmlinux.
const outBuf = 1 << 20

// errFlush marks a failure to write the buffered end of the vmlinux.
var errFlush = errors.New("writing the vmlinux")

// HelperMain is the vmm-unpack helper (cmd/vmm-unpack) given its
// arguments (kernelimage's UnpackWire says what they are): it reads a
// bzImage's payload from stdin, writes the vmlinux it decompresses to
// stdout, and returns the exit status: 0, kernelimage.ExitNoDecoder for a
// payload vmm leaves to the kernel's own decompressor,
// kernelimage.ExitWrite when stdout would not take the vmlinux, 1 for any
// other failure, 2 for bad usage, each failure with one line on stderr. On a
// failure the output holds a part of the vmlinux at most, which vmm
// discards.
func HelperMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return HelperMainCapped(args, stdin, stdout, stderr, nil)
}

// memMargin is what the helper's memory budget allows beyond the payload
// and the largest xz dictionary: the Go runtime, the output buffer, the
// decoders' own state (zstd's window is bounded like xz's dictionary, and
// only one decoder runs).
const memMargin = 256 << 20

// HelperMainCapped is HelperMain that, once it has read the payload,
// calls capMemory (if not nil) with the most memory decoding it may need:
// the payload, the largest dictionary or window a decoder is allowed for
// limit, and memMargin. cmd/vmm-unpack caps its data segment there
// (RLIMIT_DATA), so a payload that drives a decoder to allocate without
// bound (the xz decoder keeps a filter's state for every block of a
// stream until the stream ends) ends the helper, and vmm boots the
// bzImage, instead of the host's memory running out. A cap that cannot
// be set leaves decoding uncapped, as it was.
func HelperMainCapped(args []string, stdin io.Reader, stdout, stderr io.Writer, capMemory func(bytes uint64) error) int {
	limit, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (it is started by vmm, not by hand)\n", kernelimage.UnpackHelper, err)
		return 2
	}
	payload, err := io.ReadAll(io.LimitReader(stdin, maxPayload+1))
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "%s: reading the kernel payload: %v\n", kernelimage.UnpackHelper, err)
		return 1
	case len(payload) > maxPayload:
		fmt.Fprintf(stderr, "%s: the kernel payload is larger than %d bytes\n", kernelimage.UnpackHelper, maxPayload)
		return 1
	}
	if capMemory != nil {
		_ = capMemory(uint64(len(payload)) + dictBudget(limit) + memMargin)
	}
	w := bufio.NewWriterSize(stdout, outBuf)
	err = DecompressTo(w, payload, limit)
	if err == nil {
		if ferr := w.Flush(); ferr != nil {
			err = fmt.Errorf("%w: %w", errFlush, ferr)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, oneLine(err.Error()))
		var werr *writeError
		switch {
		case errors.Is(err, kernelimage.ErrNoDecoder):
			return kernelimage.ExitNoDecoder
		case errors.As(err, &werr) || errors.Is(err, errFlush):
			return kernelimage.ExitWrite
		}
		return 1
	}
	return 0
}

// parseArgs reads `--wire UnpackWire --limit N`.
func parseArgs(args []string) (limit int, err error) {
	var wire string
	limit = -1
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return 0, fmt.Errorf("%s needs a value", args[i])
		}
		switch v := args[i+1]; args[i] {
		case "--wire":
			wire = v
		case "--limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("--limit %q is not a byte count", v)
			}
			limit = n
		default:
			return 0, fmt.Errorf("unknown argument %q", args[i])
		}
	}
	switch {
	case wire != kernelimage.UnpackWire:
		return 0, fmt.Errorf("wire version %q, this helper speaks %q: vmm and %s come from different builds", wire, kernelimage.UnpackWire, kernelimage.UnpackHelper)
	case limit < 0:
		return 0, errors.New("no --limit")
	}
	return limit, nil
}

// oneLine keeps a message to one line, as vmm reports it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// CapData lowers the process's soft RLIMIT_DATA (setrlimit(2)) to n bytes,
// or to its hard limit if that is lower: once it is reached, the kernel
// refuses the private writable mappings the Go runtime grows its heap
// with, and the runtime ends the process (mostly with "out of memory",
// sometimes with a fault in the collector's bookkeeping), which vmm
// reports as a failed decompression and boots the bzImage. For
// HelperMainCapped, in the helper's own process only.
func CapData(n uint64) error {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_DATA, &r); err != nil {
		return err
	}
	r.Cur = min(n, r.Max)
	return unix.Setrlimit(unix.RLIMIT_DATA, &r)
}
