package rawsys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Local says whether every file system a file or directory tree at path
// can reach is local: the one path is on and every one mounted below it
// is of a type whose calls end in bounded time (localType). A raw call
// that never returned would stop the whole program, not one thread: the
// garbage collector's stop-the-world waits for every P, and a raw call
// holds one. Network and FUSE file systems (NFS, CIFS, sshfs, ...) can
// leave a call waiting for a server forever, so files on them go
// through the scheduler. path should be absolute with its symbolic links
// resolved (a descriptor's /proc/self/fd link), as the kernel writes
// mount points. A file system mounted below path after the call is not
// seen.
func Local(path string) (bool, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("mount table: %w", err)
	}
	return localIn(info, path), nil
}

// localIn is Local over a mount table in /proc/self/mountinfo's format
// (Documentation/filesystems/proc.rst, "/proc/<pid>/mountinfo"): per
// line, fields up to the mount point's, optional fields, a "-", then the
// file system's type. A table it cannot read says not local.
func localIn(info []byte, path string) bool {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) {
		return false
	}
	var under string // the mount path is on: the longest, the last of equals
	on := false
	found := false
	for line := range bytes.Lines(info) {
		point, fstype, ok := parseMount(string(bytes.TrimRight(line, "\n")))
		if !ok {
			return false
		}
		switch {
		case within(path, point):
			if len(point) >= len(under) || !found {
				under, on, found = point, localType(fstype), true
			}
		case within(point, path) && !localType(fstype):
			return false // a network or FUSE mount below path
		}
	}
	return found && on
}

// within says whether path is dir or below it.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// parseMount returns a mountinfo line's mount point (unescaped) and file
// system type.
func parseMount(line string) (point, fstype string, ok bool) {
	fields := strings.Fields(line)
	// ID, parent ID, major:minor, root, mount point, options, then
	// optional fields up to "-", then type and source.
	if len(fields) < 8 {
		return "", "", false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(fields) {
		return "", "", false
	}
	point, ok = unescape(fields[4])
	if !ok || !filepath.IsAbs(point) {
		return "", "", false
	}
	return filepath.Clean(point), fields[sep+1], true
}

// unescape undoes the kernel's octal escapes in a mount point (space,
// tab, newline and backslash as \040, \011, \012, \134: fs/proc_namespace.c,
// mangle).
func unescape(s string) (string, bool) {
	if !strings.Contains(s, `\`) {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", false
		}
		v := 0
		for _, c := range s[i+1 : i+4] {
			if c < '0' || c > '7' {
				return "", false
			}
			v = v*8 + int(c-'0')
		}
		if v > 0xff {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), true
}

// localType says whether a file system type (mountinfo's name for it)
// keeps its data on this machine: disk file systems and memory ones.
// Anything else, including types not listed, goes through the scheduler.
func localType(fstype string) bool {
	switch fstype {
	case "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs",
		"tmpfs", "ramfs", "rootfs", "overlay":
		return true
	}
	return false
}
