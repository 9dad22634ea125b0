package share

import "golang.org/x/sys/unix"

// Magic numbers the headers of x/sys/unix lack (include/uapi/linux/magic.h).
const (
	configfsMagic = 0x62656570 // CONFIGFS_MAGIC
	fusectlMagic  = 0x65735543 // FUSECTL_SUPER_MAGIC
)

// isKernelFS reports whether a file system of type t (statfs(2)'s
// f_type) is one of the kernel's interfaces rather than a store of data:
// its regular files are calls into the kernel. Reading one may wait for
// ever (/proc/kmsg until the next kernel message, tracefs's trace_pipe
// until the next event), take what it reads from the host (kmsg again),
// or read another process's memory (/proc/PID/mem); writing one, or
// making or removing an entry (a cgroup, a configfs item, a pinned BPF
// object), changes the host kernel. A share of / run as root reaches the
// host's /proc and /sys below it: the guest's own mounts hide them from
// a job, not from a guest that mounts the share again.
func isKernelFS(t int64) bool {
	switch t {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.DEBUGFS_MAGIC,
		unix.TRACEFS_MAGIC, unix.SECURITYFS_MAGIC, configfsMagic,
		unix.EFIVARFS_MAGIC, unix.BPF_FS_MAGIC, unix.CGROUP_SUPER_MAGIC,
		unix.CGROUP2_SUPER_MAGIC, unix.PSTOREFS_MAGIC, fusectlMagic,
		unix.SELINUX_MAGIC, unix.SMACK_MAGIC, unix.BINFMTFS_MAGIC,
		unix.NSFS_MAGIC:
		return true
	}
	return false
}

// kernelFile reports whether n lives on one of the kernel's file systems
// (isKernelFS), asked at every call rather than remembered: a file
// system's device number is reused once it is unmounted, and a procfs
// mounted later (a build chroot's) may get a tmpfs's old one. A node
// whose file system cannot be asked counts as the kernel's: what it
// guards is refused, not let through.
func (fs *fsys) kernelFile(n *node) bool {
	var st unix.Statfs_t
	if err := n.do(func(fd int) error { return retry(func() error { return fs.sys.Fstatfs(fd, &st) }) }); err != nil {
		return true
	}
	return isKernelFS(int64(st.Type))
}
