package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockedEmptyDir makes an empty directory in the temporary directory,
// named from pattern (os.MkdirTemp's), for the share slots a run does
// not use, and holds an exclusive flock(2) on it until release, which
// removes it. Before, it removes the empty directories of that pattern
// that no process holds: those of a vmm that could not remove its own,
// killed with SIGKILL (a CI runner's timeout, the OOM killer), which
// would otherwise pile up in $TMPDIR, one per killed run. flock rather
// than a process ID: a lock goes with its holder, whatever reuses the
// ID. (The scratch disk needs none of this: it is unlinked at once; a
// directory served to the guest is not, as its file system would show
// the guest a root with no links.) The patterns are new with the lock,
// so no sweep touches a directory an older vmm, which takes none, is
// using.
func lockedEmptyDir(pattern string) (dir string, release func(), err error) {
	sweepEmptyDirs(os.TempDir(), pattern)
	// Another vmm's sweep may take the new directory for a leftover in
	// the moment before it is locked: then it is gone (or going), and
	// tried again.
	for range 5 {
		if dir, err = os.MkdirTemp("", pattern); err != nil {
			return "", nil, err
		}
		fd, ok, err := lockDir(dir)
		if err != nil {
			unix.Rmdir(dir)
			return "", nil, fmt.Errorf("%s: %w", dir, err)
		}
		if !ok {
			continue
		}
		return dir, func() {
			unix.Rmdir(dir) // while locked: no sweep sees it unheld
			unix.Close(fd)
		}, nil
	}
	return "", nil, fmt.Errorf("%s: could not make and lock an empty directory", filepath.Join(os.TempDir(), pattern))
}

// lockDir opens the directory dir and takes its lock: ok is false if a
// sweep holds it or has removed it meanwhile (a lock taken on a
// directory removed between the open and the lock holds nothing: the
// path is checked to be the locked directory still).
func lockDir(dir string) (fd int, ok bool, err error) {
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, false, nil
	}
	if err != nil {
		return -1, false, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return -1, false, nil
		}
		return -1, false, fmt.Errorf("flock: %w", err)
	}
	if !sameDir(fd, dir) {
		unix.Close(fd)
		return -1, false, nil
	}
	return fd, true, nil
}

// sameDir reports whether the open directory fd is still the one at
// path, and not removed.
func sameDir(fd int, path string) bool {
	var held, named unix.Stat_t
	return unix.Fstat(fd, &held) == nil && unix.Lstat(path, &named) == nil &&
		held.Dev == named.Dev && held.Ino == named.Ino && held.Nlink > 0
}

// sweepEmptyDirs removes the empty directories in tmp whose names match
// pattern (a filepath.Match pattern) and which no process holds a flock
// on. A directory with anything in it, a symbolic link, another user's
// directory (its owner alone may remove it from a sticky $TMPDIR) or
// one held stays.
func sweepEmptyDirs(tmp, pattern string) {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		if ok, _ := filepath.Match(pattern, e.Name()); !ok || !e.IsDir() {
			continue
		}
		p := filepath.Join(tmp, e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			unix.Rmdir(p) // refused, and left, if anything is in it
		}
		unix.Close(fd)
	}
}
