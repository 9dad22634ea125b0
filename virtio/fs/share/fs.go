package share

import (
	"math"
	"os"
	"strings"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

const (
	// setID are the mode bits the guest may never set.
	setID = unix.S_ISUID | unix.S_ISGID
	// permBits are the bits of a mode the guest chooses (permissions
	// and sticky); setID among them are cleared.
	permBits = 0o7777
	// pathMax is PATH_MAX (linux/limits.h): the longest symlink target,
	// terminator included.
	pathMax = 4096
	// nameMax is NAME_MAX (linux/limits.h).
	nameMax = 255
	// openPassFlags are the open(2) flags the guest's OPEN and CREATE
	// keep. Everything else is dropped: O_NOFOLLOW (which would refuse
	// the /proc/self/fd magic link), O_DIRECT (guest buffers need not be
	// aligned for the host), O_NONBLOCK, O_NOATIME, O_PATH, O_TMPFILE,
	// O_DIRECTORY, O_NOCTTY and O_CLOEXEC (the server sets its own),
	// and O_CREAT and O_EXCL, which only CREATE uses, its own way.
	openPassFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_SYNC | unix.O_DSYNC
	// renameFlags are RENAME_NOREPLACE and RENAME_EXCHANGE
	// (linux/fs.h); RENAME_WHITEOUT would create a character device.
	renameFlags = unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE
	// fallocModes are the fallocate modes passed on: plain allocation,
	// KEEP_SIZE, PUNCH_HOLE (with KEEP_SIZE) and ZERO_RANGE.
	fallocModes = unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_ZERO_RANGE
	// direntBufSize is the getdents buffer: linux_dirent64 records are
	// never larger than the FUSE dirents they become, so it holds more
	// than one READDIR of a page needs.
	direntBufSize = 32 << 10
	// openReplyFlags are what OPEN and CREATE tell the guest about a
	// file they open: FOPEN_NOFLUSH (linux/fuse.h, Linux 5.16 and
	// later), no FLUSH when the guest closes it. FLUSH would do nothing
	// here (the server keeps no data of its own, and locks stay in the
	// guest's kernel) but cost a round trip on every close(2); older
	// kernels ignore the flag and get the FLUSH answered as before.
	openReplyFlags = fuse.FOPEN_NOFLUSH
	// getattrFH is FUSE_GETATTR_FH (linux/fuse.h).
	getattrFH = 1
	// fsyncData is FUSE_FSYNC_FDATASYNC (linux/fuse.h).
	fsyncData = 1
)

// fsys is the confined file system behind the FUSE protocol: go-fuse's
// RawFileSystem, one method per request. The embedded default answers
// ENOSYS for the requests not implemented here (Handle keeps most of
// them from reaching go-fuse at all).
type fsys struct {
	fuse.RawFileSystem
	t          *table
	readOnly   bool
	privileged bool         // effective UID 0: new files are given to the caller
	sys        rawsys.Calls // raw on a local file system (package rawsys)
	dirents    sync.Pool
	// reads holds *readResult: go-fuse takes a READ's result as an
	// interface and calls its Done once the reply is written, which
	// gives it back, so a READ does not allocate one.
	reads sync.Pool
}

// newFsys takes root, an O_PATH descriptor of the shared directory.
func newFsys(root int, readOnly bool, budget *Budget, sys rawsys.Calls) (*fsys, error) {
	var st unix.Stat_t
	if err := unix.Fstat(root, &st); err != nil {
		unix.Close(root)
		return nil, err
	}
	fs := &fsys{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		t:             newTable(budget, sys),
		readOnly:      readOnly,
		privileged:    os.Geteuid() == 0,
		sys:           sys,
	}
	fs.dirents.New = func() any { b := make([]byte, direntBufSize); return &b }
	fs.reads.New = func() any { return new(readResult) }
	fs.t.setRoot(root, &st)
	return fs, nil
}

func (fs *fsys) reset() { fs.t.reset() }
func (fs *fsys) close() { fs.t.closeAll() }

func (fs *fsys) String() string { return "vmm-share" }

// status turns a host error into the guest's.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	return fuse.ToStatus(err)
}

