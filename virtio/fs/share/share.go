// Package share serves one host directory to a FUSE client (a virtio-fs
// guest), confined to that directory. It is its own package because it
// is the part of virtio-fs that touches the host file system on a
// guest's behalf, and so the part whose security matters: it knows
// nothing of virtqueues (package fs carries requests to it as byte
// streams), and the device knows nothing of files.
//
// # Protocol
//
// The FUSE wire format (linux/fuse.h) is go-fuse's: Handle validates a
// request's framing itself and hands it to fuse.ProtocolServer, which
// decodes the arguments, calls this package's fuse.RawFileSystem and
// encodes the reply straight into the reply buffers. ProtocolServer is
// go-fuse's own entry point for virtio-fs (its virtiofs package drives it
// the same way, with a chain's readable and writable buffers as the two
// iovecs), so there is no /dev/fuse anywhere. fuse.Server fed through a
// SOCK_SEQPACKET socketpair given as mount point /dev/fd/N was tried and
// rejected: it works, but copies every request and reply through the
// socket, truncates a message larger than its read buffer without an
// error (a 200 KiB WRITE came back as 128 KiB written), cannot pass a
// 1 MiB message at all (EMSGSIZE), loses a reader goroutine for each
// malformed message, logs to the process-global logger, and tries FUSE
// ioctls on the socket. ProtocolServer is marked experimental in go-fuse
// v2.12.1; go.mod pins that version, and an API change would break the
// build, not the behaviour.
//
// Handle checks what go-fuse does not, before go-fuse sees the request:
// that the header's length is the request's length; that the opcode is
// one this server implements (everything else is ENOSYS without reaching
// go-fuse); that the request is at least as long as its fixed arguments;
// that it is at most MaxWrite plus the WRITE header for WRITE and
// maxArgs for everything else; that INIT came first and speaks protocol
// 7.x; and, on a read-only share, that it does not modify anything
// (EROFS). The request is copied out of guest memory (except WRITE's
// data), so the guest cannot change a name after it was checked, and the
// reply buffers are cut to MaxReply, so a READ of 4 GiB costs nothing:
// go-fuse answers a request whose reply cannot fit with an error without
// running it. The one reply go-fuse cannot size from its request,
// READLINK's, must find PATH_MAX-1 bytes (what Linux gives it) or gets
// ERANGE.
//
// # Confinement
//
// Every node the guest knows (a FUSE node ID) is an O_PATH file
// descriptor, as in virtiofsd. The guest names files only as (directory
// node, name) pairs, and a name is looked up as one component with
// openat(dir, name, O_PATH|O_NOFOLLOW): "", ".", "..", and names with a
// '/' are rejected, so a lookup can only reach a direct child of a
// directory inside the share. Symbolic links are never followed on the
// host: a lookup opens the link itself, READLINK returns its text, and
// the guest resolves it in its own view of the share. Files are opened
// for I/O by reopening their O_PATH descriptor through /proc/self/fd/N,
// which names the inode itself rather than a path, and only for regular
// files and directories (never symlinks, devices, FIFOs or sockets, so a
// device node or FIFO someone put in the share is never opened on the
// host). Operations that create a name (CREATE, MKNOD, MKDIR, SYMLINK,
// LINK, RENAME) work relative to the parent's descriptor with the
// *at(2) calls, and nothing is ever resolved by path from the share's
// root. So "..", absolute symlinks, and a symlink swapped in for a
// directory between two requests cannot reach outside the directory.
//
// What the guest cannot do at all: create device nodes, FIFOs or sockets
// (MKNOD of anything but a regular file is EPERM, RENAME_WHITEOUT is
// EINVAL), or make set-user-ID or set-group-ID files (those bits are
// cleared from every mode it sets with CREATE, MKNOD and SETATTR, and
// set-user-ID from directories: set-group-ID on a directory gives no
// privilege, and the host kernel gives it to directories made in one),
// or keep them on a file it writes (dropSetID: a root vmm's writes do
// not clear them, as anyone else's do). A read-only share is enforced here, on the host side, with
// EROFS for every request that would change the directory.
//
// # Ownership
//
// Files are created by vmm's user. When vmm runs as root (effective UID
// 0), a new file is then given to the caller's UID and GID as the
// request header gives them (or just the UID when the directory is
// set-group-ID), as virtiofsd does by switching its fsuid; otherwise
// they stay vmm's user's. SETATTR's chown is passed on, except that an
// unprivileged vmm ignores EPERM from it: the guest then sees the chown
// succeed and the owner unchanged, which keeps tools that chown what
// they unpack (tar, cp -a, package managers) working on a share owned by
// an ordinary user.
//
// # Limits
//
// Each node the guest has looked up holds a host file descriptor until
// the guest forgets it (the kernel does so when it evicts the inode),
// and so does each open file; together, over every share of one vmm
// (Budget), they are capped at half the process's RLIMIT_NOFILE, beyond
// which lookups and opens fail with ENFILE rather than starve the rest
// of vmm of descriptors. Inode
// numbers are the host's, so files on two host file systems mounted
// inside the share may show the same number. Extended attributes, file
// locks (the guest kernel keeps them locally), ioctl, poll,
// copy_file_range, tmpfile and statx are ENOSYS. go-fuse answers
// requests for the node ID 2^64-1 and for the name ".go-fuse-epoll-hack"
// in the root directory itself (a workaround for its own /dev/fuse
// mounts), so a host file of that name in the root of the share is
// invisible to the guest; nothing on the host is touched for them.
package share

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
	"github.com/vmm-dev/vmm/virtio"
)

