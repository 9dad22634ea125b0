package kernelcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The key index spares a boot the BLAKE2b-256 of its bzImage, the largest
// cost of a warm cache where hashing is slow: a second for Debian's
// 14 MB image in this project's nested, emulated L1 (microseconds per
// KiB natively, but a CI runner may well be such a guest). It remembers,
// per bzImage file (device and inode), the file's size, modification and
// status-change times and the key they had; a boot whose file still has
// them takes the key without reading the image again for it, as make
// and git trust a file's times instead of its contents.
//
// What it trusts is the status-change time (ctime), which every write,
// truncation, rename onto the name and change of mode sets to the
// current time, and which an unprivileged user cannot set back. That
// holds on the file systems trustedFS lists; elsewhere (FAT keeps a
// creation time there, FUSE and network file systems report what their
// server says) there is no index and every boot hashes. Two cases
// remain, and both are handled as git handles its "racy" index entries:
//   - The file is changed after its status is read but in the same tick
//     of the file system's clock (a few milliseconds), so its ctime does
//     not move. A key is therefore only recorded for a file whose ctime
//     was at least racyWindow old when its status was taken.
//   - The file is changed while it is read. Image takes its status again
//     after every read (Image.Read, Image.stable) and fails if it moved,
//     so no key is trusted or recorded for bytes of another version.
//
// An index file is as trusted as an entry (the same owner and mode
// checks) and fixed in size; anything else about it makes it ignored
// and overwritten, which costs one hash.

const (
	keyMagic  = "vmm kernel key v2\n" // v2: keys are BLAKE2b-256 (v1's were SHA-256)
	keyLen    = len(keyMagic) + 3*8 + len(Key{})
	keySuffix = ".key"
	// racyWindow is how old a file's ctime must be for its key to be
	// recorded: well above any file system's timestamp granularity
	// (jiffies for ext4 and tmpfs, 2 s for FAT).
	racyWindow = 3 * time.Second
	// MaxKeys is how many index files are kept; the least recently used
	// go first. A runner that boots a fresh copy of its kernel for every
	// job makes a new one each time.
	MaxKeys = 64
)

// fileID is what the index compares: the file and its times.
type fileID struct {
	dev, ino           uint64
	size, mtime, ctime int64 // bytes; nanoseconds since the epoch
}

// Source is the bzImage file a kernel image was read from, as the key
// index needs it: its identity and times, and when they were taken.
// OpenImage takes it; the zero value is never used.
type Source struct {
	id fileID
	at time.Time
}

// fileIDOf returns st's identity, if st comes from stat(2) on a regular
// file.
func fileIDOf(st fs.FileInfo) (fileID, bool) {
	if st == nil {
		return fileID{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.Mode().IsRegular() {
		return fileID{}, false
	}
	return fileID{
		dev:   uint64(sys.Dev),
		ino:   sys.Ino,
		size:  sys.Size,
		mtime: sys.Mtim.Nano(),
		ctime: sys.Ctim.Nano(),
	}, true
}

// trustedFS are the file systems (statfs(2) f_type, linux/magic.h) whose
// ctime the kernel itself sets on every change.
var trustedFS = []int64{
	unix.EXT4_SUPER_MAGIC, // ext2, ext3 and ext4 share it
	unix.XFS_SUPER_MAGIC,
	unix.BTRFS_SUPER_MAGIC,
	unix.F2FS_SUPER_MAGIC,
	unix.TMPFS_MAGIC,
	unix.OVERLAYFS_SUPER_MAGIC,
}

func (c *Cache) keyPath(id fileID) string {
	return filepath.Join(c.dir, fmt.Sprintf("%x-%x%s", id.dev, id.ino, keySuffix))
}

// encodeKey returns the index file for id and k.
func encodeKey(id fileID, k Key) []byte {
	b := make([]byte, 0, keyLen)
	b = append(b, keyMagic...)
	b = binary.LittleEndian.AppendUint64(b, uint64(id.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(id.mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(id.ctime))
	return append(b, k[:]...)
}

// decodeKey returns the key an index file records for id: ok false
// unless b is an index file and its size and times are id's.
func decodeKey(b []byte, id fileID) (Key, bool) {
	var k Key
	if len(b) != keyLen || string(b[:len(keyMagic)]) != keyMagic {
		return k, false
	}
	f := b[len(keyMagic):]
	if int64(binary.LittleEndian.Uint64(f)) != id.size ||
		int64(binary.LittleEndian.Uint64(f[8:])) != id.mtime ||
		int64(binary.LittleEndian.Uint64(f[16:])) != id.ctime {
		return k, false
	}
	copy(k[:], f[24:])
	return k, true
}

// keyOf returns image's key: from the index when src, the file image
// was read from, still has the size and times the index recorded, else
// by hashing image, recording the key for the next boot when its ctime
// was old enough (see above). src may be nil: no index.
func (c *Cache) keyOf(image []byte, src *Source) Key {
	if src == nil {
		return c.sum(image)
	}
	if k, err := c.lookupKey(src.id); err == nil {
		return k
	}
	k := c.sum(image)
	if src.at.Sub(time.Unix(0, src.id.ctime)) >= racyWindow {
		c.storeKey(src.id, k)
	}
	return k
}

var errNoKey = errors.New("no key recorded")

// lookupKey reads id's index file.
func (c *Cache) lookupKey(id fileID) (Key, error) {
	p := c.keyPath(id)
	f, size, err := c.openTrusted(p)
	if err != nil {
		return Key{}, err
	}
	defer f.Close()
	if size != int64(keyLen) {
		return Key{}, errNoKey
	}
	b := make([]byte, keyLen)
	if _, err := io.ReadFull(f, b); err != nil {
		return Key{}, err
	}
	k, ok := decodeKey(b, id)
	if !ok {
		return Key{}, errNoKey
	}
	c.touch(p)
	return k, nil
}

// storeKey records k for id, replacing what was there (best effort: a
// failure costs the next boot a hash).
func (c *Cache) storeKey(id fileID, k Key) {
	f, err := c.createTemp()
	if err != nil {
		return
	}
	_ = c.commitTemp(f, encodeKey(id, k), c.keyPath(id))
}