// checkName accepts a name that denotes exactly one entry of a
// directory: not empty, not "." or "..", no '/', no NUL, at most
// NAME_MAX bytes.
func checkName(name string) fuse.Status {
	switch {
	case name == "" || name == "." || name == "..":
		return fuse.EINVAL
	case len(name) > nameMax:
		return fuse.Status(unix.ENAMETOOLONG)
	case strings.ContainsAny(name, "/\x00"):
		return fuse.EINVAL
	}
	return fuse.OK
}

// retry repeats a system call interrupted by a signal (Go's preemption
// signals among them).
func retry(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// openPath opens the entry name of directory dirfd as an O_PATH
// descriptor without following it: the one way this server ever turns
// a name into a file.
func openPath(sys rawsys.Calls, dirfd int, name string) (fd int, err error) {
	err = retry(func() error {
		fd, err = sys.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

// reopen opens the inode behind O_PATH descriptor fd for I/O. Callers
// make sure it is a regular file or a directory.
func reopen(sys rawsys.Calls, fd, flags int) (nfd int, err error) {
	err = retry(func() error {
		nfd, err = sys.Openat(unix.AT_FDCWD, procPath(fd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		return err
	})
	return nfd, err
}

// reopenPath returns an O_PATH descriptor of the file open as fd.
func reopenPath(sys rawsys.Calls, fd int) (nfd int, err error) {
	err = retry(func() error {
		nfd, err = sys.Openat(unix.AT_FDCWD, procPath(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
		return err
	})
	return nfd, err
}

func fstat(sys rawsys.Calls, fd int, st *unix.Stat_t) error {
	return retry(func() error { return sys.Fstat(fd, st) })
}

// fillAttr converts the host's stat.
func fillAttr(a *fuse.Attr, st *unix.Stat_t) {
	*a = fuse.Attr{
		Ino:       st.Ino,
		Size:      uint64(st.Size),
		Blocks:    uint64(st.Blocks),
		Atime:     uint64(st.Atim.Sec),
		Mtime:     uint64(st.Mtim.Sec),
		Ctime:     uint64(st.Ctim.Sec),
		Atimensec: uint32(st.Atim.Nsec),
		Mtimensec: uint32(st.Mtim.Nsec),
		Ctimensec: uint32(st.Ctim.Nsec),
		Mode:      st.Mode,
		Nlink:     uint32(st.Nlink),
		Owner:     fuse.Owner{Uid: st.Uid, Gid: st.Gid},
		Rdev:      uint32(st.Rdev),
		Blksize:   uint32(st.Blksize),
	}
}

func fillEntry(out *fuse.EntryOut, n *node, st *unix.Stat_t) {
	out.NodeId = n.id
	out.Generation = 0
	out.SetEntryTimeout(timeout)
	out.SetAttrTimeout(timeout)
	fillAttr(&out.Attr, st)
}

// register turns fd, an O_PATH descriptor, into a node with one more
// lookup and describes it in out. It takes fd.
func (fs *fsys) register(fd int, out *fuse.EntryOut) fuse.Status {
	var st unix.Stat_t
	if err := fstat(fs.sys, fd, &st); err != nil {
		fs.sys.Close(fd)
		return status(err)
	}
	return fs.registerStat(fd, &st, out)
}

// registerStat is register for an fd whose stat the caller has.
func (fs *fsys) registerStat(fd int, st *unix.Stat_t, out *fuse.EntryOut) fuse.Status {
	n, err := fs.t.addNode(fd, st)
	if err != nil {
		return status(err)
	}
	fillEntry(out, n, st)
	return fuse.OK
}

// nodeOf returns node id, or ESTALE when the guest has none of that ID.
func (fs *fsys) nodeOf(id uint64) (*node, fuse.Status) {
	n := fs.t.node(id)
	if n == nil {
		return nil, fuse.Status(unix.ESTALE)
	}
	return n, fuse.OK
}

// child looks name up in directory p and registers what it finds.
func (fs *fsys) child(p *node, name string, out *fuse.EntryOut) fuse.Status {
	if st := checkName(name); !st.Ok() {
		return st
	}
	var fd int
	err := p.do(func(pfd int) (err error) {
		fd, err = openPath(fs.sys, pfd, name)
		return err
	})
	if err != nil {
		return status(err)
	}
	return fs.register(fd, out)
}

// parentAndName resolves a request's directory node and checks the name
// it names in it. Every caller makes, removes or renames an entry there,
// so a directory of the host kernel's (isKernelFS: a cgroup, configfs,
// bpffs) is refused with EACCES.
func (fs *fsys) parentAndName(id uint64, name string) (*node, fuse.Status) {
	if st := checkName(name); !st.Ok() {
		return nil, st
	}
	p, st := fs.nodeOf(id)
	if st.Ok() && fs.kernelFile(p) {
		return nil, fuse.EACCES
	}
	return p, st
}

// Lookup answers a name that is not there with a negative entry, node ID
// 0 with an entry timeout (linux/fuse.h: "zero nodeid is same as
// -ENOENT, but with valid timeout"), rather than ENOENT, which the guest
// cannot cache: a dynamic loader probing library directories, a shell
// searching PATH or a build checking for files it is about to make would
// otherwise send a LOOKUP for every miss, each a round trip to the host.
// The guest then misses a file created on the host for up to timeout, as
// it misses changed attributes.
func (fs *fsys) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p, st := fs.nodeOf(h.NodeId)
	if !st.Ok() {
		return st
	}
	st = fs.child(p, name, out)
	if st == fuse.ENOENT {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(timeout)
		return fuse.OK
	}
	return st
}

func (fs *fsys) Forget(id, nlookup uint64) { fs.t.forget(id, nlookup) }

func (fs *fsys) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := fs.nodeOf(in.NodeId)
	if !st.Ok() {
		return st
	}
	var s unix.Stat_t
	if err := n.do(func(fd int) error { return fstat(fs.sys, fd, &s) }); err != nil {
		return status(err)
	}
	out.SetTimeout(timeout)
	fillAttr(&out.Attr, &s)
	return fuse.OK
}

// SetAttr applies mode, owner, size and times, in that order (times last,
// so a truncation does not overwrite the mtime asked for).
func (fs *fsys) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	n, st := fs.nodeOf(in.NodeId)
	if !st.Ok() {
		return st
	}
	v := in.Valid
	if v&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 && (n.isDevice() || fs.kernelFile(n)) {
		// Who may open a host device, or a file of the host kernel's
		// (isKernelFS), is the host's to say: MKNOD is refused for the
		// same reason, and a root vmm's chmod 666 of a copied
		// dev/sda in a container's root would otherwise succeed. An
		// unprivileged vmm's chown, which the host would refuse, is
		// left to look done, as it is for other files (below), so a
		// guest's chown -R over a root file system with dev/ in it
		// goes on.
		if v&fuse.FATTR_MODE != 0 || fs.privileged {
			return fuse.EPERM
		}
		v &^= fuse.FATTR_UID | fuse.FATTR_GID
	}
	err := n.do(func(fd int) error {
		if v&fuse.FATTR_MODE != 0 {
			if n.isSymlink() {
				return unix.EOPNOTSUPP // Linux has no lchmod
			}
			mode := in.Mode & permBits &^ setID
			if n.isDir() {
				// Set-group-ID on a directory gives no privilege: new
				// entries take its group (chmod 2775 on a project
				// directory, which coreutils' chmod also keeps).
				mode |= in.Mode & unix.S_ISGID
			}
			if err := retry(func() error { return unix.Fchmodat(unix.AT_FDCWD, procPath(fd), mode, 0) }); err != nil {
				return err
			}
		}
		if v&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
			uid, gid := -1, -1
			if v&fuse.FATTR_UID != 0 {
				uid = int(in.Uid)
			}
			if v&fuse.FATTR_GID != 0 {
				gid = int(in.Gid)
			}
			err := retry(func() error {
				return fs.sys.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
			})
			// An unprivileged vmm cannot give files away; the guest
			// sees the chown succeed (see the package comment).
			if err != nil && !(err == unix.EPERM && !fs.privileged) {
				return err
			}
		}
		if v&fuse.FATTR_SIZE != 0 {
			if err := fs.truncate(n, fd, in); err != nil {
				return err
			}
		}
		if v&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
			if err := setTimes(n, fd, in); err != nil {
				return err
			}
		}
		var s unix.Stat_t
		if err := fstat(fs.sys, fd, &s); err != nil {
			return err
		}
		out.SetTimeout(timeout)
		fillAttr(&out.Attr, &s)
		return nil
	})
	return status(err)
}

// truncate sets a regular file's size, through the open file when the
// guest names one (it may have no write permission left on the path).
func (fs *fsys) truncate(n *node, fd int, in *fuse.SetAttrIn) error {
	switch {
	case n.isDir():
		return unix.EISDIR
	case !n.isRegular():
		return unix.EINVAL
	case in.Size > math.MaxInt64:
		return unix.EFBIG
	case fs.kernelFile(n):
		return unix.EACCES // see isKernelFS
	}
	size := int64(in.Size)
	if err := fs.dropSetID(fd); err != nil {
		return err
	}
	if in.Valid&fuse.FATTR_FH != 0 {
		if h := fs.t.handle(in.Fh, false); h != nil {
			return h.do(func(hfd int) error {
				return retry(func() error { return unix.Ftruncate(hfd, size) })
			})
		}
	}
	return retry(func() error { return unix.Truncate(procPath(fd), size) })
}

// dropSetID clears what the host kernel clears when a process without
// CAP_FSETID writes to or truncates a regular file (should_remove_suid,
// fs/inode.c): set-user-ID, and set-group-ID with group execute. A root
// vmm has CAP_FSETID, so without this a guest could rewrite a set-user-ID
// root program in the share and keep its bit: the kernel would not clear
// it for vmm, and the guest's own kernel clears it only in its cache. It
// runs when a file is opened for writing or truncated; the guest cannot
// set the bits again (SETATTR and the creating calls strip them).
func (fs *fsys) dropSetID(fd int) error {
	if !fs.privileged {
		return nil // the host kernel does it
	}
	var st unix.Stat_t
	if err := fstat(fs.sys, fd, &st); err != nil {
		return err
	}
	kill := st.Mode & unix.S_ISUID
	if st.Mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
		kill |= unix.S_ISGID
	}
	if kill == 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	return retry(func() error { return unix.Fchmodat(unix.AT_FDCWD, procPath(fd), st.Mode&permBits&^kill, 0) })
}

// setTimes sets atime and mtime as SETATTR asks: a given time, now, or
// unchanged.
func setTimes(n *node, fd int, in *fuse.SetAttrIn) error {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	pick := func(i int, set, now uint32, sec uint64, nsec uint32) error {
		switch {
		case in.Valid&set == 0:
		case in.Valid&now != 0:
			ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
		case nsec >= 1e9:
			return unix.EINVAL
		default:
			ts[i] = unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
		}
		return nil
	}
	if err := pick(0, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec); err != nil {
		return err
	}
	if err := pick(1, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec); err != nil {
		return err
	}
	return retry(func() error {
		if n.isSymlink() {
			// The magic link cannot name a symlink without following
			// it, so the descriptor itself (Linux 5.8 and later).
			return unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), ts[:], 0)
	})
}

func (fs *fsys) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, st := fs.nodeOf(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	if !n.isSymlink() {
		return nil, fuse.EINVAL
	}
	buf := make([]byte, pathMax)
	var size int
	err := n.do(func(fd int) error {
		return retry(func() (err error) {
			size, err = unix.Readlinkat(fd, "", buf)
			return err
		})
	})
	if err != nil {
		return nil, status(err)
	}
	if size >= len(buf) {
		return nil, fuse.Status(unix.ENAMETOOLONG)
	}
	return buf[:size], fuse.OK
}

// created finishes a new entry of directory pfd, of which fd is an
// O_PATH descriptor: it gives it the mode the guest asked for when the
// host's umask took bits away (the guest's kernel applied the guest's
// umask already), gives it to the caller when vmm is root, and registers
// it. mode < 0 leaves the mode alone (symlinks). It takes fd.
func (fs *fsys) created(pfd, fd int, mode int, caller *fuse.Caller, out *fuse.EntryOut) error {
	var st unix.Stat_t
	if err := fstat(fs.sys, fd, &st); err != nil {
		fs.sys.Close(fd)
		return err
	}
	typ := st.Mode & unix.S_IFMT
	changed := false
	want := uint32(mode)
	if typ == unix.S_IFDIR {
		// The host kernel gives a directory made in a set-group-ID one
		// that bit too (inode_init_owner): it stays.
		want |= st.Mode & unix.S_ISGID
	}
	if mode >= 0 && (typ == unix.S_IFREG || typ == unix.S_IFDIR) && st.Mode&permBits != want {
		if err := retry(func() error { return unix.Fchmodat(unix.AT_FDCWD, procPath(fd), want, 0) }); err != nil {
			fs.sys.Close(fd)
			return err
		}
		changed = true
	}
	chowned, err := fs.chownNew(pfd, fd, &st, caller)
	if err != nil {
		fs.sys.Close(fd)
		return err
	}
	// The stat above describes the entry unless its mode or owner
	// changed since (one fstat less for most new files).
	var res fuse.Status
	if changed || chowned {
		res = fs.register(fd, out)
	} else {
		res = fs.registerStat(fd, &st, out)
	}
	if !res.Ok() {
		return unix.Errno(res)
	}
	return nil
}

// createdName is created for the entry name of pfd, which the caller
// just made. Should the guest have replaced it in between, what is
// there now is registered instead: still an entry of the share.
func (fs *fsys) createdName(pfd int, name string, mode int, caller *fuse.Caller, out *fuse.EntryOut) error {
	fd, err := openPath(fs.sys, pfd, name)
	if err != nil {
		return err
	}
	return fs.created(pfd, fd, mode, caller, out)
}

// chownNew gives a new file to the caller when vmm is root; the group
// stays the directory's when that is set-group-ID, as the host kernel
// made it. It says whether it changed the owner.
func (fs *fsys) chownNew(pfd, fd int, st *unix.Stat_t, caller *fuse.Caller) (bool, error) {
	if !fs.privileged || (st.Uid == caller.Uid && st.Gid == caller.Gid) {
		return false, nil
	}
	gid := int(caller.Gid)
	var pst unix.Stat_t
	if err := fstat(fs.sys, pfd, &pst); err != nil {
		return false, err
	}
	if pst.Mode&unix.S_ISGID != 0 {
		gid = -1
	}
	return true, retry(func() error {
		return fs.sys.Fchownat(fd, "", int(caller.Uid), gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	})
}

func (fs *fsys) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	if t := in.Mode & unix.S_IFMT; t != unix.S_IFREG && t != 0 {
		return fuse.EPERM // no devices, FIFOs or sockets
	}
	p, st := fs.parentAndName(in.NodeId, name)
	if !st.Ok() {
		return st
	}
	mode := in.Mode & permBits &^ setID
	return status(p.do(func(pfd int) error {
		if err := retry(func() error { return unix.Mknodat(pfd, name, unix.S_IFREG|mode, 0) }); err != nil {
			return err
		}
		return fs.createdName(pfd, name, int(mode), &in.Caller, out)
	}))
}

func (fs *fsys) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	p, st := fs.parentAndName(in.NodeId, name)
	if !st.Ok() {
		return st
	}
	// Set-group-ID is a directory's to have (see SetAttr).
	mode := in.Mode & permBits &^ unix.S_ISUID
	return status(p.do(func(pfd int) error {
		if err := retry(func() error { return unix.Mkdirat(pfd, name, mode) }); err != nil {
			return err
		}
		return fs.createdName(pfd, name, int(mode), &in.Caller, out)
	}))
}

