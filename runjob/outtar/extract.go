// Package outtar unpacks the tar stream a `vmm run` job's guest wrote to
// its scratch disk (the job's /out) into the host directory -out names.
// The archive is the guest's, so hostile: Extract bounds what it may
// create and keeps every name inside the directory.
//
// It runs in the vmm-unpack helper (HelperMain, `vmm-unpack out`), not in
// vmm: runjob.Collector, vmm's end, says why and what the two say to each
// other. archive/tar, Go's own reader, parses the stream: tar is a
// well-understood format with a maintained reader in the standard
// library, which handles the GNU and PAX long names vmm-init's writer
// may produce.
package outtar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
)

// Default bounds on what -out may create besides its bytes. A byte limit
// alone does not bound the work: a tar header is 512 bytes, so a 43 KB
// archive can describe a 20,000-level directory tree whose paths no host
// tool can open (PATH_MAX is 4096, linux/limits.h), and every file at that
// depth costs a walk through all of its parents (os.Root resolves a name
// one component at a time, with a system call or two for each). The
// bounds keep the worst archive to about a millisecond an entry, some
// 100,000 entries: under two minutes even on a busy host, and -timeout or
// a signal stops it sooner.
const (
	// MaxEntries bounds the archive's entries of every type, skipped ones
	// included since each costs a header read, plus the directories
	// their names imply without listing them (a name 30 directories deep
	// creates 30 directories), so it also bounds the inodes -out costs
	// the host. 100,000 is more than a job's results need: a Linux
	// kernel build tree has about 80,000 files.
	MaxEntries = 100_000
	// MaxDepth bounds a name's path components, and with them the walk
	// each file costs. Real trees stay well below 32 (a deep Java source
	// tree has about 15 levels); a job with deeper output can tar it
	// into one file.
	MaxDepth = 32
	// MaxNameLen bounds a name's bytes, so that the output directory's
	// own path plus any name stays under PATH_MAX (4096 bytes with its
	// NUL, linux/limits.h) for output directories up to 3 KB long: every
	// extracted file can then be opened by its path with ordinary tools.
	MaxNameLen = 1024
)

// Limits bound what Extract writes.
type Limits struct {
	Bytes   int64 // file data, in bytes
	Entries int   // archive entries of any type
	Depth   int   // path components of one name
	NameLen int   // bytes of one name as the archive spells it
}

// DefaultLimits are the limits of `vmm run -out` with a byte budget of
// bytes (the scratch disk's size, -out-size).
func DefaultLimits(bytes int64) Limits {
	return Limits{Bytes: bytes, Entries: MaxEntries, Depth: MaxDepth, NameLen: MaxNameLen}
}

