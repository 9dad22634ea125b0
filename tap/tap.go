// Package tap opens a Linux TAP interface as a frame-at-a-time backend for
// a virtual NIC.
//
// The interface is opened with IFF_VNET_HDR, so every frame read or
// written carries a 12-byte struct virtio_net_hdr_v1 in front: checksum
// and segmentation offload metadata travel with the frame, and the guest
// and host kernels can exchange 64 KiB GSO frames instead of MTU-sized
// ones. 12 bytes (with num_buffers) is the header virtio 1.x always uses,
// so a virtio-net device can hand the guest's header to the TAP unchanged.
//
// The file descriptor is non-blocking and wrapped with os.NewFile, so it
// is registered with Go's netpoller: a Read with no frame queued parks
// only the calling goroutine until epoll reports the fd readable, and a
// Write that would block (EAGAIN) parks until it is writable. Nothing
// polls on a timer and no thread is tied up, and because the poller
// supports deadlines, SetReadDeadline can wake a blocked reader when its
// device is reset.
//
// The package does not import virtio: any device that wants frames with
// a virtio-net header can use it.
package tap

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// HeaderSize is the length of the header in front of every frame: struct
// virtio_net_hdr_v1 (include/uapi/linux/virtio_net.h), num_buffers
// included, as virtio v1.2 §5.1.6 defines it.
const HeaderSize = 12

// Offload flags for SetOffload (include/uapi/linux/if_tun.h): which GSO
// and checksum-offloaded frames the TAP may hand to the reader.
const (
	OffloadCsum   = unix.TUN_F_CSUM    // partial checksums
	OffloadTSO4   = unix.TUN_F_TSO4    // TCP segmentation, IPv4
	OffloadTSO6   = unix.TUN_F_TSO6    // TCP segmentation, IPv6
	OffloadTSOECN = unix.TUN_F_TSO_ECN // TSO frames with ECN/CWR set
	OffloadUFO    = unix.TUN_F_UFO     // UDP fragmentation offload
)

// tunPath is the clone device TUNSETIFF attaches interfaces through.
const tunPath = "/dev/net/tun"

// Tap is one open TAP interface. Read and Write may run concurrently
// with each other (one reader and one writer goroutine).
type Tap struct {
	f    *os.File
	name string

	// Every read and write is a raw call (package rawsys says why):
	// reads through x, writes through raw.
	x   *rawsys.File
	raw syscall.RawConn

	// Write's and WriteVectors' state, so that they allocate nothing:
	// writevOnce bound once, the iovec array it fills (maxVectors
	// entries) and its result. Write's frame is its one vector.
	wvFn  func(fd uintptr) bool
	wvIov []unix.Iovec
	wvLen int
	wvN   int
	wvErr error
}

// maxVectors is the most buffers WriteVectors takes for one frame. A
// Linux guest sends a frame in at most MAX_SKB_FRAGS (17) pieces plus
// its linear part and header (drivers/net/virtio_net.c, xmit_skb); 64
// leaves room for other drivers and stays far below IOV_MAX (1024).
const maxVectors = 64

// MaxVectors is the most buffers WriteVectors takes for one frame.
func (t *Tap) MaxVectors() int { return maxVectors }

// ValidateName checks name the way the kernel's dev_valid_name does
// (net/core/dev.c), so a bad name fails with a clear message before any
// syscall: 1 to IFNAMSIZ-1 (15) bytes, not "." or "..", and no '/', ':',
// NUL or whitespace.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("tap: empty interface name")
	case len(name) > unix.IFNAMSIZ-1:
		return fmt.Errorf("tap %q: interface name longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("tap %q: not a valid interface name", name)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '/', ':', 0, ' ', '\t', '\n', '\v', '\f', '\r':
			return fmt.Errorf("tap %q: interface name contains %q", name, c)
		}
	}
	return nil
}

// Open creates the TAP interface name, or attaches to it when it exists
// (a persistent TAP made with `ip tuntap add`). An interface Open created
// disappears on Close. Opening needs CAP_NET_ADMIN unless the interface
// is persistent and owned by the caller.
func Open(name string) (*Tap, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("tap %s: open %s: %w (load the tun module: modprobe tun)", name, tunPath, err)
		}
		return nil, fmt.Errorf("tap %s: open %s: %w", name, tunPath, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()

	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("tap %s: TUNSETIFF: %w (creating a TAP needs CAP_NET_ADMIN: run as root or grant the capability)", name, err)
		}
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("tap %s: TUNSETIFF: %w (in use, or exists with other flags than IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)", name, err)
		}
		if errors.Is(err, unix.EINVAL) {
			// tun_set_iff (drivers/net/tun.c): a device of that name
			// exists and is not a TAP, or a TAP made multi-queue; or the
			// name's pattern is not one %d.
			return nil, fmt.Errorf("tap %s: TUNSETIFF: %w (an interface of that name that is not a TAP vmm can attach, such as lo, eth0 or a multi-queue TAP; or a name pattern other than one %%d)", name, err)
		}
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	// The kernel may have expanded a "%d" pattern in the name.
	name = ifr.Name()
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ %d: %w", name, HeaderSize, err)
	}
	// virtio 1.x headers are little-endian whatever the host is (virtio
	// v1.2 §1.4); the TAP assumes host order for legacy devices unless
	// told otherwise.
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		return nil, fmt.Errorf("tap %s: TUNSETVNETLE: %w", name, err)
	}
	// Until the guest negotiates offloads the TAP must not hand us
	// frames that need them.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		return nil, fmt.Errorf("tap %s: TUNSETOFFLOAD 0: %w", name, err)
	}
	// fd is non-blocking, so os.NewFile registers it with the netpoller.
	f := os.NewFile(uintptr(fd), tunPath+":"+name)
	if f == nil {
		return nil, fmt.Errorf("tap %s: bad file descriptor %d", name, fd)
	}
	t := &Tap{f: f, name: name}
	if t.raw, err = f.SyscallConn(); err != nil {
		// fd is closed by the deferred cleanup above, not through f.
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	if t.x, err = rawsys.NewFile(f); err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	t.wvFn = t.writevOnce
	t.wvIov = make([]unix.Iovec, maxVectors)
	ok = true
	return t, nil
}

