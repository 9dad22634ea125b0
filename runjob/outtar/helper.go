package outtar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/vmm-dev/vmm/runjob"
	"github.com/vmm-dev/vmm/sandbox"
)

// Confine is the helper's confinement: vmm's seccomp filter with the
// variant a virtio-fs share takes (sandbox.Options.Files), whose
// file-system calls include those Extract makes. Without it a tar
// reader or extractor turned by the guest's archive could run programs,
// open sockets, or trace processes; with it, what is left is the file
// system as the user may change it, which os.Root and Extract's checks
// keep to the output directory.
func Confine() error {
	// Go's network poller starts with the first descriptor it can poll
	// (epoll_create1, which the filter does not allow, as vmm's has
	// started long before its sandbox): a pipe starts it now, or the
	// output directory's first open would end the helper.
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	r.Close()
	w.Close()
	return sandbox.Install(sandbox.Options{Files: true})
}

// errWire is a wire version the helper does not speak.
var errWire = errors.New("another wire version")

// errStopped is the cause of a stop vmm asked for by closing the control
// pipe; vmm's message names its own cause (-timeout, a signal).
var errStopped = errors.New("stopped by vmm")

// HelperMain is `vmm-unpack out` given the arguments after "out"
// (runjob's OutWire says what they are and what the descriptors are):
// it waits on control for vmm's word, unpacks disk into the directory,
// writes its result lines to results, and returns the exit status: 0
// when it unpacked everything or was never asked to, 1 when it did not,
// 2 for bad usage. confine, unless the arguments say --no-sandbox, is
// called before it waits (vmm-unpack passes Confine); a confinement
// that fails is a failure, as it is for vmm.
func HelperMain(args []string, disk io.Reader, results io.Writer, control io.Reader, confine func() error) int {
	dir, bytes, sandbox, err := parseArgs(args)
	if err != nil {
		// Another build's vmm did start it; anything else came from
		// someone who did not.
		hint := " (it is started by vmm, not by hand)"
		if errors.Is(err, errWire) {
			hint = ""
		}
		say(results, runjob.OutFail, fmt.Sprintf("-out: %s %s: %v%s", runjob.OutHelper, runjob.OutMode, err, hint))
		return 2
	}
	if sandbox && confine != nil {
		if err := confine(); err != nil {
			say(results, runjob.OutFail, fmt.Sprintf("-out: %s: %v", runjob.OutHelper, err))
			return 1
		}
	}
	fmt.Fprintln(results, runjob.OutReady)
	if _, err := io.ReadFull(control, make([]byte, 1)); err != nil {
		return 0 // vmm ended without collecting: nothing to do
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		// vmm writes nothing more: the next read returns at the end.
		io.Copy(io.Discard, control)
		cancel(errStopped)
	}()
	warn := func(msg string) { say(results, runjob.OutWarn, msg) }
	n, err := Extract(ctx, disk, dir, DefaultLimits(bytes), warn)
	switch {
	case err == nil:
		fmt.Fprintf(results, "%s %d\n", runjob.OutDone, n)
		return 0
	case errors.Is(err, errStopped):
		fmt.Fprintf(results, "%s %d\n", runjob.OutStopped, n)
	default:
		say(results, runjob.OutFail, err.Error())
	}
	return 1
}

// say writes a result line with a message, cut to runjob.MaxOutMessage
// bytes (a name or link target from the archive may be long) and
// quoted, so that it is one line whatever the archive named.
func say(results io.Writer, word, msg string) {
	if len(msg) > runjob.MaxOutMessage {
		msg = msg[:runjob.MaxOutMessage-3] + "..."
	}
	fmt.Fprintf(results, "%s %s\n", word, strconv.Quote(msg))
}

// parseArgs reads `--wire OutWire --dir DIR --bytes N [--no-sandbox]`.
func parseArgs(args []string) (dir string, bytes int64, sandbox bool, err error) {
	var wire string
	bytes, sandbox = -1, true
	for i := 0; i < len(args); i++ {
		name := args[i]
		if name == "--no-sandbox" {
			sandbox = false
			continue
		}
		if i+1 >= len(args) {
			return "", 0, false, fmt.Errorf("%s needs a value", name)
		}
		i++
		switch v := args[i]; name {
		case "--wire":
			wire = v
		case "--dir":
			dir = v
		case "--bytes":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return "", 0, false, fmt.Errorf("--bytes %q is not a byte count", v)
			}
			bytes = n
		default:
			return "", 0, false, fmt.Errorf("unknown argument %q", name)
		}
	}
	switch {
	case wire != runjob.OutWire:
		return "", 0, false, fmt.Errorf("%w: vmm speaks %q, this helper %q: vmm and %s come from different builds", errWire, wire, runjob.OutWire, runjob.OutHelper)
	case dir == "" || strings.ContainsRune(dir, 0):
		return "", 0, false, errors.New("no --dir")
	case bytes < 0:
		return "", 0, false, errors.New("no --bytes")
	}
	return dir, bytes, sandbox, nil
}
