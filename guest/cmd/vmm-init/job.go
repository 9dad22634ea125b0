package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guest/internal/jobspec"
	"github.com/vmm-dev/vmm/guestabi"
)

// runJobIfAsked runs the job `vmm run` put in the initramfs, if there is
// one, and then ends the VM with the job's status; it returns only when
// there is no job.
func runJobIfAsked() {
	b, err := os.ReadFile(guestabi.SpecPath)
	if errors.Is(err, os.ErrNotExist) {
		if waitAsked() {
			waitForJob()
		}
		return
	}
	status := guestabi.StatusNotRun
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
	} else if spec, err := jobspec.Parse(b); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
	} else {
		status = runJob(spec, false)
	}
	finishJob(status)
}

// finishJob reports the job's status to vmm, which ends the VM.
func finishJob(status int) {
	unix.Sync()
	reportExit(uint8(status))
	// Only reached when the exit port is missing (another VMM): power
	// off, which `vmm run` reports as a guest that gave no status.
	powerOff()
}

// runJob runs the command with its stdin and stdout on the job port (its
// stdin through jobStdin, so that it ends where vmm's does, or from the
// virtio-console input port when the spec asks, portStdin; its stdout
// through the output port instead when the spec asks and the port is
// there, see outport.go) and its stderr on the console (a pipe to it
// when the spec asks, jobStderr), and returns its status as a shell
// would. restored says the job came in a restored snapshot's message.
func runJob(spec guestabi.Spec, restored bool) int {
	tty, err := os.OpenFile(guestabi.JobTTY, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job port: %v; using the console\n", err)
		tty = os.Stdout
	} else {
		defer tty.Close()
		// With StdinPort, OUT1 waits: the input port, once open,
		// takes the input instead (portStdin).
		openJobInput(tty, !spec.StdinPort)
	}
	defer drain(tty)
	defer drain(os.Stderr)
	if spec.Out {
		if err := os.MkdirAll(guestabi.OutDir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		}
	}
	root, shares, err := prepareMounts(spec)
	defer unmountShares(shares)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		return guestabi.StatusNotRun
	}
	raiseFileLimit()
	cmd, err := jobCommand(spec, root)
	if err != nil {
		return exitStatus(err)
	}
	stdin := tty
	switch {
	case spec.StdinPort:
		s, done, err := portStdin(tty, restored)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
			return guestabi.StatusNotRun
		}
		stdin = s
		defer done()
	case tty != os.Stdout:
		var done func()
		stdin, done = jobStdin(tty)
		defer done()
	}
	stdout := tty
	finishOut := func() {}
	if spec.StdoutPort {
		if port := openOutputPort(); port != nil {
			defer port.Close()
			if w, finish, err := portStdout(port, tty); err != nil {
				fmt.Fprintf(os.Stderr, "vmm-init: job output: %v; using %s\n", err, guestabi.JobTTY)
			} else {
				stdout, finishOut = w, finish
			}
		}
	}
	stderr := os.Stderr
	finishErr := func() {}
	if spec.StderrPipe {
		if w, finish, err := jobStderr(os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: job stderr: %v; the job writes to the console\n", err)
		} else {
			stderr, finishErr = w, finish
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	status := runReaping(cmd)
	endLeftovers()
	// The job's output before -out's tar stream, which can take a while.
	finishErr()
	finishOut()
	if spec.Out {
		if err := saveOut(); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: -out: %v\n", err)
		}
	}
	return status
}

// endLeftovers ends what the job left running once it has exited, as a
// container's processes end with its first: a process still writing to
// the console would keep drain from ever seeing it empty (the status
// would never be reported), and one still writing in /out would change
// it while saveOut copies it. What they wrote before is kept: the pipes
// and the tty hold it. It waits a little for them to go; one stuck in
// the kernel is left.
func endLeftovers() {
	// kill(-1) reaches every process but PID 1 (vmm-init) itself, and
	// from any other process every process its user may signal: only
	// the guest's init may make it.
	if os.Getpid() != 1 {
		return
	}
	if err := unix.Kill(-1, unix.SIGKILL); err != nil {
		return // ESRCH: nothing was left
	}
	for deadline := time.Now().Add(leftoverWait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		reapEnded()
		if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); errors.Is(err, unix.ECHILD) {
			return
		}
	}
}

// leftoverWait bounds how long endLeftovers waits for killed processes
// to be reaped.
const leftoverWait = 2 * time.Second

// The job's RLIMIT_NOFILE: the soft limit of a GitHub-hosted runner, the
// hard one the kernel's nr_open default. Linux starts init with 1,024
// and 4,096, which a large build or a test suite with many files or
// sockets open outgrows.
const (
	jobFilesSoft = 1 << 16
	jobFilesHard = 1 << 20
)

