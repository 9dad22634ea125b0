// Package kernelcache keeps the vmlinux decompressed from a bzImage
// between runs of vmm, so that a kernel booted many times (a CI runner's)
// is decompressed once, on the host, instead of by its own decompressor at
// every boot (see package kernelimage for why and how it is booted).
//
// An entry is named by the BLAKE2b-256 of the bzImage it came from (a
// cryptographic hash, as SHA-256 would be, without the FIPS 140 module
// crypto/sha256 links: see package snapshot) and holds
// its own length and 64-bit xxHash (XXH64), which every read checks: a
// truncated or corrupted entry (a crash mid-write, a bad disk, a partial
// copy) is detected, discarded and rebuilt, never booted (but see
// Vmlinux for an entry its owner rewrites in place while vmm boots it).
// The checksum is not there against tampering: whoever can write an
// entry can compute a matching cryptographic hash too, so one would buy
// nothing but time (about 50 ms per boot for Debian's vmlinux when its
// entry was 53 MB; it is 41 MB since entries lost their zero tails);
// tampering is kept out by the ownership checks below. XXH64
// (github.com/cespare/xxhash, the implementation most Go projects use,
// zstd's decoder among them) needs only plain integer instructions: 11
// ms for that vmlinux here, against 17 ms for CRC-32C with SSE 4.2's
// CRC32 instruction, and on a CPU that emulates that instruction, as the
// nested CI machines' QEMU does, 20-66 ms against 0.48-0.65 s, most of a
// warm boot's setup.
// Entries are written to a temporary file and renamed into place, so
// concurrent vmm processes and interrupted runs never see half an entry.
// The directory must belong to the user running vmm and be writable by
// nobody else, and so must every entry read: someone else who could write
// there could otherwise choose the kernel vmm boots.
//
// The cache is an optimisation only. Every failure (a read-only home, a
// full disk, a payload vmm cannot decompress) is reported to the caller,
// which boots the bzImage the usual way. The one exception is an entry
// that becomes unreadable (cut short, a disk error) after it was checked
// and while it is loaded: by then the guest's layout was planned for the
// vmlinux, and the boot fails with an error (Vmlinux.Read).
package kernelcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/bootparam"
	"github.com/vmm-dev/vmm/internal/fdpath"
	"github.com/vmm-dev/vmm/kernelimage"
)

// Entry file layout: magic, XXH64 of the data (u64 LE), data length
// (u64 LE), data. The length makes a truncated file fail before the
// checksum is computed.
const (
	// v4: segments' zero tails cut off (kernelimage.TrimZeroTails);
	// a v3 entry is rebuilt once, as any entry that fails its check.
	magic     = "vmm vmlinux cache v4\n"
	sumLen    = 8
	headerLen = len(magic) + sumLen + 8
	// entryPrefix names the key (BLAKE2b-256) and the entry format, so
	// that two vmm versions sharing a directory (a runner part way
	// through an upgrade) keep an entry each, where with one name each
	// would remove the other's as corrupted and fill its own at every
	// boot. Older vmm's entries were "b2-KEY" (formats 3 and 4) and,
	// before them, a bare SHA-256; evict removes them once unused.
	entryPrefix = "b2v4-"
	entrySuffix = ".vmlinux"
	tempPrefix  = ".tmp-"
)

// Limits on the directory's size: a runner that boots a few kernels keeps
// them all, one that tries many does not fill its disk (an entry is about
// 40 MiB for Debian's cloud kernel).
const (
	// MaxEntries is how many entries are kept, and MaxBytes how much
	// they may hold together; the least recently used go first. A CI
	// matrix over more kernels than are kept would refill on every boot
	// (slower than no cache), so the limits leave room for a matrix of
	// a dozen or so distro kernels.
	MaxEntries = 16
	MaxBytes   = 1 << 30
	// staleTemp is the age past which a temporary file is taken to be
	// left by a vmm that died while writing it.
	staleTemp = time.Hour
	// staleOld is how long an entry of an older vmm (named by SHA-256,
	// which this one never looks up) stays unused before it is removed:
	// long enough for a runner that still runs that vmm too to keep it.
	staleOld = 24 * time.Hour
)

// ErrUnsafeDir means the cache directory, or an entry in it, could be
// written by someone other than the user running vmm.
var ErrUnsafeDir = errors.New("not owned by the user running vmm, or writable by group or others")

// Cache is a directory of decompressed kernels.
type Cache struct {
	dir      string
	uid      int
	now      func() time.Time
	sum      func([]byte) Key // KeyOf; tests count its calls
	maxBytes int64            // MaxBytes; tests lower it
}