const (
	// MaxWrite is the largest WRITE the server accepts and the max_write
	// it announces in its INIT reply (with max_pages = MaxWrite/4096,
	// which also bounds READ and READDIR). 1 MiB is what Linux allows a
	// FUSE server by default (fs.fuse.max_pages_limit = 256 pages);
	// go-fuse announces less if the host lowered that limit, which only
	// makes the guest send smaller requests.
	MaxWrite = 1 << 20
	// MaxReply is the most Handle writes for one request: the out header
	// and MaxWrite bytes of READ or READDIR data. Reply buffers beyond it
	// are ignored.
	MaxReply = outHeaderSize + MaxWrite
	// MaxRequest is the longest request Handle accepts: a WRITE of
	// MaxWrite bytes. Every other request is at most maxArgs long.
	MaxRequest = writeHeaderSize + MaxWrite

	// inHeaderSize is struct fuse_in_header and outHeaderSize struct
	// fuse_out_header (linux/fuse.h).
	inHeaderSize  = 40
	outHeaderSize = 16
	// writeHeaderSize is fuse_in_header and struct fuse_write_in, after
	// which a WRITE's data starts.
	writeHeaderSize = inHeaderSize + 40
	// maxArgs bounds every request but WRITE. The longest the Linux
	// client sends is SYMLINK: a name of at most NAME_MAX (255) bytes and
	// a target of at most PATH_MAX (4096) bytes, both NUL-terminated.
	maxArgs = 16 << 10

	// kernelMajor is the FUSE protocol major version and minMinor the
	// oldest minor version go-fuse speaks (linux/fuse.h,
	// FUSE_KERNEL_VERSION; go-fuse's _MINIMUM_MINOR_VERSION).
	kernelMajor = 7
	minMinor    = 12

	// timeout is how long the guest may cache a lookup (a name's
	// absence too) or attributes before asking again: long enough to spare most repeated lookups of
	// a build, short enough that a change made on the host shows within
	// a second (virtiofsd's cache=auto uses the same).
	timeout = time.Second

	// maxBackground is the max_background announced at INIT: how many
	// asynchronous requests (readahead, writeback) the guest keeps in
	// flight.
	maxBackground = 32
)

// Options configure New.
type Options struct {
	// Dir is the directory to share.
	Dir string
	// ReadOnly refuses every request that would change it, with EROFS.
	ReadOnly bool
	// Logf reports what the guest got wrong (malformed requests), at most
	// once a second; nil means log.Printf.
	Logf func(format string, args ...any)
	// Budget is shared by every share of one vmm; nil gives this one a
	// budget of its own (NewBudget).
	Budget *Budget
}

