package main

import (
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
// the guest a root with no links.)
func lockedEmptyDir(pattern string) (dir string, release func(), err error) {
	sweepEmptyDirs(os.TempDir(), pattern)
	// Another vmm's sweep may take the new directory for a leftover in
	// the moment before it is locked: then it is gone, and tried again.
	for range 5 {
		if dir, err = os.MkdirTemp("", pattern); err != nil {
			return "", nil, err
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Rmdir(dir)
			continue
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			continue // a sweep holds it, and removes it
		}
		return dir, func() {
			unix.Rmdir(dir) // while locked: no sweep sees it unheld
			unix.Close(fd)
		}, nil
	}
	return "", nil, fmt.Errorf("%s: could not make and lock an empty directory", filepath.Join(os.TempDir(), pattern))
}

// sweepEmptyDirs removes the empty directories in tmp whose names match
// pattern (a filepath.Match pattern) and which no process holds a flock
// on. A directory with anything in it, a symbolic link, another user's
// directory (its owner alone may remove it from a sticky $TMPDIR) or
// one held stays.
func sweepEmptyDirs(tmp, pattern string) {
	names, err := filepath.Glob(filepath.Join(tmp, pattern))
	if err != nil {
		return
	}
	for _, p := range names {
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