func (fs *fsys) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fuse.EINVAL
	}
	if len(target) >= pathMax {
		return fuse.Status(unix.ENAMETOOLONG)
	}
	p, st := fs.parentAndName(h.NodeId, name)
	if !st.Ok() {
		return st
	}
	return status(p.do(func(pfd int) error {
		if err := retry(func() error { return unix.Symlinkat(target, pfd, name) }); err != nil {
			return err
		}
		return fs.createdName(pfd, name, -1, &h.Caller, out)
	}))
}

func (fs *fsys) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, 0)
}

func (fs *fsys) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, unix.AT_REMOVEDIR)
}

func (fs *fsys) remove(h *fuse.InHeader, name string, flags int) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	p, st := fs.parentAndName(h.NodeId, name)
	if !st.Ok() {
		return st
	}
	return status(p.do(func(pfd int) error {
		return retry(func() error { return fs.sys.Unlinkat(pfd, name, flags) })
	}))
}

// Rename serves RENAME and RENAME2.
func (fs *fsys) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	if in.Flags&^renameFlags != 0 {
		return fuse.EINVAL
	}
	op, st := fs.parentAndName(in.NodeId, oldName)
	if !st.Ok() {
		return st
	}
	np, st := fs.parentAndName(in.Newdir, newName)
	if !st.Ok() {
		return st
	}
	return status(op.do(func(ofd int) error {
		return np.do(func(nfd int) error {
			return retry(func() error { return unix.Renameat2(ofd, oldName, nfd, newName, uint(in.Flags)) })
		})
	}))
}

