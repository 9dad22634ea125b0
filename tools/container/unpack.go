package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlink bounds a symlink target (PATH_MAX, like a name).
const maxSymlink = 4096

// UnpackStats says what Unpack created and what it left out.
type UnpackStats struct {
	Files, Dirs, Symlinks, HardLinks int
	// Skipped counts device nodes, FIFOs and sockets: a container gets
	// its /dev from the host instead, and an unprivileged user could
	// not create device nodes anyway.
	Skipped int
}

// Unpack extracts an initramfs (newc cpio, optionally gzip-compressed)
// into the directory root, which must exist, with the kernel's semantics
// for what the VM would see: later entries replace earlier ones, the first
// of a set of hard links carries the data and the others link to it.
//
// The archive is a file a user hands us, so every path is resolved with
// openat2(RESOLVE_IN_ROOT): ".." and symlinks, including ones the archive
// itself just created, cannot lead outside root. Ownership and times are
// not restored; permission bits are.
func Unpack(archive io.Reader, root string) (UnpackStats, error) {
	var st UnpackStats
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, fmt.Errorf("unpack: root %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	r, err := openArchive(archive)
	if err != nil {
		return st, fmt.Errorf("unpack: %w", err)
	}
	u := unpacker{root: rootFD, links: map[[3]uint32]string{}}
	for {
		e, err := r.next()
		if errors.Is(err, errEnd) {
			return u.st, nil
		}
		if err != nil {
			return u.st, fmt.Errorf("unpack: %w", err)
		}
		if err := u.add(e, r); err != nil {
			return u.st, fmt.Errorf("unpack: %s: %w", e.Name, err)
		}
	}
}

type unpacker struct {
	root  int
	st    UnpackStats
	links map[[3]uint32]string // (ino, major, minor) -> first name
}

// cleanName makes an archive name relative to root; "" means the root
// itself.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("NUL in name")
	}
	c := strings.TrimPrefix(path.Clean("/"+name), "/")
	return c, nil
}

func (u *unpacker) add(e entry, data io.Reader) error {
	name, err := cleanName(e.Name)
	if err != nil {
		return err
	}
	if name == "" {
		return nil // "." : root exists; its mode is the caller's
	}
	dir, base := path.Split(name)
	parent, err := u.mkdirs(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	perm := e.Mode & modePerms
	switch e.Mode & modeType {
	case modeDir:
		err := unix.Mkdirat(parent, base, perm)
		if errors.Is(err, unix.EEXIST) {
			var s unix.Stat_t
			if serr := unix.Fstatat(parent, base, &s, unix.AT_SYMLINK_NOFOLLOW); serr == nil && s.Mode&unix.S_IFMT == unix.S_IFDIR {
				err = unix.Fchmodat(parent, base, perm, 0)
			} else if err = u.remove(parent, base); err == nil {
				err = unix.Mkdirat(parent, base, perm)
			}
		}
		if err != nil {
			return err
		}
		// mkdir applies the umask; the archive's bits are what counts.
		if err := unix.Fchmodat(parent, base, perm, 0); err != nil {
			return err
		}
		u.st.Dirs++
	case modeReg:
		key := [3]uint32{e.Ino, e.Major, e.Minor}
		if e.NLink >= 2 {
			if first, ok := u.links[key]; ok {
				if err := u.remove(parent, base); err != nil {
					return err
				}
				if err := u.link(first, parent, base); err != nil {
					return err
				}
				u.st.HardLinks++
				return nil
			}
		}
		if err := u.writeFile(parent, base, perm, data); err != nil {
			return err
		}
		if e.NLink >= 2 {
			u.links[key] = name
		}
		u.st.Files++
	case modeLink:
		if e.Size > maxSymlink {
			return fmt.Errorf("symlink target of %d bytes", e.Size)
		}
		target := make([]byte, e.Size)
		if _, err := io.ReadFull(data, target); err != nil {
			return fmt.Errorf("symlink target: %w", unexpected(err))
		}
		if len(target) == 0 {
			return errors.New("empty symlink target")
		}
		if err := u.remove(parent, base); err != nil {
			return err
		}
		if err := unix.Symlinkat(string(target), parent, base); err != nil {
			return err
		}
		u.st.Symlinks++
	default:
		u.st.Skipped++
	}
	return nil
}

// mkdirs opens dir (relative to root) as a directory, creating what is
// missing like `mkdir -p`, and returns an O_PATH descriptor for it.
func (u *unpacker) mkdirs(dir string) (int, error) {
	dir = strings.TrimSuffix(dir, "/")
	fd, err := u.openDir(dir)
	if err == nil || !errors.Is(err, unix.ENOENT) || dir == "" {
		return fd, err
	}
	up, base := path.Split(dir)
	parent, err := u.mkdirs(up)
	if err != nil {
		return -1, err
	}
	err = unix.Mkdirat(parent, base, 0o755)
	unix.Close(parent)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return u.openDir(dir)
}

func (u *unpacker) openDir(dir string) (int, error) {
	if dir == "" {
		dir = "."
	}
	return unix.Openat2(u.root, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// remove deletes whatever is at parent/base, so that a later entry
// replaces it. A non-empty directory stays: the kernel would not replace
// it either.
func (u *unpacker) remove(parent int, base string) error {
	err := unix.Unlinkat(parent, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		err = unix.Unlinkat(parent, base, unix.AT_REMOVEDIR)
	}
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func (u *unpacker) writeFile(parent int, base string, perm uint32, data io.Reader) error {
	if err := u.remove(parent, base); err != nil {
		return err
	}
	// O_NOFOLLOW and O_EXCL refuse anything that appeared at the name in
	// between.
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	_, err = io.Copy(f, data)
	if err == nil {
		err = f.Chmod(os.FileMode(perm&0o777) | modeExtra(perm))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// modeExtra maps setuid, setgid and sticky bits to os.FileMode.
func modeExtra(perm uint32) os.FileMode {
	var m os.FileMode
	if perm&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// link makes parent/base a hard link to first (relative to root).
func (u *unpacker) link(first string, parent int, base string) error {
	dir, fbase := path.Split(first)
	fparent, err := u.openDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}
	defer unix.Close(fparent)
	return unix.Linkat(fparent, fbase, parent, base, 0)
}
