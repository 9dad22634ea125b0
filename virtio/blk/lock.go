package blk

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// Image locking the way QEMU does it (block/file-posix.c), so that vmm
// and QEMU (qemu-system-*, qemu-img, qemu-io, qemu-nbd) refuse an image
// the other uses as they refuse each other's. flock(2) locks do not
// interact with QEMU's fcntl locks, so vmm no longer takes one.
//
// QEMU's block layer names what a user of an image does and what it lets
// others do as permission bits (BLK_PERM_* in include/block/block-common.h).
// For each permission bit p an image user holds, it takes a shared
// (F_RDLCK) open-file-description lock on byte lockPermBase+p; for each
// one it refuses to share, a shared lock on byte lockSharedBase+p. Then it
// checks that nobody else holds byte lockSharedBase+p for a permission it
// wants (someone refuses to share it) nor lockPermBase+p for one it
// refuses to share (someone has it): if anyone does, the open fails. All
// locks are shared, so users that agree coexist, and the locks go with
// the file description when it is closed.
//
// vmm wants consistent reads, and writes when the image is read-write;
// it refuses to share writes (a second writer, or a writer under a
// reader that caches what it read, corrupts the guest's file system) and
// resizes (the capacity is fixed at Open). These are what a QEMU
// virtio-blk device asks for by default, except that QEMU shares resizes.
// So vmm and a QEMU guest, or two of either, share an image only when
// neither writes. qemu-io and qemu-img share everything on a raw image:
// they may read an image vmm writes, as they may one a QEMU guest writes,
// but not write one vmm uses.
//
// OFD locks (F_OFD_SETLK, Linux 3.15) belong to the open file
// description, not the process, so two opens in one process exclude each
// other too, and closing an unrelated descriptor for the same file does
// not drop them as it would POSIX record locks.

// QEMU's permission bits, as bit numbers (include/block/block-common.h).
const (
	permConsistentRead = 0 // BLK_PERM_CONSISTENT_READ, 0x01
	permWrite          = 1 // BLK_PERM_WRITE, 0x02
	permWriteUnchanged = 2 // BLK_PERM_WRITE_UNCHANGED, 0x04: writes that change no data
	permResize         = 3 // BLK_PERM_RESIZE, 0x08
)

// The lock bytes' bases (RAW_LOCK_PERM_BASE, RAW_LOCK_SHARED_BASE in
// block/file-posix.c; libvirt's locking uses byte 0, below them).
const (
	lockPermBase   = 100 // byte lockPermBase+p: someone holds permission p
	lockSharedBase = 200 // byte lockSharedBase+p: someone refuses to share p
)

// errInUse is the one-line reason Open gives for a locked image; Open
// prefixes the image's path.
var errInUse = errors.New("in use by another process (a vmm or QEMU holds a lock on it that excludes this use)")

// lockImage takes QEMU-compatible locks on the image open as fd, read-only
// or read-write. On error some locks may be held: the caller closes fd,
// which drops them.
func lockImage(fd int, readOnly bool) error {
	perms := []int64{permConsistentRead}
	if !readOnly {
		perms = append(perms, permWrite)
	}
	unshared := []int64{permWrite, permResize}
	// Lock first, check second, as QEMU does: of two users opening at
	// once, each then sees the other's lock, so both may fail, but they
	// cannot both succeed.
	for _, p := range perms {
		if err := setLock(fd, lockPermBase+p); err != nil {
			return err
		}
	}
	for _, p := range unshared {
		if err := setLock(fd, lockSharedBase+p); err != nil {
			return err
		}
	}
	for _, p := range perms {
		if held, err := heldByOthers(fd, lockSharedBase+p); err != nil || held {
			return lockErr(held, err)
		}
	}
	for _, p := range unshared {
		if held, err := heldByOthers(fd, lockPermBase+p); err != nil || held {
			return lockErr(held, err)
		}
	}
	return nil
}

func lockErr(held bool, err error) error {
	if held {
		return errInUse
	}
	return fmt.Errorf("lock: %w", err)
}

// setLock takes a shared OFD lock on byte off. Nobody takes exclusive
// locks on these bytes, but one would make this fail with EAGAIN.
func setLock(fd int, off int64) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: off, Len: 1}
	err := retryEINTR(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) })
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return errInUse
	}
	if err != nil {
		return fmt.Errorf("lock byte %d: %w", off, err)
	}
	return nil
}

// heldByOthers says whether another open file description holds any lock
// on byte off: F_OFD_GETLK reports what would stop an exclusive lock, and
// a description's own locks never do.
func heldByOthers(fd int, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: off, Len: 1}
	if err := retryEINTR(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk) }); err != nil {
		return false, fmt.Errorf("test byte %d: %w", off, err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
