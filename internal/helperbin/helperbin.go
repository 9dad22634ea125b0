// Package helperbin finds and starts vmm's helper programs: vmm-net,
// where -nic user's network runs, and vmm-unpack, which decompresses a
// kernel for the kernel cache and unpacks a job's -out. Each is a binary of its own so that vmm neither links
// nor maps code that most runs never use (Go runs every linked package's
// initializers at each start, and the kernel maps code around every page
// touched), and so that what it does with untrusted input happens in a
// process holding no guest memory and no KVM descriptor.
//
// `make vmm` builds them next to vmm, where Find looks first; an
// installed vmm may find them in $PATH instead. Start starts one.
//
// Neither uses os/exec: its Cmd, the goroutines that copy its pipes and
// its LookPath were 29 KB of vmm's code, tables and read-only data, which
// the kernel maps whole in every vmm (it maps the pages around each one
// touched), for three processes vmm starts with descriptors it has
// already opened (issue 12).
package helperbin

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Find returns the path of the helper named name: next to the executable
// of this process, else in $PATH. purpose says what needs it, for the
// error ("-nic user runs in").
func Find(name, purpose string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), name); executable(p) {
			return p, nil
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		// A relative entry (an empty one is the current directory)
		// would make the helper depend on where vmm was started.
		if !filepath.IsAbs(dir) {
			continue
		}
		if p := filepath.Join(dir, name); executable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s the %s helper, which is neither next to vmm nor in $PATH (make vmm builds it)", purpose, name)
}

// executable says p is a regular file this process may execute, as
// exec.LookPath asks (access(2) with the effective IDs): a file of the
// helper's name that is not (a copy that lost its mode, one on a noexec
// mount, one executable only by others) is passed over.
func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS) == nil
}

// Start starts the helper at path with args after its name, files as
// its descriptors 0, 1, 2 and on, env as its environment (nil: vmm's),
// and sys's attributes, with a process group of its own (Setpgid): the
// terminal's Ctrl-C is for vmm, which decides how its helpers end. A nil
// standard descriptor (0 to 2) is /dev/null, as os/exec makes it: a
// helper whose stdout were closed would find its first socket or file
// there. The caller closes its copies of files, and Releases the
// process once it is done with it.
func Start(path string, args []string, files []*os.File, env []string, sys syscall.SysProcAttr) (*Process, error) {
	files = append([]*os.File(nil), files...)
	for len(files) < 3 {
		files = append(files, nil)
	}
	for i := range 3 {
		if files[i] != nil {
			continue
		}
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		defer null.Close()
		files[i] = null
	}
	sys.Setpgid = true
	proc, err := os.StartProcess(path, append([]string{path}, args...), &os.ProcAttr{Env: env, Files: files, Sys: &sys})
	if err != nil {
		return nil, err
	}
	p := &Process{Pid: proc.Pid, pidfd: -1, exited: make(chan struct{})}
	// Opened before the reaper can reap it, so the pidfd names this
	// process and no other that reuses its ID.
	if fd, err := unix.PidfdOpen(proc.Pid, 0); err == nil {
		p.pidfd = fd
	}
	go func() {
		p.state, p.err = proc.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Process is a helper Start started. A goroutine of its own reaps it, so
// that Exited and Status never block on it, and Kill reaches it through
// its pidfd, the one way vmm's sandbox lets vmm signal a process other
// than itself (kill(2) is allowed on vmm only).
type Process struct {
	Pid    int
	exited chan struct{}
	state  *os.ProcessState // once exited is closed
	err    error
	mu     sync.Mutex // pidfd: Kill against Release
	pidfd  int        // -1: none (a kernel before 5.3), or released
}

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// State is how the process ended; call it once Exited is closed.
func (p *Process) State() (*os.ProcessState, error) { return p.state, p.err }

// Status says how the process ended, for a message ("exit status 2",
// "signal: killed"), waiting at most wait for it to: "still running"
// after that.
func (p *Process) Status(wait time.Duration) string {
	select {
	case <-p.exited:
	case <-time.After(wait):
		return "still running"
	}
	if p.err != nil {
		return p.err.Error()
	}
	return p.state.String()
}

// Kill sends SIGKILL through the pidfd, and says whether it could: false
// without one (a kernel with no pidfd_open, or after Release). A process
// that went meanwhile (ESRCH) counts as killed.
func (p *Process) Kill() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return false
	}
	err := unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	return err == nil || err == unix.ESRCH
}

// Release closes the pidfd; Kill does nothing after it. The reaper goes
// on until the process exits.
func (p *Process) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}