// Extract unpacks the tar stream the guest wrote to the out disk into
// dir. The stream is guest data, so it is treated as hostile: only
// directories, regular files and symbolic links that stay inside dir
// (safeLink) are created, every name must stay inside dir (os.Root
// enforces it even against symlinks already there), existing files are
// replaced, never followed, and lim bounds the bytes, entries, depth and
// name lengths; an archive that breaks a limit stops the extraction with
// an error, leaving what was extracted before it. ctx stops it too (vmm's
// -timeout and signals), between reads, so even a huge file is abandoned
// promptly.
//
// An entry that is skipped rather than refused (a link that would lead
// out of dir, a device, a FIFO, a hard link) is reported to warn, if it
// is not nil, one line each for the first maxWarnings and then a count,
// so a job's output is never lost without a word. It returns how many
// files and links it wrote.
func Extract(ctx context.Context, r io.Reader, dir string, lim Limits, warn func(msg string)) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("-out: stopped: %w", context.Cause(ctx))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("-out %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("-out %s: %w", dir, err)
	}
	defer root.Close()
	x := extractor{root: root, lim: lim, dirs: map[string]bool{}, warn: warn}
	defer x.closeDir()
	defer x.warnSummary()
	tr := tar.NewReader(ctxReader{ctx, r})
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return x.files, nil
		}
		if ctx.Err() != nil {
			return x.files, fmt.Errorf("-out: stopped after %d files: %w", x.files, context.Cause(ctx))
		}
		if err != nil {
			return x.files, fmt.Errorf("-out: guest output archive: %w", err)
		}
		if err := x.count(); err != nil {
			return x.files, err
		}
		if len(h.Name) > lim.NameLen {
			return x.files, fmt.Errorf("-out: guest output archive: name %.40q... is longer than %d bytes", h.Name, lim.NameLen)
		}
		name, ok := cleanName(h.Name)
		if !ok {
			return x.files, fmt.Errorf("-out: guest output archive: unsafe name %q", h.Name)
		}
		if name == "." {
			continue
		}
		if d := strings.Count(name, "/") + 1; d > lim.Depth {
			return x.files, fmt.Errorf("-out: guest output archive: %.40q... is %d directories deep, more than %d", name, d, lim.Depth)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := x.mkdir(name, false); err != nil {
				return x.files, err
			}
		case tar.TypeReg:
			if h.Size < 0 || h.Size > lim.Bytes-x.written {
				return x.files, fmt.Errorf("-out: guest output exceeds %d bytes", lim.Bytes)
			}
			dir, base := path.Split(name)
			parent, err := x.openDir(path.Clean(dir))
			if err != nil {
				return x.files, err
			}
			// Remove first, so an existing symlink is replaced, not
			// written through.
			if err := parent.Remove(base); err != nil && !errors.Is(err, os.ErrNotExist) {
				return x.files, fmt.Errorf("-out: %w", err)
			}
			delete(x.dirs, name) // an empty directory goes too
			f, err := parent.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode).Perm()|0o600)
			if err != nil {
				return x.files, fmt.Errorf("-out: %s: %w", name, err)
			}
			n, err := io.Copy(f, io.LimitReader(tr, h.Size))
			x.written += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil && n != h.Size {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				// A file cut short (the archive ended, or a stop
				// ended the read: ctxReader's error) must not pass
				// for the job's whole file under its name.
				_ = parent.Remove(base)
			}
			if ctx.Err() != nil {
				return x.files, fmt.Errorf("-out: stopped after %d files: %w", x.files, context.Cause(ctx))
			}
			if err != nil {
				return x.files, fmt.Errorf("-out %s: %w", name, err)
			}
			x.files++
		case tar.TypeSymlink:
			if err := x.symlink(name, h.Linkname); err != nil {
				return x.files, err
			}
		default:
			// Hard links, devices and FIFOs from a guest have no
			// business on the host (vmm-init sends none): skip them.
			x.skip("%s: skipped: %s", name, typeName(h.Typeflag))
		}
	}
}

// maxWarnings is how many skipped entries Extract names one by one; the
// rest are counted in one line, so a hostile archive of 100,000 FIFOs
// cannot flood the user's terminal.
const maxWarnings = 10

// skip reports an entry Extract did not create.
func (x *extractor) skip(format string, args ...any) {
	x.skipped++
	if x.warn != nil && x.skipped <= maxWarnings {
		x.warn(fmt.Sprintf("-out: "+format, args...))
	}
}

func (x *extractor) warnSummary() {
	if x.warn != nil && x.skipped > maxWarnings {
		x.warn(fmt.Sprintf("-out: skipped %d more entries", x.skipped-maxWarnings))
	}
}

func typeName(t byte) string {
	switch t {
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a FIFO"
	}
	return fmt.Sprintf("tar entry type %q", t)
}

// symlink makes name a symbolic link to target, when safeLink allows the
// target and name's parents are real directories, so the link resolves
// where safeLink computed; otherwise it skips the entry with a warning.
// An existing file or link at name is replaced; a directory is not.
func (x *extractor) symlink(name, target string) error {
	if !safeLink(name, target, x.lim.NameLen) {
		x.skip("%s: skipped: a symbolic link to %s, which leads out of the output directory", name, quoteShort(target))
		return nil
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir)
	parent, err := x.openDir(dir)
	if err != nil {
		return err
	}
	if !x.realDirs(dir) {
		x.skip("%s: skipped: a symbolic link inside another symbolic link", name)
		return nil
	}
	if st, err := parent.Lstat(base); err == nil && st.IsDir() {
		x.skip("%s: skipped: a symbolic link in place of a directory", name)
		return nil
	}
	if err := parent.Remove(base); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("-out: %w", err)
	}
	if err := parent.Symlink(target, base); err != nil {
		return fmt.Errorf("-out: %s: %w", name, err)
	}
	x.files++
	return nil
}