// Link makes a hard link through the /proc magic link, which, unlike
// linkat's AT_EMPTY_PATH, needs no CAP_DAC_READ_SEARCH, and links a
// symlink itself rather than its target.
func (fs *fsys) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	p, st := fs.parentAndName(in.NodeId, name)
	if !st.Ok() {
		return st
	}
	old, st := fs.nodeOf(in.Oldnodeid)
	if !st.Ok() {
		return st
	}
	return status(old.do(func(ofd int) error {
		return p.do(func(pfd int) error {
			if err := retry(func() error {
				return unix.Linkat(unix.AT_FDCWD, procPath(ofd), pfd, name, unix.AT_SYMLINK_FOLLOW)
			}); err != nil {
				return err
			}
			fd, err := openPath(fs.sys, pfd, name)
			if err != nil {
				return err
			}
			if st := fs.register(fd, out); !st.Ok() {
				return unix.Errno(st)
			}
			return nil
		})
	}))
}

// openFlags filters the guest's open flags and says whether they write.
func openFlags(guest uint32) (flags int, writes bool, st fuse.Status) {
	flags = int(guest) & openPassFlags
	acc := flags & unix.O_ACCMODE
	if acc == unix.O_ACCMODE {
		return 0, false, fuse.EINVAL
	}
	return flags, acc != unix.O_RDONLY || flags&unix.O_TRUNC != 0, fuse.OK
}

