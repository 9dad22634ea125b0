package share

import (
	"sync"

	"golang.org/x/sys/unix"
)

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
// or read another process's memory (/proc/PID/mem); writing one changes
// the host kernel (/proc/sys, /sys). A share of / run as root reaches the
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

// kernelFSes remembers, per device number, whether a file system of
// the share is one of the kernel's (isKernelFS): one fstatfs per file
// system the guest opens files on, not per open. A device number names
// one mounted file system for as long as it is mounted.
type kernelFSes struct {
	mu    sync.RWMutex
	known map[uint64]bool
	// statfs is unix.Fstatfs; tests give file system types of their own.
	statfs func(fd int, st *unix.Statfs_t) error
}

// is reports whether n lives on one of the kernel's file systems. A
// node whose file system cannot be asked counts as one: the open it
// guards is refused, not let through.
func (k *kernelFSes) is(n *node) bool {
	k.mu.RLock()
	kernel, ok := k.known[n.key.dev]
	k.mu.RUnlock()
	if ok {
		return kernel
	}
	var st unix.Statfs_t
	if err := n.do(func(fd int) error { return retry(func() error { return k.statfs(fd, &st) }) }); err != nil {
		return true
	}
	kernel = isKernelFS(int64(st.Type))
	k.mu.Lock()
	if k.known == nil {
		k.known = map[uint64]bool{}
	}
	k.known[n.key.dev] = kernel
	k.mu.Unlock()
	return kernel
}
