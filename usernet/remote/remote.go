// Package remote runs a user network (package usernet) in a process of
// its own, the vmm-net helper, and is both ends of the wire between it
// and vmm: Start, in vmm, gives a virtio-net backend; Serve, in the
// helper, carries frames between that wire and the stack.
//
// Why a process: the user network is gVisor's netstack with DHCP and DNS
// servers, about a third of the code vmm would otherwise link. In one
// binary every vmm pays for it, card or not: Go runs the packages'
// initializers at every start and the kernel maps their code and data
// around every page vmm touches (fault-around), so it was resident in
// each boot. Apart, only a run with -nic user starts it, as QEMU starts
// passt. It also keeps the stack's host sockets out of vmm: vmm's seccomp
// filter allows no socket calls at all, and the helper, whose filter
// allows them, holds no guest memory and no KVM descriptor.
//
// The wire is two socketpairs, both SOCK_SEQPACKET so that one write is
// one message and a reader never sees half of one:
//
//   - frames (the helper's descriptor 3): each message one frame,
//     virtio-net header first (usernet.HeaderSize bytes), in both
//     directions, exactly as the Backend's Read returns and Write takes
//     them;
//   - control (descriptor 4): text messages. The helper sends "ready"
//     once its network is up, or "error TEXT" and exits; then "log TEXT"
//     for what it would log. vmm sends "offload FLAGS" (decimal TUN_F_*
//     flags) when the guest's driver negotiates offloads.
//
// The helper exits when vmm's end of the frames socket closes, which
// the kernel does for vmm however it ends, so a helper never outlives
// its vmm for long, even one killed with SIGKILL.
package remote

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmm-dev/vmm/internal/helperbin"
	"github.com/vmm-dev/vmm/internal/rawsys"
	"github.com/vmm-dev/vmm/usernet/hostfwd"
	"golang.org/x/sys/unix"
)

// HelperName is the helper's file name: vmm looks for it next to its own
// executable, then in $PATH.
const HelperName = "vmm-net"

// Descriptors of the two sockets in the helper.
const (
	FramesFD  = 3
	ControlFD = 4
)

// WireVersion is the wire's version, which vmm passes and the helper
// checks, so that a vmm-net of another build found in $PATH fails at once
// rather than speaking past vmm.
const WireVersion = "1"

// Control messages.
const (
	msgReady   = "ready"
	msgError   = "error "
	msgLog     = "log "
	msgOffload = "offload "
)

// maxControl bounds one control message: a log line longer than this is
// cut.
const maxControl = 4096

// sockBuf is the send buffer asked for on each end: room for several
// 64 KiB GSO frames in flight. The kernel caps it at net.core.wmem_max
// (208 KiB by default), which still holds three.
const sockBuf = 1 << 20

// readyTimeout is how long Start waits for the helper's network to come
// up: a Go program's start, plus its listeners, which takes tens of
// milliseconds on a host and seconds in a nested, emulated one.
const readyTimeout = 30 * time.Second

// closeWait is how long Close waits for the helper to exit once its
// sockets are closed.
const closeWait = 2 * time.Second

// FindHelper is the path of vmm-net: next to the executable of this
// process, else in $PATH.
func FindHelper() (string, error) {
	return helperbin.Find(HelperName, "-nic user runs in")
}

// Config configures Start.
type Config struct {
	// Helper is the path of vmm-net (FindHelper).
	Helper string
	// Forwards are the host ports forwarded into the guest.
	Forwards []hostfwd.Forward
	// NoSandbox runs the helper without its seccomp filter (vmm's
	// -sandbox=off).
	NoSandbox bool
	// Logf reports what the helper logs; nil discards it.
	Logf func(format string, args ...any)
}