func (fs *fsys) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, st := fs.nodeOf(in.NodeId)
	if !st.Ok() {
		return st
	}
	flags, writes, st := openFlags(in.Flags)
	switch {
	case !st.Ok():
		return st
	case n.isDir():
		return fuse.EISDIR
	case !n.isRegular():
		// The guest's kernel opens devices, FIFOs and sockets itself
		// and follows symlinks before opening: nothing to do here.
		return fuse.EACCES
	case writes && fs.readOnly:
		return fuse.EROFS
	case fs.kernelFile(n):
		return fuse.EACCES // see isKernelFS
	}
	var fd int
	if err := n.do(func(pfd int) (err error) { fd, err = reopen(fs.sys, pfd, flags); return err }); err != nil {
		return status(err)
	}
	if writes {
		if err := fs.dropSetID(fd); err != nil {
			fs.sys.Close(fd)
			return status(err)
		}
	}
	fh, err := fs.t.addHandle(fd, false)
	if err != nil {
		return status(err)
	}
	*out = fuse.OpenOut{Fh: fh, OpenFlags: openReplyFlags}
	return fuse.OK
}

// Create creates and opens a regular file. It first tries to create it
// exclusively; if the name exists and the guest did not ask for O_EXCL,
// it opens what is there the way OPEN would, which never follows a
// symlink nor opens anything but a regular file (an O_CREAT open of an
// existing FIFO would block, of a device would open it).
func (fs *fsys) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	flags, writes, st := openFlags(in.Flags)
	if !st.Ok() {
		return st
	}
	p, st := fs.parentAndName(in.NodeId, name)
	if !st.Ok() {
		return st
	}
	mode := in.Mode & permBits &^ setID
	var fd int
	err := p.do(func(pfd int) error {
		err := retry(func() (err error) {
			fd, err = fs.sys.Openat(pfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, mode)
			return err
		})
		switch {
		case err == nil:
			// The node is the file just opened, whatever happens to
			// the name meanwhile.
			pathfd, err := reopenPath(fs.sys, fd)
			if err == nil {
				err = fs.created(pfd, pathfd, int(mode), &in.Caller, &out.EntryOut)
			}
			if err != nil {
				fs.sys.Close(fd)
			}
			return err
		case err == unix.EEXIST && in.Flags&unix.O_EXCL == 0:
			if st := fs.child(p, name, &out.EntryOut); !st.Ok() {
				return unix.Errno(st)
			}
			n := fs.t.node(out.NodeId)
			if n == nil || !n.isRegular() {
				fs.t.forget(out.NodeId, 1)
				if n != nil && n.isDir() {
					return unix.EISDIR
				}
				return unix.EEXIST
			}
			if fs.kernelFile(n) {
				fs.t.forget(out.NodeId, 1)
				return unix.EACCES // see isKernelFS
			}
			if err := n.do(func(nfd int) (err error) { fd, err = reopen(fs.sys, nfd, flags); return err }); err != nil {
				fs.t.forget(out.NodeId, 1)
				return err
			}
			if writes {
				if err := fs.dropSetID(fd); err != nil {
					fs.sys.Close(fd)
					fs.t.forget(out.NodeId, 1)
					return err
				}
			}
			// O_TRUNC changed the size since the lookup.
			var st unix.Stat_t
			if fstat(fs.sys, fd, &st) == nil {
				fillAttr(&out.Attr, &st)
			}
			return nil
		default:
			return err
		}
	})
	if err != nil {
		return status(err)
	}
	fh, err := fs.t.addHandle(fd, false)
	if err != nil {
		fs.t.forget(out.NodeId, 1)
		return status(err)
	}
	out.OpenOut = fuse.OpenOut{Fh: fh, OpenFlags: openReplyFlags}
	return fuse.OK
}