// realDirs says whether every component of dir (a clean name relative to
// the root) is a directory, not a symbolic link to one: a link's ".."
// then climbs exactly the directories its name shows.
func (x *extractor) realDirs(dir string) bool {
	if dir == "." {
		return true
	}
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		st, err := x.root.Lstat(dir[:i])
		if err != nil || !st.IsDir() {
			return false
		}
	}
	return true
}

// safeLink says whether a symbolic link named name (clean, relative to the
// output directory) with this target keeps whoever follows it inside the
// output directory, so that a tool that later reads or uploads the
// directory cannot be led to the host's own files (rsync's --safe-links
// skips the same links). The target must be relative and not empty, no
// longer than maxLen, free of NUL, and may climb with ".." only at its
// start and no higher than name's parent is deep: after the first other
// component it only descends, through entries that are themselves inside
// (directories, or links this rule let in). Links made before the
// extraction are the user's.
func safeLink(name, target string, maxLen int) bool {
	if target == "" || len(target) > maxLen || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return false
	}
	depth := strings.Count(name, "/") // directories above the link
	climbing := true
	for _, c := range strings.Split(target, "/") {
		switch {
		case c == "" || c == ".":
		case c == "..":
			if !climbing || depth == 0 {
				return false
			}
			depth--
		default:
			climbing = false
		}
	}
	return true
}

// extractor is one Extract's state.
type extractor struct {
	root    *os.Root
	lim     Limits
	entries int // archive entries plus the directories their names implied
	files   int
	written int64
	skipped int
	warn    func(string)
	// dirs are the directories known to exist, so that the parents of
	// each name are made (and counted) once, not walked again per file.
	dirs map[string]bool
	// dir is the directory of the last file written, kept open: os.Root
	// resolves a name one component at a time, which for a file 60
	// directories deep costs hundreds of system calls, and archives list
	// a directory's files together.
	dir     *os.Root
	dirName string
}

// openDir makes directory name and returns it open, as a root of its own
// so that files in it are created without walking its parents again.
func (x *extractor) openDir(name string) (*os.Root, error) {
	if name == "." {
		return x.root, nil
	}
	if x.dir != nil && x.dirName == name {
		return x.dir, nil
	}
	if err := x.mkdir(name, true); err != nil {
		return nil, err
	}
	x.closeDir()
	d, err := x.root.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	x.dir, x.dirName = d, name
	return d, nil
}

func (x *extractor) closeDir() {
	if x.dir != nil {
		x.dir.Close()
		x.dir = nil
	}
}

// count charges one entry, or one directory a name implies, to the
// Entries budget: a name 60 directories deep that the archive never
// listed creates 60 directories, and they count as much as listed ones.
func (x *extractor) count() error {
	if x.entries++; x.entries > x.lim.Entries {
		return fmt.Errorf("-out: guest output archive has more than %d entries (counting the directories its names imply)", x.lim.Entries)
	}
	return nil
}

// mkdir makes directory dir and its missing parents. implied says dir
// itself was not an archive entry, so making it counts; its parents
// always are implied.
func (x *extractor) mkdir(dir string, implied bool) error {
	if dir == "." || x.dirs[dir] {
		return nil
	}
	if err := x.mkdir(path.Dir(dir), true); err != nil {
		return err
	}
	if implied {
		if err := x.count(); err != nil {
			return err
		}
	}
	if err := x.root.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
		// Left from an earlier run or made by an entry: it must be a
		// directory (a symlink inside the root resolves within it).
		if st, err := x.root.Stat(dir); err != nil {
			return fmt.Errorf("-out: %w", err)
		} else if !st.IsDir() {
			return fmt.Errorf("-out: %s: not a directory", dir)
		}
	} else if err != nil {
		return fmt.Errorf("-out: %w", err)
	}
	x.dirs[dir] = true
	return nil
}

// ctxReader fails every Read once ctx is done. Extract reads the archive
// through it, so cancellation reaches both the header loop and the copy
// of a file's data, which reads at most 32 KiB at a time.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// cleanName turns a tar name into a slash path relative to the output
// directory, refusing absolute names and any ".." that climbs out.
func cleanName(n string) (string, bool) {
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) {
		return "", false
	}
	c := path.Clean(n)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}

// quoteShort quotes s for a message, at most its first 100 bytes: a
// link target from the archive may be 1 MiB long.
func quoteShort(s string) string {
	if len(s) > 100 {
		return strconv.Quote(s[:100]) + "..."
	}
	return strconv.Quote(s)
}