// raiseFileLimit gives the job its RLIMIT_NOFILE. syscall.Setrlimit,
// not x/sys's: it tells os/exec not to put back in the child the soft
// limit the Go runtime found at start.
func raiseFileLimit() {
	lim := syscall.Rlimit{Cur: jobFilesSoft, Max: jobFilesHard}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: the job's open file limit: %v\n", err)
	}
}

// jobCommand builds the job's command: in the initramfs, or chrooted to
// root (a -rootfs job). The command is looked up in the job's own PATH
// (-env PATH=... included), inside root for a -rootfs job, where it
// starts in spec.Dir.
func jobCommand(spec guestabi.Spec, root string) (*exec.Cmd, error) {
	env := append(os.Environ(), spec.Env...)
	if root == "" {
		pathEnv, _ := envValue(env, "PATH")
		p, err := lookPathIn("/", spec.Args[0], pathEnv)
		if err != nil {
			return nil, err
		}
		// argv[0] as the full path: u-root's busybox finds which
		// command a symlink like /bin/sh -> ../bbin/gosh stands for
		// from the path, and a bare "sh" gives it nothing to resolve.
		cmd := exec.Command(p, spec.Args[1:]...)
		cmd.Env = env
		cmd.Dir = spec.Dir
		if cmd.Dir == "" {
			cmd.Dir = "/"
			if st, err := os.Stat(guestabi.ShareDir); err == nil && st.IsDir() {
				cmd.Dir = guestabi.ShareDir
			}
		}
		return cmd, nil
	}
	pathEnv, _ := envValue(env, "PATH")
	p, err := lookPathIn(root, spec.Args[0], pathEnv)
	if err != nil {
		return nil, err
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	// vmm passes the host's current directory when the root has it, but
	// /tmp, /run and /dev are the guest's own, fresh: a job started in
	// the host's /tmp/x would fail its chdir after the fork, which Go
	// reports as the command not found (127). It starts in / instead,
	// and says why.
	if !isDirIn(root, dir) {
		fmt.Fprintf(os.Stderr, "vmm-init: the job starts in /: %s is not a directory in the guest (its /tmp, /run and /dev are its own)\n", dir)
		dir = "/"
	}
	// Dir is resolved after the chroot, so it is the in-root path.
	cmd := &exec.Cmd{Path: p, Args: spec.Args, Env: env, Dir: dir,
		SysProcAttr: &syscall.SysProcAttr{Chroot: root}}
	return cmd, nil
}

// isDirIn reports whether path names a directory in the tree at root
// as a process chrooted there sees it (resolveIn).
func isDirIn(root, path string) bool {
	_, st, ok := resolveIn(root, path)
	return ok && st.IsDir()
}

// resolveIn looks path up in the tree at root as a process chrooted
// there would: symbolic links are followed inside root, an absolute
// target from root again (at most maxLinks of them, as the kernel's
// MAXSYMLINKS bounds a path walk), and .. stops at root. It returns the
// path, links resolved, within root, and what it names there; false if it
// names nothing.
func resolveIn(root, path string) (string, os.FileInfo, bool) {
	const maxLinks = 40
	cur := "/" // resolved so far, within root
	st, err := os.Lstat(root)
	if err != nil {
		return "", nil, false
	}
	rest := strings.Split(path, "/")
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		if !st.IsDir() {
			return "", nil, false // a component after a file
		}
		next := filepath.Join(cur, c)
		if st, err = os.Lstat(filepath.Join(root, next)); err != nil {
			return "", nil, false
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", nil, false
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", nil, false
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
		// What the link's directory is, for the next component.
		if st, err = os.Lstat(filepath.Join(root, cur)); err != nil {
			return "", nil, false
		}
	}
	return cur, st, true
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return guestabi.StatusSignalBase + int(ws.Signal())
		}
		return ee.ExitCode()
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		return guestabi.StatusNotFound
	default:
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		return guestabi.StatusNotExecutable
	}
}

// tiocmOUT1 is TIOCM_OUT1 (include/uapi/asm-generic/termios.h), which
// x/sys/unix defines only for the architectures that differ from it.
const tiocmOUT1 = 0x2000