// Open returns the cache in dir, creating it (mode 0700) if needed.
func Open(dir string) (*Cache, error) {
	c := &Cache{dir: dir, uid: os.Geteuid(), now: time.Now, sum: KeyOf, maxBytes: MaxBytes}
	// Whoever owns the parent can rename the cache away and put another
	// in its place (a directory under /tmp made first by another user),
	// so it must be the user's or root's; checked before anything is
	// made in it.
	parent := filepath.Dir(filepath.Clean(dir))
	if pst, err := os.Stat(parent); err == nil {
		if sys, ok := pst.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != c.uid && sys.Uid != 0 {
			return nil, fmt.Errorf("kernel cache %s: its parent %s is owned by uid %d, who could replace it: %w", dir, parent, sys.Uid, ErrUnsafeDir)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	if err := c.checkOwner(dir, st); err != nil {
		return nil, err
	}
	return c, nil
}

// checkOwner refuses a file or directory that is not the user's own or
// that others can write.
func (c *Cache) checkOwner(path string, st fs.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("kernel cache %s: cannot tell its owner", path)
	}
	if int(sys.Uid) != c.uid || st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("kernel cache %s (owner %d, mode %v): %w", path, sys.Uid, st.Mode().Perm(), ErrUnsafeDir)
	}
	return nil
}

// Key names an entry: the BLAKE2b-256 of the bzImage it was made from.
type Key [blake2b.Size256]byte

// KeyOf returns the key of a bzImage.
func KeyOf(bzImage []byte) Key { return blake2b.Sum256(bzImage) }

func (c *Cache) path(k Key) string {
	return filepath.Join(c.dir, fmt.Sprintf("%s%x%s", entryPrefix, k[:], entrySuffix))
}

