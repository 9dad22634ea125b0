package remote

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// Backend is what Serve carries frames to and from: a usernet.Network,
// which this package does not import so that vmm links none of it.
type Backend interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetOffload(flags uint32) error
}

// maxFrame bounds a frame on the wire, virtio-net header included: the
// largest virtio/net accepts from the guest (a 64 KiB GSO frame and room
// for an Ethernet header with two VLAN tags, after its 12-byte header).
// A longer message is cut by the read that takes it, and dropped.
const maxFrame = 12 + 65536 + 64

// Helper is the helper's end of the wire: descriptors 3 and 4, as Start
// passes them.
type Helper struct {
	frames, ctl *os.File
	x           *rawsys.File // frames' reads and writes (package rawsys says why)
	mu          sync.Mutex   // one control message at a time
}

// HelperFiles opens the helper's end from its inherited descriptors. It
// makes them non-blocking, so they go through Go's network poller: that
// also sets the poller up (epoll_create1, an eventfd) now, before the
// helper's seccomp filter, which allows neither, rather than at the
// stack's first host socket.
func HelperFiles() (*Helper, error) {
	var files []*os.File
	for _, fd := range []int{FramesFD, ControlFD} {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return nil, fmt.Errorf("%s: descriptors %d and %d are not vmm's sockets: vmm starts this helper for -nic user", HelperName, FramesFD, ControlFD)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("%s: descriptor %d: %w", HelperName, fd, err)
		}
		files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("vmm's socket %d", fd)))
	}
	x, err := rawsys.NewFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("%s: descriptor %d: %w", HelperName, FramesFD, err)
	}
	return &Helper{frames: files[0], ctl: files[1], x: x}, nil
}

// send writes one control message, cut at maxControl bytes.
func (h *Helper) send(m string) error {
	if len(m) > maxControl {
		m = m[:maxControl]
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.ctl.Write([]byte(m))
	return err
}

// Logf sends vmm a log line.
func (h *Helper) Logf(format string, args ...any) {
	h.send(msgLog + fmt.Sprintf(format, args...))
}

// Fail tells vmm why the network could not start.
func (h *Helper) Fail(err error) {
	h.send(msgError + err.Error())
}

// Serve says the network is up, then carries frames between vmm and b,
// and offload requests to b, until vmm closes its end (nil) or the wire
// or b fails.
func (h *Helper) Serve(b Backend) error {
	if err := h.send(msgReady); err != nil {
		return fmt.Errorf("%s: %w", HelperName, err)
	}
	errc := make(chan error, 3)
	go func() { errc <- h.toGuest(b) }()
	go func() { errc <- h.fromGuest(b) }()
	go func() { errc <- h.control(b) }()
	return <-errc
}

// toGuest sends vmm every frame the stack has for the guest. A frame the
// socket will not take (too large for its buffer, or no memory for it
// now) is dropped, as a TAP drops; only vmm closing its end stops it.
func (h *Helper) toGuest(b Backend) error {
	buf := make([]byte, maxFrame)
	var last time.Time
	for {
		k, err := b.Read(buf)
		if err != nil {
			return fmt.Errorf("%s: stack: %w", HelperName, err)
		}
		if _, err := h.x.Write(buf[:k]); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				if now := time.Now(); now.Sub(last) >= time.Second {
					last = now
					h.Logf("net: rx: dropped a %d-byte frame: %v", k, err)
				}
				continue
			}
			return wireErr(err)
		}
	}
}

// fromGuest hands the stack every frame the guest sent.
func (h *Helper) fromGuest(b Backend) error {
	buf := make([]byte, maxFrame+1) // a read that fills it was cut
	// A guest can send bad frames as fast as it likes: say so at most
	// once a second.
	var last time.Time
	logf := func(format string, args ...any) {
		if now := time.Now(); now.Sub(last) >= time.Second {
			last = now
			h.Logf(format, args...)
		}
	}
	for {
		k, err := h.x.Read(buf)
		if err != nil {
			return wireErr(err)
		}
		if k > maxFrame {
			logf("net: tx: dropped a frame longer than %d bytes", maxFrame)
			continue
		}
		if _, err := b.Write(buf[:k]); err != nil {
			logf("net: tx: %v", err)
		}
	}
}

// control applies vmm's offload requests.
func (h *Helper) control(b Backend) error {
	buf := make([]byte, maxControl)
	for {
		k, err := h.ctl.Read(buf)
		if err != nil {
			return wireErr(err)
		}
		m := string(buf[:k])
		v, ok := strings.CutPrefix(m, msgOffload)
		if !ok {
			h.Logf("%s: unknown control message %.40q", HelperName, m)
			continue
		}
		flags, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			h.Logf("%s: control message %.40q: %v", HelperName, m, err)
			continue
		}
		if err := b.SetOffload(uint32(flags)); err != nil {
			h.Logf("net: offloads: %v", err)
		}
	}
}

// wireErr is nil for vmm closing its end, the one normal way to stop.
func wireErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return fmt.Errorf("%s: %w", HelperName, err)
}