// Name is the interface's name as the kernel knows it.
func (t *Tap) Name() string { return t.name }

// Read reads one frame, with its HeaderSize-byte header in front, into p.
// It blocks (parking the goroutine in the netpoller) until a frame is
// queued, the read deadline passes or the Tap is closed. A frame longer
// than p is truncated by the kernel, so p should hold HeaderSize plus
// 65535 plus an Ethernet header when offloads are on.
func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.x.Read(p)
	if err != nil {
		return 0, fmt.Errorf("tap %s: %w", t.name, err)
	}
	return n, nil
}

// TryRead reads one frame into p if one is queued, and returns ok false
// at once if none is: the receive worker uses it to tell a burst of
// frames from the end of one. Not for concurrent use with itself.
func (t *Tap) TryRead(p []byte) (n int, ok bool, err error) {
	n, ok, err = t.x.TryRead(p)
	if err != nil {
		return 0, false, fmt.Errorf("tap %s: %w", t.name, err)
	}
	return n, ok, nil
}

// rawErr is the error of a write whose raw connection itself failed:
// its deadline passed, or, the only other way it fails, the file was
// closed, with an error of package poll's that os.File's Write would
// have turned into os.ErrClosed.
func (t *Tap) rawErr(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("tap %s: %s: %w", t.name, op, err)
	}
	return fmt.Errorf("tap %s: %s: %w (%v)", t.name, op, os.ErrClosed, err)
}

// Write sends one frame, with its header in front. The kernel rejects a
// header it cannot honour (EINVAL) and fails with EIO while the
// interface is down.
func (t *Tap) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	t.wvIov[0].Base = &p[0]
	t.wvIov[0].SetLen(len(p))
	t.wvLen = 1
	return t.writeVectors("write")
}

// WriteVectors sends one frame, header in front, gathered from bufs with
// one writev(2): a virtio-net device passes the guest's TX buffers as
// they are, rather than copying them into a frame first. The kernel
// copies the frame out before the call returns, so bufs may change
// afterwards (and a guest changing them during the call changes only
// the frame it sends). At most MaxVectors buffers; it waits as Write
// does, and allocates nothing. Not for concurrent use with itself (one
// writer goroutine, as for Write).
func (t *Tap) WriteVectors(bufs [][]byte) (int, error) {
	if len(bufs) > maxVectors {
		return 0, fmt.Errorf("tap %s: write: %d buffers, more than %d", t.name, len(bufs), maxVectors)
	}
	t.wvLen = 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue // an iovec's base must point somewhere
		}
		t.wvIov[t.wvLen].Base = &b[0]
		t.wvIov[t.wvLen].SetLen(len(b))
		t.wvLen++
	}
	return t.writeVectors("write")
}

// writeVectors writes the frame t.wvIov[:t.wvLen] holds, for op.
func (t *Tap) writeVectors(op string) (int, error) {
	t.wvN, t.wvErr = 0, nil
	err := t.raw.Write(t.wvFn)
	n, werr := t.wvN, t.wvErr
	// Drop the references into the caller's buffers.
	clear(t.wvIov[:t.wvLen])
	switch {
	case err != nil:
		return 0, t.rawErr(op, err)
	case werr != nil:
		return n, fmt.Errorf("tap %s: %s: %w", t.name, op, werr)
	}
	return n, nil
}

// writevOnce is WriteVectors' writev(2), run by the raw connection with
// the descriptor held open; it asks to wait for room on EAGAIN.
func (t *Tap) writevOnce(fd uintptr) bool {
	for {
		n, errno := writev(fd, t.wvIov[:t.wvLen])
		switch errno {
		case 0:
			t.wvN, t.wvErr = n, nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			t.wvN, t.wvErr = 0, errno
			return true
		}
	}
}

// SetReadDeadline and SetWriteDeadline bound blocked and future Reads and
// Writes as os.File's do; a past deadline wakes a blocked call with an
// error wrapping os.ErrDeadlineExceeded, which is how a device stops its
// reader without closing the interface.
func (t *Tap) SetReadDeadline(d time.Time) error  { return t.f.SetReadDeadline(d) }
func (t *Tap) SetWriteDeadline(d time.Time) error { return t.f.SetWriteDeadline(d) }

// SetOffload tells the TAP which offloaded frames the reader accepts
// (TUNSETOFFLOAD with the Offload* bits). Frames the reader cannot take
// are segmented or checksummed by the host kernel first.
func (t *Tap) SetOffload(flags uint32) error {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("tap %s: offload %#x: %w", t.name, flags, err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, int(flags))
	}); err != nil {
		return fmt.Errorf("tap %s: offload %#x: %w", t.name, flags, err)
	}
	if ierr != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", t.name, flags, ierr)
	}
	return nil
}

// Close closes the file descriptor, waking pending Reads and Writes with
// an error wrapping os.ErrClosed. A non-persistent interface disappears.
func (t *Tap) Close() error {
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("tap %s: close: %w", t.name, err)
	}
	return nil
}