// openJobInput makes the job port raw and then, if out1 (the job's
// input is not on its virtio port), lets vmm send the job's
// input: vmm's job UART holds it until the guest raises OUT1
// (devices/serial's ReceiveOnOUT1), because Linux starts receiving at
// open with the line discipline still cooked, and input arriving then
// would be echoed back into the job's output, have CR turned into LF,
// and wait for a newline. The serial core hands TIOCM_OUT1 to the 8250
// driver, which writes it to MCR. OUT1 is raised even when the tty could
// not be made raw: cooked input is better than none, which would leave
// the job waiting for ever.
func openJobInput(tty *os.File, out1 bool) {
	if err := makeRaw(tty); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job port: raw mode: %v\n", err)
	}
	if out1 {
		raiseOUT1(tty)
	}
}

// raiseOUT1 lets vmm send the job's input to the job port (openJobInput).
func raiseOUT1(tty *os.File) {
	if err := unix.IoctlSetPointerInt(int(tty.Fd()), unix.TIOCMBIS, tiocmOUT1); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: job port: raise OUT1 (TIOCMBIS): %v; the job gets no input\n", err)
	}
}

// makeRaw turns off the tty's line discipline so the job's bytes reach
// the host as written (no \n to \r\n, no echo of its input), and turns
// on hardware flow control (CRTSCTS): with it, the tty drops RTS when
// its buffers fill behind a job slower to read its stdin than vmm sends
// it, and vmm holds the input until RTS comes back. Without it Linux's
// serial core throttles nothing and drops what its buffers cannot hold
// (devices/serial's rxOpen). vmm's port always presents CTS, so output
// never waits for it.
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag = t.Cflag&^(unix.CSIZE|unix.PARENB) | unix.CS8 | unix.CRTSCTS
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// jobStderr returns a pipe for the job's stderr whose bytes go to the
// console unchanged, and the finish that waits for them as portStdout's
// does. The console is a terminal: its output processing (OPOST) is
// turned off so that \n stays \n. The kernel's own messages do not go
// through the terminal, so they keep their \r\n; vmm-init's own lines
// are then plain \n, which is what a log or a file wants.
func jobStderr(console *os.File) (*os.File, func(), error) {
	fd := int(console.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		t.Oflag &^= unix.OPOST
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
			return nil, nil, fmt.Errorf("console output processing: %w", err)
		}
	}
	return pipeCopy(console, nil)
}

// drain waits until the UART has sent everything the job wrote (tcdrain):
// the exit port stops the VM at once, and bytes still queued in the tty
// would be lost.
func drain(f *os.File) { unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1) }

// saveOut writes OutDir as a tar stream onto the disk whose serial is
// guestabi.OutSerial, which vmm unpacks on the host.
func saveOut() error {
	dev, err := findOutDisk()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	skipped := 0
	defer func() {
		if skipped > maxSkipWarnings {
			fmt.Fprintf(os.Stderr, "vmm-init: -out: skipped %d more special files\n", skipped-maxSkipWarnings)
		}
	}()
	err = filepath.WalkDir(guestabi.OutDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(guestabi.OutDir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // gone since the directory was read
		}
		if err != nil {
			return err
		}
		var target string
		switch m := info.Mode(); {
		case m.IsDir(), m.IsRegular():
		case m&fs.ModeSymlink != 0:
			// vmm keeps the links that stay inside -out and names
			// the ones it skips.
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			if skipped++; skipped <= maxSkipWarnings {
				fmt.Fprintf(os.Stderr, "vmm-init: -out: %s: skipped: only files, directories and symbolic links come back, not a %s\n", rel, kindName(m))
			}
			return nil
		}
		h, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			// The header is written: the entry must have its size, or
			// the archive would end here and every later file with it.
			fmt.Fprintf(os.Stderr, "vmm-init: -out: %s: %v; it comes back as zeros\n", rel, err)
			_, err = io.CopyN(tw, zeros{}, h.Size)
			return err
		}
		defer src.Close()
		// Exactly the size the header gave: a file that grew or shrank
		// since (a writer the job left, before endLeftovers) must not
		// end the archive early, which would drop every file after it.
		n, err := io.CopyN(tw, src, h.Size)
		if err == io.EOF {
			fmt.Fprintf(os.Stderr, "vmm-init: -out: %s: shrank while it was copied; padded with zeros\n", rel)
			_, err = io.CopyN(tw, zeros{}, h.Size-n)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("%s: %w (output larger than the -out disk?)", dev, err)
	}
	return f.Sync()
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// maxSkipWarnings is how many skipped files saveOut names on the console
// before it only counts them.
const maxSkipWarnings = 10

// kindName names a file mode that -out does not carry.
func kindName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

func findOutDisk() (string, error) {
	paths, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimRight(string(b), "\x00\n ") == guestabi.OutSerial {
			return "/dev/" + filepath.Base(filepath.Dir(p)), nil
		}
	}
	return "", fmt.Errorf("no disk with serial %q (is virtio_blk loaded?)", guestabi.OutSerial)
}
