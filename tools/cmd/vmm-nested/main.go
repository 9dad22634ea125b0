// Command vmm-nested runs a command inside an L1 Linux guest booted under
// QEMU TCG with an emulated AMD-V CPU, so that vmm can use /dev/kvm on
// machines that have none. The command runs on L1's job console with the
// caller's terminal attached, and vmm-nested exits with its status.
//
//	vmm-nested --file /vmm=build/vmm --file /guest/bzImage=bz -- /vmm -kernel /guest/bzImage
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/internal/rawterm"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/tools/nested"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

type options struct {
	cfg     nested.Config
	stdin   string
	timeout time.Duration
	args    []string
}

func parseFlags(argv []string) (options, error) {
	var o options
	fs := pflag.NewFlagSet("vmm-nested", pflag.ContinueOnError)
	fs.StringVar(&o.cfg.Kernel, "l1-kernel", "", "L1 kernel bzImage (default: Debian's cloud kernel, fetched into the vmm kernel cache)")
	fs.StringVar(&o.cfg.ModulesDir, "l1-modules", "", "L1 lib/modules/<version> directory (default: the modules of that kernel)")
	fs.StringVar(&o.cfg.Init, "l1-init", "", "prebuilt l1init binary (default: l1init next to this program, else go build)")
	fs.StringVar(&o.cfg.QEMU, "qemu", "qemu-system-x86_64", "QEMU binary")
	files := fs.StringArray("file", nil, "L1PATH=HOSTPATH: copy a host file into L1 (repeatable)")
	fs.IntVar(&o.cfg.MemoryMiB, "memory", 3072, "L1 memory in MiB")
	fs.IntVar(&o.cfg.CPUs, "cpus", 2, "L1 vCPUs")
	fs.StringVar(&o.cfg.WorkDir, "work-dir", "", "keep L1's initramfs and kernel log under this directory")
	fs.DurationVar(&o.cfg.FreezeTimeout, "freeze-timeout", 90*time.Second, "console and heartbeat silence that counts as a frozen L1")
	fs.DurationVar(&o.timeout, "timeout", 24*time.Hour, "give up on the command after this long")
	fs.StringVar(&o.stdin, "stdin", "tty", "job stdin: tty (L1 console is its terminal), pipe (raw bytes), or null")
	if err := fs.Parse(argv); err != nil {
		return o, err
	}
	o.args = fs.Args()
	if len(o.args) == 0 {
		return o, errors.New("no command given; usage: vmm-nested [flags] -- CMD ARGS...")
	}
	o.cfg.Files = map[string]string{}
	for _, f := range *files {
		l1, host, ok := strings.Cut(f, "=")
		if !ok || l1 == "" || host == "" {
			return o, fmt.Errorf("--file %q: want L1PATH=HOSTPATH", f)
		}
		o.cfg.Files[l1] = host
	}
	switch o.stdin {
	case "tty", "pipe", "null":
	default:
		return o, fmt.Errorf("--stdin %q: want tty, pipe or null", o.stdin)
	}
	return o, nil
}

// defaultL1Kernel is Debian's cloud kernel from vmm's kernel cache,
// downloaded on first use: it boots fastest as L1 and ships kvm-amd.
func defaultL1Kernel() (kernel, modules string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := guest.FetchKernel(ctx, guest.FlavorCloud, "")
	if err != nil {
		return "", "", fmt.Errorf("L1 kernel: %w", err)
	}
	return k.BzImage, k.ModulesDir, nil
}