func (fs *fsys) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.t.handle(in.Fh, false)
	if h == nil {
		return nil, fuse.EBADF
	}
	if in.Offset > math.MaxInt64 {
		return nil, fuse.EINVAL
	}
	r := fs.reads.Get().(*readResult)
	*r = readResult{sys: fs.sys, h: h, off: int64(in.Offset), size: int(min(in.Size, MaxWrite)), pool: &fs.reads}
	return r, fuse.OK
}

func (fs *fsys) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return fs.Writev(cancel, in, [][]byte{data})
}

func (fs *fsys) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if fs.readOnly {
		return 0, fuse.EROFS
	}
	h := fs.t.handle(in.Fh, false)
	if h == nil {
		return 0, fuse.EBADF
	}
	if in.Offset > math.MaxInt64 {
		return 0, fuse.EINVAL
	}
	var n int
	err := h.do(func(fd int) (err error) {
		n, err = pwritevFull(fs.sys, fd, data, int64(in.Offset))
		return err
	})
	if n == 0 && err != nil {
		return 0, status(err)
	}
	return uint32(n), fuse.OK
}

func (fs *fsys) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h := fs.t.handle(in.Fh, false)
	if h == nil {
		return fuse.EBADF
	}
	// The guest's kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself;
	// only the holes and data of a sparse file need the host.
	if (in.Whence != unix.SEEK_DATA && in.Whence != unix.SEEK_HOLE) || in.Offset > math.MaxInt64 {
		return fuse.EINVAL
	}
	return status(h.do(func(fd int) error {
		off, err := unix.Seek(fd, int64(in.Offset), int(in.Whence))
		out.Offset = uint64(off)
		return err
	}))
}

