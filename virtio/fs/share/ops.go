package share

// FUSE opcodes this server implements (enum fuse_opcode, linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opFsyncdir    = 30
	opAccess      = 34
	opCreate      = 35
	opDestroy     = 38
	opBatchForget = 42
	opFallocate   = 43
	opReaddirplus = 44
	opRename2     = 45
	opLseek       = 46
)

// opInfo is what Handle checks about a request before go-fuse sees it.
type opInfo struct {
	name string
	// minLen is fuse_in_header plus the opcode's fixed argument struct
	// (linux/fuse.h); names and data follow. It is never less than what
	// go-fuse's decoder reads, so go-fuse never sees a short request
	// (which it would report through the process-global logger).
	minLen int
	// mutates marks requests a read-only share refuses with EROFS.
	mutates bool
	// noReply marks requests the client expects no reply to.
	noReply bool
	// minReply is the reply space a request must come with beyond the
	// out header when go-fuse cannot tell it from the request: READLINK's
	// target may be PATH_MAX-1 bytes, and Linux always gives it a page.
	minReply int
}

// lookupOp returns what Handle knows of opcode, and false for an opcode
// the server does not implement, answered with ENOSYS. Among those:
// INTERRUPT (Linux's virtio-fs client never sends it), the xattr, lock,
// ioctl and poll requests, COPY_FILE_RANGE (the client falls back to
// read and write), SYNCFS, TMPFILE and STATX. OPEN and CREATE are not
// marked mutating because opening for reading is not; the file system
// refuses their writing forms on a read-only share. The sizes are
// fuse_in_header plus the argument struct named in linux/fuse.h.
func lookupOp(opcode uint32) (opInfo, bool) {
	const h = inHeaderSize
	switch opcode {
	case opLookup:
		return opInfo{name: "LOOKUP", minLen: h}, true
	case opForget:
		return opInfo{name: "FORGET", minLen: h + 8, noReply: true}, true // fuse_forget_in
	case opGetattr:
		return opInfo{name: "GETATTR", minLen: h + 16}, true // fuse_getattr_in
	case opSetattr:
		return opInfo{name: "SETATTR", minLen: h + 88, mutates: true}, true // fuse_setattr_in
	case opReadlink:
		return opInfo{name: "READLINK", minLen: h, minReply: pathMax - 1}, true
	case opSymlink:
		return opInfo{name: "SYMLINK", minLen: h, mutates: true}, true
	case opMknod:
		return opInfo{name: "MKNOD", minLen: h + 16, mutates: true}, true // fuse_mknod_in
	case opMkdir:
		return opInfo{name: "MKDIR", minLen: h + 8, mutates: true}, true // fuse_mkdir_in
	case opUnlink:
		return opInfo{name: "UNLINK", minLen: h, mutates: true}, true
	case opRmdir:
		return opInfo{name: "RMDIR", minLen: h, mutates: true}, true
	case opRename:
		return opInfo{name: "RENAME", minLen: h + 8, mutates: true}, true // fuse_rename_in
	case opLink:
		return opInfo{name: "LINK", minLen: h + 8, mutates: true}, true // fuse_link_in
	case opOpen:
		return opInfo{name: "OPEN", minLen: h + 8}, true // fuse_open_in
	case opRead:
		return opInfo{name: "READ", minLen: h + 40}, true // fuse_read_in
	case opWrite:
		return opInfo{name: "WRITE", minLen: writeHeaderSize, mutates: true}, true
	case opStatfs:
		return opInfo{name: "STATFS", minLen: h}, true
	case opRelease:
		return opInfo{name: "RELEASE", minLen: h + 24}, true // fuse_release_in
	case opFsync:
		return opInfo{name: "FSYNC", minLen: h + 16}, true // fuse_fsync_in
	case opFlush:
		return opInfo{name: "FLUSH", minLen: h + 24}, true // fuse_flush_in
	case opInit:
		return opInfo{name: "INIT", minLen: h + 16}, true // fuse_init_in before 7.36
	case opOpendir:
		return opInfo{name: "OPENDIR", minLen: h + 8}, true
	case opReaddir:
		return opInfo{name: "READDIR", minLen: h + 40}, true
	case opReleasedir:
		return opInfo{name: "RELEASEDIR", minLen: h + 24}, true
	case opFsyncdir:
		return opInfo{name: "FSYNCDIR", minLen: h + 16}, true
	case opAccess:
		return opInfo{name: "ACCESS", minLen: h + 8}, true // fuse_access_in
	case opCreate:
		return opInfo{name: "CREATE", minLen: h + 16}, true // fuse_create_in
	case opDestroy:
		return opInfo{name: "DESTROY", minLen: h}, true
	case opBatchForget:
		return opInfo{name: "BATCH_FORGET", minLen: h + 8, noReply: true}, true // fuse_batch_forget_in
	case opFallocate:
		return opInfo{name: "FALLOCATE", minLen: h + 32, mutates: true}, true // fuse_fallocate_in
	case opReaddirplus:
		return opInfo{name: "READDIRPLUS", minLen: h + 40}, true
	case opRename2:
		return opInfo{name: "RENAME2", minLen: h + 16, mutates: true}, true // fuse_rename2_in
	case opLseek:
		return opInfo{name: "LSEEK", minLen: h + 24}, true // fuse_lseek_in
	}
	return opInfo{}, false
}