// Get returns the entry for k, mapped read-only from its file (see
// Vmlinux); the caller closes it. An error wrapping fs.ErrNotExist means
// there is none; any other error is an entry that cannot be trusted
// (truncated, corrupted, someone else's), which Get has removed if it
// could, so the caller rebuilds it.
func (c *Cache) Get(k Key) (*Vmlinux, error) {
	p := c.path(k)
	f, size, err := c.openTrusted(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size < int64(headerLen) {
		dropEntry(p, f)
		return nil, fmt.Errorf("kernel cache entry %s is truncated (%d bytes), removed", p, size)
	}
	if size > maxEntry {
		dropEntry(p, f)
		return nil, fmt.Errorf("kernel cache entry %s is larger than any kernel (%d bytes), removed", p, size)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("kernel cache entry %s: mmap: %w", p, err)
	}
	v := &Vmlinux{mapped{what: "kernel cache entry " + p, mapping: m}}
	var data []byte
	err = v.guard(func() (err error) {
		data, err = decode(m)
		return err
	})
	if err != nil {
		v.Close()
		dropEntry(p, f)
		return nil, fmt.Errorf("kernel cache entry %s %w, removed", p, err)
	}
	v.data = data
	c.touch(p)
	return v, nil
}

// dropEntry removes the entry p that Get found untrustworthy, unless
// p names another file by now: another vmm may have just put a good
// entry there, which a plain remove would take with the bad one.
func dropEntry(p string, f *os.File) {
	checked, err1 := f.Stat()
	now, err2 := os.Lstat(p)
	if err1 == nil && err2 == nil && os.SameFile(checked, now) {
		os.Remove(p)
	}
}

// maxEntry bounds the entry files Get maps: a header and the most Load
// ever decompresses (machine's limit is 512 MiB).
const maxEntry = 1 << 30

// Vmlinux is a decompressed kernel: mapped read-only from its cache
// entry, or on the heap when it was just decompressed. An entry's pages
// are read where they lie in the page cache, never copied to the heap
// first: that read and the copy cost Debian's 53 MB vmlinux (41 MB
// since entries lost their zero tails) 50 ms natively and 0.1-0.3 s in
// the nested CI machines, a sixth of a warm boot's setup there.
//
// An entry's file is never written after it is renamed into place, and
// only its owner, the user running vmm, can write it at all; but that
// user can still cut it short, and a read of a page past a mapped file's
// end is a SIGBUS, which would kill vmm, as is a page the disk fails to
// read. Read turns those into an error. The checksum is checked once, by
// Get; bytes the owner writes over the entry in place (cp or rsync
// --inplace onto it) after that and before the load are booted
// unchecked, where the copy on the heap this replaced was checked as it
// was booted. Nothing vmm writes does that, and only the entry's owner
// can, who can choose the kernel anyway.
type Vmlinux struct {
	mapped
}

// openTrusted opens the entry or key index file p for reading: not
// through a symlink (O_NOFOLLOW), a regular file, the user's own and
// writable by nobody else. It returns the file and its size.
func (c *Cache) openTrusted(p string) (*os.File, int64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("kernel cache: %w", err)
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("kernel cache: %w", err)
	case !st.Mode().IsRegular():
		err = fmt.Errorf("kernel cache entry %s is not a regular file", p)
	default:
		err = c.checkOwner(p, st)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// touch marks p used now. The modification time orders entries and key
// index files for eviction: least recently used first. Failing to update
// it only makes eviction less exact.
func (c *Cache) touch(p string) {
	now := c.now()
	_ = os.Chtimes(p, now, now)
}

// commitTemp writes b to the temporary file f, closes it and renames it
// to p, replacing what was there, then evicts (see evict). On failure f
// is removed. No fsync: a crash may leave a short or empty file, which
// the reader detects.
func (c *Cache) commitTemp(f *os.File, b []byte, p string) error {
	if _, err := f.Write(b); err != nil {
		dropTemp(f)
		return err
	}
	return c.renameTemp(f, p)
}

// renameTemp closes the temporary file f, written whole, and renames it
// to p, replacing what was there, then evicts (see evict). On failure f
// is removed.
func (c *Cache) renameTemp(f *os.File, p string) error {
	name := f.Name()
	if isUnnamed(f) {
		// Named only now, for the rename that follows at once.
		named, err := c.nameTemp(f)
		if err != nil {
			f.Close()
			return err
		}
		name = named
	}
	err := f.Close()
	if err == nil {
		err = os.Rename(name, p)
	}
	if err != nil {
		os.Remove(name)
		return err
	}
	c.evict()
	return nil
}

// createTemp makes a file for an entry or key being written. Where the
// file system allows, it is an O_TMPFILE file with no name at all until
// renameTemp gives it one just before its rename, so a vmm killed while
// it fills an entry (a cold fill of tens of MB can take a minute nested)
// leaves nothing in the directory; evict only removes named temporary
// files once they are an hour old, and runs only when an entry is
// stored, which a warm host may never do again. Elsewhere it is an
// ordinary temporary file.
func (c *Cache) createTemp() (*os.File, error) {
	fd, err := unix.Open(c.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		f := os.NewFile(uintptr(fd), filepath.Join(c.dir, unnamedTemp))
		// nameTemp links it through /proc: without a /proc that shows
		// it, the entry could never be named, and every cold fill
		// would be thrown away.
		if _, ok := fdpath.Of(f); ok {
			return f, nil
		}
		f.Close()
	}
	return os.CreateTemp(c.dir, tempPrefix+"*")
}

// unnamedTemp is the name an O_TMPFILE file goes by in messages.
const unnamedTemp = tempPrefix + "unnamed"

func isUnnamed(f *os.File) bool { return filepath.Base(f.Name()) == unnamedTemp }

// dropTemp closes a temporary file that is not to be kept and removes
// its name, if it has one.
func dropTemp(f *os.File) {
	f.Close()
	if !isUnnamed(f) {
		os.Remove(f.Name())
	}
}

// nameTemp links the unnamed temporary file f into the directory under
// a fresh temporary name, through /proc/self/fd (linkat with
// AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH), and returns the name.
func (c *Cache) nameTemp(f *os.File) (string, error) {
	src, _ := fdpath.Of(f) // createTemp checked that /proc shows it
	for i := range 8 {
		name := filepath.Join(c.dir, fmt.Sprintf("%s%d-%d-%d", tempPrefix, os.Getpid(), time.Now().UnixNano(), i))
		err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("link %s: %w", name, err)
		}
	}
	return "", fmt.Errorf("link a temporary file into %s: names taken", c.dir)
}

// encode returns the entry file for data.
func encode(data []byte) []byte {
	b := make([]byte, 0, headerLen+len(data))
	b = append(b, header(data)...)
	return append(b, data...)
}

// header returns the header of the entry for data.
func header(data []byte) []byte {
	b := make([]byte, 0, headerLen)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint64(b, checksum(data))
	return binary.LittleEndian.AppendUint64(b, uint64(len(data)))
}

// checksum is XXH64 with seed 0 (see the package doc for why).
func checksum(data []byte) uint64 { return xxhash.Sum64(data) }

// decode checks an entry file and returns its data (aliasing b).
func decode(b []byte) ([]byte, error) {
	if len(b) < headerLen || string(b[:len(magic)]) != magic {
		return nil, errors.New("has no vmm cache header")
	}
	sum := binary.LittleEndian.Uint64(b[len(magic):])
	n := binary.LittleEndian.Uint64(b[len(magic)+sumLen:])
	data := b[headerLen:]
	if n != uint64(len(data)) {
		return nil, fmt.Errorf("holds %d bytes, its header says %d", len(data), n)
	}
	if checksum(data) != sum {
		return nil, errors.New("does not match its checksum")
	}
	return data, nil
}

// Pending is an entry being written: a temporary file in the cache
// directory, renamed into place by Commit.
type Pending struct {
	c   *Cache
	key Key
	f   *os.File
}

// Create starts the entry for k. It is separate from Commit so that a
// caller learns the cache is writable before doing the work whose result
// it would store.
func (c *Cache) Create(k Key) (*Pending, error) {
	f, err := c.createTemp()
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	return &Pending{c: c, key: k, f: f}, nil
}

// Commit writes data as the entry (Fill, with the bytes in memory) and
// renames it into place, replacing any
// entry there, then evicts the least recently used entries beyond
// MaxEntries. No fsync: a crash may leave a short or empty entry, which
// Get detects.
func (p *Pending) Commit(data []byte) error {
	write := func(_ []byte, _ int, out *os.File) error {
		_, err := out.Write(data)
		return err
	}
	return p.Fill(write, nil, uint64(len(data)), len(data))
}

// Abort discards the entry being written.
func (p *Pending) Abort() {
	dropTemp(p.f)
}

// evict removes the least recently used entries beyond MaxEntries, key
// index files beyond MaxKeys, and temporary files left by writers that
// died. It is best effort: the directory is shared with other vmm
// processes doing the same.
func (c *Cache) evict() {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type entry struct {
		name string
		used time.Time
		size int64
	}
	var entries, keys []entry
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		// Only names vmm makes: -kernel-cache DIR may be a directory
		// of the user's own, kernels among them.
		switch name := e.Name(); {
		case isTempName(name):
			if c.now().Sub(info.ModTime()) > staleTemp {
				os.Remove(filepath.Join(c.dir, name))
			}
		case isEntryName(name, entryPrefix):
			entries = append(entries, entry{name, info.ModTime(), info.Size()})
		case isEntryName(name, "b2-") || isEntryName(name, ""):
			// An older vmm's: Get touches an entry at each use.
			if c.now().Sub(info.ModTime()) > staleOld {
				os.Remove(filepath.Join(c.dir, name))
			}
		case isKeyName(name):
			keys = append(keys, entry{name, info.ModTime(), 0})
		}
	}
	for _, set := range []struct {
		es       []entry
		max      int
		maxBytes int64
	}{{entries, MaxEntries, c.maxBytes}, {keys, MaxKeys, 0}} {
		// Most recent first. sort.Slice, not slices.SortFunc: a
		// generic sort is about 10 KB of code per element type.
		es := set.es
		sort.Slice(es, func(i, j int) bool { return es[i].used.After(es[j].used) })
		var total int64
		for i, e := range es {
			total += e.size
			// The most recent one stays, whatever its size: it is
			// the one being booted.
			if i >= set.max || (i > 0 && set.maxBytes > 0 && total > set.maxBytes) {
				os.Remove(filepath.Join(c.dir, e.name))
			}
		}
	}
}