func (fs *fsys) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if fs.readOnly {
		return fuse.EROFS
	}
	h := fs.t.handle(in.Fh, false)
	if h == nil {
		return fuse.EBADF
	}
	if in.Mode&^fallocModes != 0 {
		return fuse.Status(unix.EOPNOTSUPP)
	}
	if in.Offset > math.MaxInt64 || in.Length > math.MaxInt64 {
		return fuse.EINVAL
	}
	return status(h.do(func(fd int) error {
		return retry(func() error { return unix.Fallocate(fd, in.Mode, int64(in.Offset), int64(in.Length)) })
	}))
}

func (fs *fsys) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if fs.t.handle(in.Fh, false) == nil {
		return fuse.EBADF
	}
	return fuse.OK
}

func (fs *fsys) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.fsync(in, false)
}

func (fs *fsys) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.fsync(in, true)
}

func (fs *fsys) fsync(in *fuse.FsyncIn, dir bool) fuse.Status {
	h := fs.t.handle(in.Fh, dir)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.do(func(fd int) error {
		if in.FsyncFlags&fsyncData != 0 {
			return retry(func() error { return unix.Fdatasync(fd) })
		}
		return retry(func() error { return unix.Fsync(fd) })
	}))
}

func (fs *fsys) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) { fs.t.release(in.Fh, false) }
func (fs *fsys) ReleaseDir(in *fuse.ReleaseIn)                      { fs.t.release(in.Fh, true) }