// Network is vmm's end of a user network in a helper process. It
// satisfies virtio/net's Backend and TryReader.
type Network struct {
	frames *os.File
	x      *rawsys.File // frames' reads and writes (package rawsys says why)
	ctl    *os.File
	logf   func(format string, args ...any)
	// proc is the helper: reaped on its own, killed through its pidfd
	// (helperbin.Process), as vmm's sandbox allows kill(2) on vmm only.
	proc *helperbin.Process

	// offload is the TUN_F_* flags the guest's driver took last
	// (SetOffload); fit holds every frame to them.
	offload atomic.Uint32

	// ready is closed once the helper's first control message came, or
	// its absence was noticed; readyErr is then why it is not up.
	ready    chan struct{}
	readyErr error
	// logsDone is closed when the goroutine that reads the control
	// socket has returned: after it, logf is never called.
	logsDone chan struct{}

	closeOnce sync.Once
}

// socketpair returns vmm's end (non-blocking, for deadlines) and the
// helper's end of a SOCK_SEQPACKET pair.
func socketpair(name string) (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		// Best effort: the kernel caps the size, and a smaller buffer
		// only means fewer frames in flight.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name), nil
}

// Start runs the helper. Ready says when its network is up, or why it
// did not come up.
func Start(cfg Config) (*Network, error) {
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	frames, hFrames, err := socketpair("user network frames")
	if err != nil {
		return nil, err
	}
	ctl, hCtl, err := socketpair("user network control")
	if err != nil {
		frames.Close()
		hFrames.Close()
		return nil, err
	}
	args := []string{"--wire", WireVersion}
	for _, f := range cfg.Forwards {
		args = append(args, "--hostfwd", f.String())
	}
	if cfg.NoSandbox {
		args = append(args, "--no-sandbox")
	}
	// Frames and control are descriptors 3 and 4, stderr a panic's
	// trace, nothing else. A process group of its own (helperbin.Start),
	// as HelperMain's comment and the README say: the terminal's Ctrl-C
	// (and a shell's kill %1) is for vmm, which ends the helper by
	// closing its sockets once it has stopped the guest, and must not
	// reach the helper while the Go runtime starts, before it can ignore
	// the signal.
	proc, err := helperbin.Start(cfg.Helper, args, []*os.File{nil, nil, os.Stderr, hFrames, hCtl}, nil, syscall.SysProcAttr{})
	hFrames.Close()
	hCtl.Close()
	if err != nil {
		frames.Close()
		ctl.Close()
		return nil, fmt.Errorf("user network: %w", err)
	}
	n := &Network{frames: frames, ctl: ctl, logf: logf, proc: proc, ready: make(chan struct{}), logsDone: make(chan struct{})}
	if n.x, err = rawsys.NewFile(frames); err != nil {
		n.frames.Close()
		n.ctl.Close()
		proc.Release()
		<-proc.Exited()
		return nil, fmt.Errorf("user network: %w", err)
	}
	go func() {
		defer close(n.logsDone)
		n.readyErr = n.awaitReady()
		close(n.ready)
		if n.readyErr == nil {
			n.relayLogs()
		}
	}()
	return n, nil
}

// Ready waits until the helper's network is up, and returns the error
// that kept it from coming up (the helper's own line, such as a
// forwarded port already taken). Start does not wait, so that the
// helper's start overlaps the rest of the machine's; the machine calls
// Ready before the guest runs, and no frame moves before then.
func (n *Network) Ready() error {
	<-n.ready
	return n.readyErr
}

// awaitReady reads the helper's first control message.
func (n *Network) awaitReady() error {
	n.ctl.SetReadDeadline(time.Now().Add(readyTimeout))
	defer n.ctl.SetReadDeadline(time.Time{})
	buf := make([]byte, maxControl)
	for {
		k, err := n.ctl.Read(buf)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("user network: %s did not come up within %v", HelperName, readyTimeout)
		case err != nil:
			return fmt.Errorf("user network: %s exited before its network was up (%v)", HelperName, n.exitStatus())
		}
		m := string(buf[:k])
		switch {
		case m == msgReady:
			return nil
		case strings.HasPrefix(m, msgError):
			return errors.New(strings.TrimPrefix(m, msgError))
		case strings.HasPrefix(m, msgLog):
			n.logf("%s", strings.TrimPrefix(m, msgLog))
		default:
			return fmt.Errorf("user network: %s sent %.40q before it was ready", HelperName, m)
		}
	}
}

