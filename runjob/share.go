package runjob

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// addTree adds the directory tree at root to w under the name under.
//
// The walk goes by directory file descriptor (openat, fstatat,
// readlinkat), never by path, so that a tree that changes while vmm reads
// it cannot send the walk elsewhere: every entry is classified without
// following symlinks, directories and files are then opened with
// O_NOFOLLOW, and a file is read only if fstat on the open descriptor
// says it is still a regular file. A FIFO (opened with O_NONBLOCK, so the
// open does not wait for a writer) or a file swapped for a symlink is
// refused, not read.
//
// Only root itself is followed if it is a symlink, as `cp -r link/`
// does: the user named the directory to share, and copying the link
// would give the guest a /share pointing at a host path it does not have.
func addTree(w *cpioWriter, root, under string) error {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("-share %s: %w", root, err)
	}
	return addDir(w, fd, root, under)
}

// addDir adds the directory open as fd, which it closes, and what it
// holds. host is its host path, for errors; name is its archive name.
func addDir(w *cpioWriter, fd int, host, name string) error {
	d := os.NewFile(uintptr(fd), host)
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("-share: %s: %w", host, err)
	}
	w.dir(name, st.Mode&0o777)
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("-share: %s: %w", host, err)
	}
	slices.Sort(names) // the same tree makes the same archive
	for _, n := range names {
		if err := addEntry(w, fd, n, filepath.Join(host, n), name+"/"+n); err != nil {
			return err
		}
	}
	return nil
}

// addEntry adds entry n of the directory open as dirfd.
func addEntry(w *cpioWriter, dirfd int, n, host, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("-share: %s: %w", host, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("-share: %s: %w", host, changed(err))
		}
		return addDir(w, fd, host, name)
	case unix.S_IFREG:
		data, perm, err := readRegular(dirfd, n)
		if err != nil {
			return fmt.Errorf("-share: %s: %w", host, err)
		}
		w.file(name, perm, data)
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, n)
		if err != nil {
			return fmt.Errorf("-share: %s: %w", host, changed(err))
		}
		w.symlink(name, target)
	default:
		return fmt.Errorf("-share: %s: not a regular file, directory or symlink", host)
	}
	return nil
}

// errChanged is what a walk finds when an entry changed type between
// fstatat and its open (or readlinkat).
var errChanged = errors.New("not what it was a moment ago (changed while -share was read)")

// changed turns the errors an entry that changed type gives into
// errChanged: ELOOP from O_NOFOLLOW on what became a symlink, ENOTDIR
// from O_DIRECTORY, EINVAL from readlinkat on what is no longer a link.
func changed(err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EINVAL) {
		return errChanged
	}
	return err
}

// readRegular reads entry n of the directory open as dirfd, which must
// be a regular file smaller than the newc format's size limit, and
// returns its data and permission bits.
func readRegular(dirfd int, n string) ([]byte, uint32, error) {
	fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, changed(err)
	}
	f := os.NewFile(uintptr(fd), n)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, errChanged
	}
	if st.Size > cpioMaxFileSize {
		return nil, 0, fmt.Errorf("%d bytes is too large: the newc cpio archive -share builds holds files of at most %d bytes (4 GiB - 1)", st.Size, int64(cpioMaxFileSize))
	}
	// The size fstat saw bounds the read: a file that grows meanwhile is
	// cut there, one that shrinks ends early.
	data := make([]byte, st.Size)
	got, err := io.ReadFull(f, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return data[:got], st.Mode & 0o777, nil
}

// readlinkat reads symlink n of the directory open as dirfd. A Linux
// symlink's target is shorter than PATH_MAX (4096, linux/limits.h).
func readlinkat(dirfd int, n string) (string, error) {
	buf := make([]byte, 4096)
	got, err := unix.Readlinkat(dirfd, n, buf)
	if err != nil {
		return "", err
	}
	if got == len(buf) {
		return "", errors.New("symlink target longer than PATH_MAX")
	}
	return string(buf[:got]), nil
}