func (fs *fsys) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	n, st := fs.nodeOf(h.NodeId)
	if !st.Ok() {
		return st
	}
	var s unix.Statfs_t
	if err := n.do(func(fd int) error { return retry(func() error { return unix.Fstatfs(fd, &s) }) }); err != nil {
		return status(err)
	}
	*out = fuse.StatfsOut{
		Blocks:  s.Blocks,
		Bfree:   s.Bfree,
		Bavail:  s.Bavail,
		Files:   s.Files,
		Ffree:   s.Ffree,
		Bsize:   uint32(s.Bsize),
		NameLen: uint32(s.Namelen),
		Frsize:  uint32(s.Frsize),
	}
	return fuse.OK
}

func (fs *fsys) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	n, st := fs.nodeOf(in.NodeId)
	if !st.Ok() {
		return st
	}
	if fs.readOnly && in.Mask&unix.W_OK != 0 {
		return fuse.EROFS
	}
	if n.isSymlink() {
		return fuse.OK // access(2) follows links; the guest resolves them
	}
	return status(n.do(func(fd int) error {
		return retry(func() error { return unix.Faccessat(unix.AT_FDCWD, procPath(fd), in.Mask&7, 0) })
	}))
}

func (fs *fsys) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, st := fs.nodeOf(in.NodeId)
	if !st.Ok() {
		return st
	}
	if !n.isDir() {
		return fuse.ENOTDIR
	}
	var fd int
	if err := n.do(func(pfd int) (err error) { fd, err = reopen(fs.sys, pfd, unix.O_RDONLY|unix.O_DIRECTORY); return err }); err != nil {
		return status(err)
	}
	fh, err := fs.t.addHandle(fd, true)
	if err != nil {
		return status(err)
	}
	*out = fuse.OpenOut{Fh: fh}
	return fuse.OK
}

func (fs *fsys) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

func (fs *fsys) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}