func run(argv []string) int {
	o, err := parseFlags(argv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-nested: %v\n", err)
		return 2
	}
	if o.cfg.Kernel == "" || o.cfg.ModulesDir == "" {
		k, m, err := defaultL1Kernel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-nested: %v\n", err)
			return 2
		}
		if o.cfg.Kernel == "" {
			o.cfg.Kernel = k
		}
		if o.cfg.ModulesDir == "" {
			o.cfg.ModulesDir = m
		}
	}
	if o.cfg.Init == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "l1init"); fileExists(p) {
				o.cfg.Init = p
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	term, err := newTerminal(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-nested: %v\n", err)
		return 1
	}
	o.cfg.Log = crlfWriter{os.Stderr, term}
	o.cfg.ConsoleOut = os.Stdout

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var gotSig os.Signal
	go func() {
		if s, ok := <-sigs; ok {
			gotSig = s
			cancel()
		}
	}()

	input := readInput(os.Stdin)
	var code int
	err = nested.WithL1(ctx, o.cfg, func(l *nested.L1) error {
		if err := term.makeRaw(); err != nil {
			return err
		}
		defer term.restore()
		spec := nested.JobSpec{Args: o.args, Stdin: nested.StdinMode(o.stdin), Env: []string{"TERM=" + envOr("TERM", "vt100")}}
		spec.Rows, spec.Cols = term.size()
		job, err := l.RunJob(ctx, spec)
		if err != nil {
			return err
		}
		stop := make(chan struct{})
		defer close(stop)
		go forwardInput(input, stop, job, o.stdin == "pipe")
		waitErr := make(chan error, 1)
		go func() {
			var err error
			code, err = job.Wait(o.timeout)
			waitErr <- err
		}()
		select {
		case err := <-waitErr:
			return err
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w", o.args, ctx.Err())
		}
	})
	term.restore()
	if gotSig != nil {
		fmt.Fprintf(os.Stderr, "vmm-nested: %v, L1 stopped\n", gotSig)
		if s, ok := gotSig.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-nested: %v\n", err)
		return 1
	}
	return code
}

// readInput reads the caller's stdin once for all attempts: a retry after
// a frozen L1 must not leave a second reader competing for the terminal.
func readInput(r io.Reader) <-chan []byte {
	c := make(chan []byte)
	go func() {
		defer close(c)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				c <- append([]byte(nil), buf[:n]...)
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

func forwardInput(input <-chan []byte, stop <-chan struct{}, job *nested.Job, pipe bool) {
	for {
		select {
		case <-stop:
			return
		case b, ok := <-input:
			if !ok {
				// End of input (CI): a pipe job gets EOF, a tty job
				// just keeps running without more keystrokes.
				if pipe {
					job.CloseStdin()
				}
				return
			}
			if err := job.Send(string(b)); err != nil {
				return
			}
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// crlfWriter keeps progress lines readable while the terminal is raw.
type crlfWriter struct {
	w    io.Writer
	term *terminal
}

func (c crlfWriter) Write(p []byte) (int, error) {
	if !c.term.isRaw() {
		return c.w.Write(p)
	}
	s := strings.ReplaceAll(strings.ReplaceAll(string(p), "\r\n", "\n"), "\n", "\r\n")
	if _, err := io.WriteString(c.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// terminal puts the caller's terminal in raw mode while the job runs, so
// that every key (^C, ^A, arrows) goes to the job, and restores it after.
type terminal struct {
	fd    int
	saved *unix.Termios // nil if stdin is not a terminal
	raw   atomic.Bool   // read by the log writer from other goroutines
}

func newTerminal(f *os.File) (*terminal, error) {
	t := &terminal{fd: int(f.Fd())}
	st, err := unix.IoctlGetTermios(t.fd, unix.TCGETS)
	if err != nil {
		return t, nil // not a terminal: CI, pipes
	}
	t.saved = st
	return t, nil
}

func (t *terminal) makeRaw() error {
	if t.saved == nil || t.raw.Load() {
		return nil
	}
	raw := rawterm.Raw(*t.saved)
	if err := unix.IoctlSetTermios(t.fd, unix.TCSETS, &raw); err != nil {
		return fmt.Errorf("raw terminal: %w", err)
	}
	t.raw.Store(true)
	return nil
}

func (t *terminal) isRaw() bool { return t.raw.Load() }

func (t *terminal) restore() {
	if t.saved == nil || !t.raw.Load() {
		return
	}
	if err := unix.IoctlSetTermios(t.fd, unix.TCSETS, t.saved); err == nil {
		t.raw.Store(false)
	}
}

func (t *terminal) size() (rows, cols uint16) {
	if t.saved == nil {
		return 0, 0
	}
	ws, err := unix.IoctlGetWinsize(t.fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0
	}
	return ws.Row, ws.Col
}
