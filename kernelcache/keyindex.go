package kernelcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The key index spares a boot the SHA-256 of its bzImage, the largest
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
// current time, and which an unprivileged user cannot set back:
// whoever changes the file changes it. Two cases remain, and both are
// handled as git handles its "racy" index entries:
//   - The file is changed after its status is read but in the same tick
//     of the file system's clock (a few milliseconds), so its ctime does
//     not move. A key is therefore only recorded for a file whose ctime
//     is at least racyWindow old at the time.
//   - The file is changed while it is read. The status is read before
//     the contents (the caller's fstat, then read), and a size that
//     differs from what was read is not recorded.
//
// An index file is as trusted as an entry (the same owner and mode
// checks) and fixed in size; anything else about it makes it ignored
// and overwritten, which costs one hash.

const (
	keyMagic  = "vmm kernel key v1\n"
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
	ctimeAt            time.Time
}

// fileIDOf returns st's identity, if st comes from stat(2).
func fileIDOf(st fs.FileInfo) (fileID, bool) {
	if st == nil {
		return fileID{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.Mode().IsRegular() {
		return fileID{}, false
	}
	return fileID{
		dev:     uint64(sys.Dev),
		ino:     sys.Ino,
		size:    sys.Size,
		mtime:   sys.Mtim.Nano(),
		ctime:   sys.Ctim.Nano(),
		ctimeAt: time.Unix(0, sys.Ctim.Nano()),
	}, true
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

// keyOf returns image's key: from the index when src, the status of the
// file image was read from (taken before reading it), still matches what
// the index recorded, else by hashing image, recording the key for the
// next boot when that is safe (see above). src may be nil.
func (c *Cache) keyOf(image []byte, src fs.FileInfo) Key {
	id, ok := fileIDOf(src)
	if !ok {
		return c.sum(image)
	}
	if k, err := c.lookupKey(id); err == nil {
		return k
	}
	k := c.sum(image)
	if id.size == int64(len(image)) && c.now().Sub(id.ctimeAt) >= racyWindow {
		c.storeKey(id, k)
	}
	return k
}

var errNoKey = errors.New("no key recorded")

// lookupKey reads id's index file.
func (c *Cache) lookupKey(id fileID) (Key, error) {
	p := c.keyPath(id)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return Key{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Key{}, err
	}
	if !st.Mode().IsRegular() || st.Size() != int64(keyLen) {
		return Key{}, errNoKey
	}
	if err := c.checkOwner(p, st); err != nil {
		return Key{}, err
	}
	b := make([]byte, keyLen)
	if _, err := io.ReadFull(f, b); err != nil {
		return Key{}, err
	}
	k, ok := decodeKey(b, id)
	if !ok {
		return Key{}, errNoKey
	}
	now := c.now()
	_ = os.Chtimes(p, now, now) // for eviction: recently used
	return k, nil
}

// storeKey records k for id, replacing what was there (best effort: a
// failure costs the next boot a hash).
func (c *Cache) storeKey(id fileID, k Key) {
	f, err := os.CreateTemp(c.dir, tempPrefix+"*")
	if err != nil {
		return
	}
	name := f.Name()
	_, err = f.Write(encodeKey(id, k))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, c.keyPath(id))
	}
	if err != nil {
		os.Remove(name)
		return
	}
	c.evict()
}