// exitStatus is how the helper ended, once it has (waiting up to
// closeWait for it).
func (n *Network) exitStatus() string { return n.proc.Status(closeWait) }

// relayLogs passes the helper's log lines to logf until the control
// socket closes.
func (n *Network) relayLogs() {
	buf := make([]byte, maxControl)
	for {
		k, err := n.ctl.Read(buf)
		if err != nil {
			return
		}
		if m := string(buf[:k]); strings.HasPrefix(m, msgLog) {
			n.logf("%s", strings.TrimPrefix(m, msgLog))
		}
	}
}

// gone is Read's and Write's error once the helper has closed its end.
func (n *Network) gone() error {
	return fmt.Errorf("user network: %s exited (%s)", HelperName, n.exitStatus())
}

// Read waits for the next frame for the guest, virtio-net header first.
func (n *Network) Read(p []byte) (int, error) {
	for {
		k, err := n.x.Read(p)
		if errors.Is(err, io.EOF) {
			return 0, n.gone()
		}
		if err != nil {
			return k, err
		}
		if k, ok := n.fit(p, k); ok {
			return k, nil
		}
	}
}

// TryRead is Read without waiting: ok is false when no frame is queued.
func (n *Network) TryRead(p []byte) (int, bool, error) {
	for {
		k, ok, err := n.tryRead(p)
		if !ok || err != nil {
			return k, ok, err
		}
		if k, ok := n.fit(p, k); ok {
			return k, true, nil
		}
	}
}

func (n *Network) tryRead(p []byte) (int, bool, error) {
	k, ok, err := n.x.TryRead(p)
	switch {
	case errors.Is(err, io.EOF):
		return 0, false, n.gone()
	case err != nil:
		return 0, false, fmt.Errorf("user network: %w", err)
	}
	return k, ok, nil
}

// Write sends the helper a frame from the guest, virtio-net header
// first.
func (n *Network) Write(p []byte) (int, error) {
	k, err := n.x.Write(p)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return k, n.gone()
	}
	return k, err
}

// SetOffload tells the helper which offloaded frames the guest takes.
// Frames the helper made for an earlier driver may still be on the wire:
// Read fits those to flags too (fit).
func (n *Network) SetOffload(flags uint32) error {
	n.offload.Store(flags)
	if _, err := n.ctl.Write([]byte(msgOffload + strconv.FormatUint(uint64(flags), 10))); err != nil {
		return fmt.Errorf("user network: offloads: %w", err)
	}
	return nil
}

// SetReadDeadline and SetWriteDeadline bound Read and Write, as Reset
// needs (virtio/net).
func (n *Network) SetReadDeadline(t time.Time) error  { return n.frames.SetReadDeadline(t) }
func (n *Network) SetWriteDeadline(t time.Time) error { return n.frames.SetWriteDeadline(t) }

// Close closes vmm's ends, which ends the helper, and waits for it to
// go; a helper that has not gone after closeWait (stuck, or stopped) is
// killed. Once Close returns, logf is not called again.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		n.frames.Close()
		n.ctl.Close()
		select {
		case <-n.proc.Exited():
		case <-time.After(closeWait):
			n.kill()
			select {
			case <-n.proc.Exited():
			case <-time.After(closeWait):
			}
		}
		<-n.logsDone
		n.proc.Release()
	})
	return nil
}

// kill ends a helper that did not go when its sockets closed, through
// its pidfd; without one it is left to end by itself (it has nothing
// left to serve), and the user is told which process it is.
func (n *Network) kill() {
	if n.proc.Kill() {
		return
	}
	n.logf("user network: vmm-net (pid %d) did not exit when vmm closed its sockets, and this kernel gives vmm no pidfd to kill it by; leaving it", n.proc.Pid)
}
