package rawsys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LocalFD says whether every file system reachable from fd, a file or a
// directory tree, is local: the one fd is on and every one mounted below
// it (at the time of the call) is of a type whose calls end (localType),
// on block devices that cannot wait for a server (localDevice). A raw
// call that never returned would stop the whole program, not one
// thread: the garbage collector's stop-the-world waits for every P, and
// a raw call holds one. Network and FUSE file systems (NFS, CIFS, sshfs,
// ...), and local ones on NBD, RBD, iSCSI, multipath or a loop device
// over those, can leave a call waiting for ever, so files on them go
// through the scheduler. A file system mounted below fd after the call
// is not seen, nor one below an overlay's layers (overlay is not taken
// as local).
func LocalFD(fd int) (bool, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("mount table: %w", err)
	}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return false, err
	}
	id := mountID(fd)
	sys := sysfs{root: "/sys", info: info}
	return localIn(info, path, id, sys.local), nil
}

// mountID is the ID of the mount fd is on (/proc/self/fdinfo's mnt_id,
// Linux 3.15), or -1 when it cannot be read.
func mountID(fd int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			if id, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return id
			}
		}
	}
	return -1
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	id             int
	majmin         string // the device, "major:minor"
	point          string // where it is mounted, unescaped
	fstype, source string
}

// localIn is LocalFD over a mount table in /proc/self/mountinfo's format
// (Documentation/filesystems/proc.rst, "/proc/<pid>/mountinfo"): per
// line, fields up to the mount point's, optional fields, a "-", then the
// file system's type and source. path is the file's, id its mount's (-1:
// the mount with the longest mount point holding path, the last of
// equals). device says whether a mount's device is local. A table it
// cannot read says not local.
func localIn(info []byte, path string, id int, device func(m mount) bool) bool {
	path = filepath.Clean(path)
	if !filepath.IsAbs(path) {
		return false
	}
	var on *mount
	var below []mount
	for line := range bytes.Lines(info) {
		m, ok := parseMount(string(bytes.TrimRight(line, "\n")))
		if !ok {
			return false
		}
		switch {
		case id >= 0 && m.id == id:
			on = &m
		case id < 0 && within(path, m.point) && (on == nil || len(m.point) >= len(on.point)):
			on = &m
		}
		if m.point != path && within(m.point, path) {
			below = append(below, m)
		}
	}
	if on == nil || !localType(on.fstype) || !device(*on) {
		return false
	}
	for _, m := range below {
		if !localType(m.fstype) || !device(m) {
			return false
		}
	}
	return true
}

// within says whether path is dir or below it.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// parseMount reads a mountinfo line.
func parseMount(line string) (mount, bool) {
	fields := strings.Fields(line)
	// ID, parent ID, major:minor, root, mount point, options, then
	// optional fields up to "-", then type, source and options.
	if len(fields) < 9 {
		return mount{}, false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(fields) {
		return mount{}, false
	}
	id, err := strconv.Atoi(fields[0])
	if err != nil {
		return mount{}, false
	}
	point, ok := unescape(fields[4])
	if !ok || !filepath.IsAbs(point) {
		return mount{}, false
	}
	source, ok := unescape(fields[sep+2])
	if !ok {
		return mount{}, false
	}
	return mount{id: id, majmin: fields[2], point: filepath.Clean(point), fstype: fields[sep+1], source: source}, true
}

// unescape undoes the kernel's octal escapes in a mount point (space,
// tab, newline and backslash as \040, \011, \012, \134:
// fs/proc_namespace.c, mangle).
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
// Anything else, including types not listed, goes through the scheduler;
// so does overlay, whose layers can be anywhere (an NFS lower directory
// is supported) and are named in its options by paths of the namespace
// that mounted it.
func localType(fstype string) bool {
	switch fstype {
	case "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs",
		"vfat", "exfat", "ntfs3", "squashfs", "erofs", "iso9660", "udf",
		"hfsplus", "nilfs2", "tmpfs", "ramfs", "rootfs":
		return true
	}
	return false
}

// maxDepth bounds how far sysfs.local follows devices stacked on
// devices (a loop file on a file system on device mapper on a disk).
const maxDepth = 8

// sysfs tells local block devices from ones that can wait for a server
// for ever, from what /sys/dev/block says of them.
type sysfs struct {
	root string // "/sys", or a test's tree
	info []byte // the mount table, for a loop device's backing file
}

func (s sysfs) local(m mount) bool { return s.localMount(m, 0) }

func (s sysfs) localMount(m mount, depth int) bool {
	majmin := m.majmin
	if strings.HasPrefix(majmin, "0:") {
		// No block device of its own: a memory file system, or one that
		// spans devices (btrfs, bcachefs) and names one as its source.
		if !strings.HasPrefix(m.source, "/dev/") {
			return true
		}
		var st unix.Stat_t
		if err := unix.Stat(m.source, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return true // zfs's "pool/dataset", tmpfs's "tmpfs", ...
		}
		majmin = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return s.localDevice(majmin, depth)
}

// localDevice says whether block device majmin, and every device it is
// built on, is local: not a network block device (nbd, rbd, drbd), not
// on an iSCSI session, not a multipath map (which may queue I/O while no
// path is up), and, for a loop device, backed by a file on a local file
// system. A device sysfs does not describe is not local.
func (s sysfs) localDevice(majmin string, depth int) bool {
	if depth > maxDepth {
		return false
	}
	dir := filepath.Join(s.root, "dev", "block", majmin)
	target, err := os.Readlink(dir)
	if err != nil {
		return false
	}
	name := filepath.Base(target)
	switch {
	case strings.HasPrefix(name, "nbd"), strings.HasPrefix(name, "rbd"), strings.HasPrefix(name, "drbd"):
		return false
	case strings.Contains(target, "/session"): // .../hostN/sessionM/targetN:0:0/...
		return false
	}
	if uuid, err := os.ReadFile(filepath.Join(dir, "dm", "uuid")); err == nil && bytes.HasPrefix(uuid, []byte("mpath-")) {
		return false
	}
	if strings.HasPrefix(name, "loop") {
		b, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
		backing := strings.TrimSpace(string(b))
		if err != nil || backing == "" {
			return false
		}
		return localIn(s.info, strings.TrimSuffix(backing, " (deleted)"), -1, func(m mount) bool { return s.localMount(m, depth+1) })
	}
	slaves, err := os.ReadDir(filepath.Join(dir, "slaves"))
	if err != nil && !os.IsNotExist(err) {
		return false
	}
	for _, e := range slaves {
		b, err := os.ReadFile(filepath.Join(dir, "slaves", e.Name(), "dev"))
		if err != nil || !s.localDevice(strings.TrimSpace(string(b)), depth+1) {
			return false
		}
	}
	return true
}