// Server answers FUSE requests on one shared directory. Handle may be
// called from several goroutines at once; Reset waits for the requests
// in flight. Close must come last.
type Server struct {
	dir      string
	readOnly bool
	log      limiter

	fs   *fsys
	opts fuse.MountOptions

	// mu orders INIT and DESTROY, which start and end a session and
	// replace ps, against every other request (which take it shared).
	mu          sync.RWMutex
	ps          *fuse.ProtocolServer
	initialized bool

	// scratch holds *scratch, one per request in progress.
	scratch sync.Pool
}

// scratch is what Handle builds for one request besides go-fuse's own
// allocations: the request's private copy and the buffer lists around
// it. Requests are handled on several workers at once, each taking one
// from Server.scratch, so a request allocates none of it. Nothing keeps
// a reference into it past Handle: go-fuse copies the names it passes on
// into strings, and the file system reads arguments only during the
// call.
type scratch struct {
	args [maxArgs]byte
	req  virtio.Buffers
	out  virtio.Buffers
}

// DirError is a directory New could not share, and why: a caller that
// knows how the user named it (vmm's -share) can say so with Err.
type DirError struct {
	Dir string
	Err error
}

func (e *DirError) Error() string { return "shared directory " + e.Dir + ": " + e.Err.Error() }
func (e *DirError) Unwrap() error { return e.Err }

// New opens dir for sharing. It must exist, be a directory and be
// readable; /proc/self/fd must be usable (the server reopens files
// through it).
func New(o Options) (*Server, error) {
	root, err := openRoot(o.Dir)
	if err != nil {
		return nil, &DirError{Dir: o.Dir, Err: err}
	}
	s := &Server{dir: o.Dir, readOnly: o.ReadOnly}
	s.scratch.New = func() any { return new(scratch) }
	s.log.logf = o.Logf
	if s.log.logf == nil {
		s.log.logf = log.Printf
	}
	budget := o.Budget
	if budget == nil {
		budget = NewBudget()
	}
	if s.fs, err = newFsys(root, o.ReadOnly, budget, callsFor(root)); err != nil {
		return nil, &DirError{Dir: o.Dir, Err: err}
	}
	s.opts = fuse.MountOptions{
		MaxWrite:      MaxWrite,
		MaxBackground: maxBackground,
		DisableXAttrs: true,
		DisableSplice: true,
		// Not offered even when the guest does: passthrough needs
		// /dev/fuse backing files, and NO_OPEN_SUPPORT would let the
		// guest skip OPEN, which this server implements.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_NO_OPEN_SUPPORT | fuse.CAP_ALLOW_IDMAP,
		Logger:               log.New(logWriter{&s.log}, "share: go-fuse: ", 0),
	}
	return s, nil
}

// callsFor says how the server makes its calls: raw (package rawsys)
// when the directory, and everything mounted below it when vmm starts,
// is on a local file system (rawsys.LocalFD), and through Go's scheduler
// when it is not or that cannot be told, so that a network file system
// that stops answering holds one thread, not the whole of vmm.
func callsFor(root int) rawsys.Calls {
	if local, err := rawsys.LocalFD(root); err != nil || !local {
		return rawsys.Calls{}
	}
	return rawsys.Raw()
}

// openRoot checks dir and returns an O_PATH descriptor of it.
func openRoot(dir string) (int, error) {
	if dir == "" {
		return -1, errors.New("no directory given")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return -1, unwrapPath(err)
	}
	if !st.IsDir() {
		return -1, errors.New("not a directory")
	}
	// Reading one entry proves read and search permission, which is
	// what the guest's first READDIR will need.
	d, err := os.Open(dir)
	if err != nil {
		return -1, unwrapPath(err)
	}
	_, err = d.Readdirnames(1)
	d.Close()
	if err != nil && err != io.EOF {
		return -1, fmt.Errorf("not readable: %w", unwrapPath(err))
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var pst unix.Stat_t
	if err := unix.Stat(procPath(fd), &pst); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("/proc/self/fd is not usable (is /proc mounted?): %w", err)
	}
	return fd, nil
}