// ErrFillBusy is Load's error when another process is filling the
// cache: the caller boots the bzImage, and says nothing.
var ErrFillBusy = errors.New("kernel cache: another vmm is filling it")

// lockFill takes the cache's fill lock, an flock(2) on the directory
// itself (no file of its own to leave behind), without waiting: false
// when another process holds it. Where the file system has no locks
// (ENOLCK on some NFS mounts) fills go unlocked, as before.
func (c *Cache) lockFill() (unlock func(), ok bool) {
	fd, err := unix.Open(c.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() {}, true
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EWOULDBLOCK {
		unix.Close(fd)
		return nil, false
	}
	// Closing the descriptor releases the lock.
	return func() { unix.Close(fd) }, true
}

// isEntryName reports whether name is prefix, 64 hexadecimal digits (a
// 256-bit key) and entrySuffix.
func isEntryName(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	hex, ok := strings.CutSuffix(rest, entrySuffix)
	return ok && len(hex) == 2*len(Key{}) && isHex(hex)
}

// isTempName reports whether name is one of the temporary names
// createTemp and nameTemp make: tempPrefix and digits or dashes.
func isTempName(name string) bool {
	rest, ok := strings.CutPrefix(name, tempPrefix)
	return ok && rest != "" && strings.Trim(rest, "0123456789-") == ""
}

// isKeyName reports whether name is a key index file's (keyPath).
func isKeyName(name string) bool {
	rest, ok := strings.CutSuffix(name, keySuffix)
	dev, ino, ok2 := strings.Cut(rest, "-")
	return ok && ok2 && dev != "" && ino != "" && isHex(dev) && isHex(ino)
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}

// Load returns the vmlinux inside the bzImage image (parsed as k),
// using the cache in dir: from an intact entry if there is one, else
// decompressed by unpack (at most limit bytes: Helper, the vmm-unpack
// process) into a new entry, which is then mapped like any other. An
// error means the caller should boot the bzImage itself, as it would
// without a cache; Load has already told notef (if not nil) whatever
// is worth a line to the user: a directory it cannot make or will not
// trust (a file in the way, a read-only home, another user's), a
// corrupted entry, a payload that failed to decompress, an entry it
// could not store. It stays quiet about what is normal: a kernel with no
// payload or one in a format vmm has no decoder for, or an existing cache
// the user cannot add an entry to (one shared read-only).
//
// img is the -kernel file and k its parsed header. When the key index
// knows the file (see keyindex.go) and its entry exists, Load reads
// nothing of img but the header k came from; otherwise it copies img to
// the heap once (Image.stable) and hashes that copy and decompresses its
// payload.
func Load(dir string, img *Image, k *bootparam.Kernel, unpack Unpack, limit int, notef func(format string, args ...any)) (*Vmlinux, error) {
	if notef == nil {
		notef = func(string, ...any) {}
	}
	if _, err := k.CompressedKernel(); err != nil {
		return nil, err
	}
	c, err := Open(dir)
	if err != nil {
		// Said, as a cache that can never be used is a setting to fix
		// (a file where the directory should be, a path that cannot
		// be made); an entry that cannot be written, below, is not.
		notef("%v; not using it", err)
		return nil, err
	}
	if img.unchanged() {
		if key, err := c.lookupKey(img.src.id); err == nil {
			v, err := c.Get(key)
			if err == nil {
				return v, nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				notef("%v", err)
			}
		}
	}
	image, src, err := img.stable()
	if err != nil {
		return nil, err
	}
	// The copy's own header, so that the payload decompressed is the
	// copy's, not the mapping's.
	if k, err = bootparam.ParseKernel(image); err != nil {
		return nil, err
	}
	payload, err := k.CompressedKernel()
	if err != nil {
		return nil, err
	}
	key := c.keyOf(image, src)
	v, err := c.Get(key)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		notef("%v", err)
	}
	// A format vmm has no decoder for is the kernel's to decompress,
	// said to nobody, and costs no helper; an xz stream whose filters
	// only the decoder finds it lacks is refused by the helper, as
	// quietly, at every boot (nothing is cached for it).
	_, size, planErr := kernelimage.Plan(payload, limit)
	if errors.Is(planErr, kernelimage.ErrNoDecoder) {
		return nil, planErr
	}
	// One fill at a time per directory: jobs started together on a
	// fresh host would otherwise all decompress the same kernel at once
	// (slower each, on a small machine past the helper's timeout, so
	// that none is stored). The others boot the bzImage, as fast as
	// booting without a cache, and a later boot finds the entry.
	unlock, ok := c.lockFill()
	if !ok {
		return nil, ErrFillBusy
	}
	defer unlock()
	// Stored by the fill that held the lock just now?
	if v, err := c.Get(key); err == nil {
		return v, nil
	}
	// Check the cache can be written before spending time decompressing
	// (or reporting a payload it could not hold anyway): if it cannot,
	// the kernel's own decompressor is as good.
	pending, err := c.Create(key)
	if err != nil {
		return nil, err
	}
	if planErr != nil {
		pending.Abort()
		notef("kernel cache: %v; booting the compressed kernel", planErr)
		return nil, planErr
	}
	if err := pending.Fill(unpack, payload, size, limit); err != nil {
		if !errors.Is(err, kernelimage.ErrNoDecoder) {
			notef("kernel cache: %v; booting the compressed kernel", strings.TrimPrefix(err.Error(), "kernel cache: "))
		}
		return nil, err
	}
	// The entry was checksummed as it was written; Get checks it again
	// as it maps it, as every boot from the cache does.
	v, err = c.Get(key)
	if err != nil {
		// Gone between the rename and now (another vmm's eviction),
		// or not mappable: worth a line, as an entry not stored is.
		notef("%v; booting the compressed kernel", err)
		return nil, err
	}
	return v, nil
}