// unwrapPath drops the *PathError's repetition of the path, which the
// caller already puts in front of the message.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// fdBudget is how many host descriptors the guest may hold through
// nodes and open files: half the soft RLIMIT_NOFILE (which Go raises to
// the hard limit at start-up), leaving the rest to vmm.
func fdBudget() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 1 << 20
	}
	return max(int(r.Cur/2), 64)
}

// Close forgets the session and closes the shared directory. The server
// must not be used afterwards.
func (s *Server) Close() error {
	s.Reset()
	s.fs.close()
	return nil
}

// Reset forgets the session: every node and open file is closed and the
// next request must be INIT, as after the guest's driver reset the
// device.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fs.reset()
	s.ps = nil
	s.initialized = false
}

// Handle answers one FUSE request. in holds the request (the readable
// part of a virtio-fs chain: fuse_in_header, arguments, WRITE data) and
// out receives the reply (fuse_out_header and what follows). It returns
// how many bytes of out it wrote, which is 0 for requests that have no
// reply (FORGET, BATCH_FORGET) and when out cannot hold even an error
// reply. Buffers may be split anywhere and may alias memory the client
// changes concurrently. Handle never panics on what it is given.
func (s *Server) Handle(in, out virtio.Buffers) int {
	var hb [inHeaderSize]byte
	total := in.Len()
	if n, _ := in.ReadAt(hb[:], 0); n < inHeaderSize {
		s.log.printf("share: request of %d bytes is shorter than its header", total)
		return errorReply(out, 0, unix.EINVAL)
	}
	le := binary.LittleEndian
	length := le.Uint32(hb[0:])
	opcode := le.Uint32(hb[4:])
	unique := le.Uint64(hb[8:])
	if int64(length) != int64(total) {
		s.log.printf("share: request %d (opcode %d) says it is %d bytes long but is %d", unique, opcode, length, total)
		return errorReply(out, unique, unix.EINVAL)
	}
	op, ok := lookupOp(opcode)
	if !ok {
		return errorReply(out, unique, unix.ENOSYS)
	}
	limit := maxArgs
	if opcode == opWrite {
		limit = MaxRequest
	}
	if total < op.minLen || total > limit {
		s.log.printf("share: %s request %d of %d bytes (want %d to %d)", op.name, unique, total, op.minLen, limit)
		return errorReply(out, unique, unix.EINVAL)
	}
	if want := outHeaderSize + op.minReply; !op.noReply && out.Len() < want {
		s.log.printf("share: %s request %d has %d bytes for its reply, want %d", op.name, unique, out.Len(), want)
		return errorReply(out, unique, unix.ERANGE) // 0 when not even an error fits
	}

	// A private copy of the request, so neither go-fuse nor the file
	// system reads a name or an argument twice from memory the guest can
	// change. WRITE's data stays in place: it only ever becomes file
	// content, and copying up to 1 MiB per write would cost more than
	// everything else a write does.
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	var req virtio.Buffers
	if opcode == opWrite {
		hdr := sc.args[:writeHeaderSize]
		in.ReadAt(hdr, 0)
		if size := binary.LittleEndian.Uint32(hdr[inHeaderSize+16:]); int64(size) != int64(total-writeHeaderSize) {
			s.log.printf("share: WRITE request %d: size %d but %d data bytes", unique, size, total-writeHeaderSize)
			return errorReply(out, unique, unix.EINVAL)
		}
		req = in.AppendRange(append(sc.req[:0], hdr), writeHeaderSize, total-writeHeaderSize)
	} else {
		b := sc.args[:total]
		in.ReadAt(b, 0)
		req = append(sc.req[:0], b)
	}
	sc.req = req // keeps what the appends grew for the next request
	if out.Len() > MaxReply {
		out = out.AppendRange(sc.out[:0], 0, MaxReply)
		sc.out = out
	}

	switch opcode {
	case opInit:
		return s.init(req, out, unique)
	case opDestroy:
		return s.destroy(req, out, unique)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.initialized {
		s.log.printf("share: %s request %d before INIT", op.name, unique)
		return errorReply(out, unique, unix.EIO)
	}
	if s.readOnly && op.mutates {
		return errorReply(out, unique, unix.EROFS)
	}
	n, _ := s.serve(req, out, unique)
	return n
}

// init starts a session: a new ProtocolServer, and no nodes but the root
// (a guest that sends INIT again has forgotten every node ID it had).
func (s *Server) init(req, out virtio.Buffers, unique uint64) int {
	le := binary.LittleEndian
	if major, minor := le.Uint32(req[0][inHeaderSize:]), le.Uint32(req[0][inHeaderSize+4:]); major != kernelMajor || minor < minMinor {
		s.log.printf("share: INIT request %d for FUSE protocol %d.%d, want 7.%d or later", unique, major, minor, minMinor)
		return errorReply(out, unique, unix.EPROTO)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fs.reset()
	s.ps = fuse.NewProtocolServer(s.fs, &s.opts)
	n, ok := s.serve(req, out, unique)
	s.initialized = ok
	return n
}

// destroy ends the session (the guest unmounted): it answers, then
// closes every node and open file.
func (s *Server) destroy(req, out [][]byte, unique uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.initialized {
		return errorReply(out, unique, unix.EIO)
	}
	n, _ := s.serve(req, out, unique)
	s.fs.reset()
	s.ps = nil
	s.initialized = false
	return n
}

// serve runs one request through go-fuse, with s.mu held, and reports
// whether it succeeded. A request go-fuse refuses (a reply that cannot
// fit in out) gets an error reply: go-fuse refuses before running it, so
// nothing happened.
func (s *Server) serve(req, out virtio.Buffers, unique uint64) (int, bool) {
	n, st := s.ps.HandleRequest(req, out)
	if st != fuse.OK {
		return errorReply(out, unique, syscall.Errno(st)), false
	}
	if n == 0 {
		return 0, true // no reply (FORGET)
	}
	var oh [outHeaderSize]byte
	out.ReadAt(oh[:], 0)
	if int64(binary.LittleEndian.Uint32(oh[0:])) != int64(n) {
		// A reply go-fuse cut short, for want of room it does not
		// check: Handle checks the room for every request that could
		// need more than go-fuse checks (READLINK), so this is a
		// safety net. The guest gets ERANGE instead of a reply whose
		// length it cannot trust.
		return errorReply(out, unique, unix.ERANGE), false
	}
	return n, binary.LittleEndian.Uint32(oh[4:]) == 0
}

// errorReply writes a fuse_out_header carrying -errno and returns its
// length, or 0 when out is too short for it.
func errorReply(out virtio.Buffers, unique uint64, errno syscall.Errno) int {
	if out.Len() < outHeaderSize {
		return 0
	}
	var b [outHeaderSize]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], outHeaderSize)
	le.PutUint32(b[4:], uint32(-int32(errno)))
	le.PutUint64(b[8:], unique)
	out.WriteAt(b[:], 0)
	return outHeaderSize
}

// procPath names the inode behind fd without resolving any path: the
// /proc/self/fd magic link. Callers hold fd open while they use it.
func procPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// limiter passes at most one message a second to logf, so a guest
// hammering the server with bad requests cannot flood the host's log.
type limiter struct {
	logf       func(format string, args ...any)
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

func (l *limiter) printf(format string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Before(l.next) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.next = now.Add(time.Second)
	if l.suppressed > 0 {
		format += " (%d more suppressed)"
		args = append(args, l.suppressed)
		l.suppressed = 0
	}
	l.mu.Unlock()
	l.logf(format, args...)
}

// logWriter is go-fuse's Logger output, rate-limited like our own.
type logWriter struct{ l *limiter }

func (w logWriter) Write(p []byte) (int, error) {
	w.l.printf("%s", trimNewline(p))
	return len(p), nil
}

func trimNewline(p []byte) string {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	return string(p)
}
