package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guestabi"
)

// Where a -rootfs job's root is assembled: the share read-only at
// rootLower, a tmpfs at rootRW holding the overlay's upper and work
// directories, and the overlay at rootDir, which the job is chrooted to.
const (
	rootLower = "/vmm/root-lower"
	rootRW    = "/vmm/root-rw"
	rootDir   = "/vmm/root"
)

// mountErr says what a failed mount most likely lacks: ENODEV means the
// kernel does not know the file system type, which for a modular kernel
// is a module the initramfs did not carry or could not load.
func mountErr(what, fstype, module string, err error) error {
	if errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("%s: the kernel has no %s file system (is module %s in the initramfs?)", what, fstype, module)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// shareReadAheadKiB is the readahead a share gets once mounted: the 1 MiB
// vmm's FUSE server moves per READ (virtio/fs/share's MaxWrite, which it
// announces as max_pages). Linux starts every FUSE mount's backing device
// at 128 KiB (VM_READAHEAD_PAGES) and its INIT only lowers that, so a
// large file read through the page cache went out as 128 KiB READs, 8
// requests per MiB where 9p with msize=512000 needs 2 or 3.
const shareReadAheadKiB = 1024

// bdiReadAhead is the sysfs file holding the readahead of the backing
// device of a file system with device number dev: FUSE names its device
// "major:minor" after the superblock's (fs/fuse/inode.c, fuse_bdi_init).
func bdiReadAhead(dev uint64) string {
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
}

// raiseReadAhead sets the readahead of the file system mounted at dir to
// kib. Only files opened afterwards see it. The stat must come first: a
// FUSE mount returns before the server's INIT reply is processed, which
// sets the readahead to the smaller of the kernel's and the server's, and
// the stat (a GETATTR) waits for it.
func raiseReadAhead(dir string, kib int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("readahead of %s: %w", dir, err)
	}
	if err := os.WriteFile(bdiReadAhead(st.Dev), []byte(fmt.Sprintf("%d\n", kib)), 0); err != nil {
		return fmt.Errorf("readahead of %s: %w", dir, err)
	}
	return nil
}

// mountShare mounts virtio-fs share tag at dir with shareReadAheadKiB of
// readahead (a failure to set it is reported, not fatal: the share works
// with the kernel's default, only slower for large reads).
func mountShare(tag, dir string, ro bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("virtio-fs %q: %w", tag, err)
	}
	var flags uintptr
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(tag, dir, "virtiofs", flags, ""); err != nil {
		return mountErr(fmt.Sprintf("mount virtio-fs %q at %s", tag, dir), "virtiofs", "virtiofs", err)
	}
	if err := raiseReadAhead(dir, shareReadAheadKiB); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: virtio-fs %q: %v\n", tag, err)
	}
	return nil
}

// prepareMounts mounts what the job asked for and returns the directory
// the job is to be chrooted to ("" for none) and the shares mounted, for
// unmountShares. With a root share it
// assembles the overlay, gives it fresh /proc, /sys, /dev and /tmp, and
// mounts the other shares and OutDir inside it.
func prepareMounts(spec guestabi.Spec) (root string, shares []string, err error) {
	if spec.RootTag == "" {
		for _, m := range spec.Mounts {
			if err := mountShare(m.Tag, m.Path, m.ReadOnly); err != nil {
				return "", shares, err
			}
			shares = append(shares, m.Path)
		}
		return "", shares, nil
	}
	if err := mountShare(spec.RootTag, rootLower, true); err != nil {
		return "", shares, err
	}
	if err := os.MkdirAll(rootRW, 0o755); err != nil {
		return "", shares, err
	}
	if err := unix.Mount("tmpfs", rootRW, "tmpfs", 0, "mode=0755"); err != nil {
		return "", shares, fmt.Errorf("mount tmpfs at %s: %w", rootRW, err)
	}
	upper, work := filepath.Join(rootRW, "upper"), filepath.Join(rootRW, "work")
	for _, d := range []string{upper, work, rootDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", shares, err
		}
	}
	opts := "lowerdir=" + rootLower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", rootDir, "overlay", 0, opts); err != nil {
		return "", shares, mountErr("mount the root overlay", "overlay", "overlay", err)
	}
	for _, m := range []struct{ src, dir, fstype, data string }{
		{"proc", "proc", "proc", ""},
		{"sysfs", "sys", "sysfs", ""},
		{"devtmpfs", "dev", "devtmpfs", ""},
		{"devpts", "dev/pts", "devpts", "newinstance,ptmxmode=0666"},
		// POSIX shared memory (shm_open, Python's multiprocessing).
		{"tmpfs", "dev/shm", "tmpfs", "mode=1777"},
		{"tmpfs", "tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "run", "tmpfs", "mode=0755"},
	} {
		dir := filepath.Join(rootDir, m.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", shares, err
		}
		if err := unix.Mount(m.src, dir, m.fstype, 0, m.data); err != nil {
			return "", shares, fmt.Errorf("mount %s at %s: %w", m.fstype, dir, err)
		}
	}
	for _, m := range spec.Mounts {
		p := filepath.Join(rootDir, m.Path)
		if err := mountShare(m.Tag, p, m.ReadOnly); err != nil {
			return "", shares, err
		}
		shares = append(shares, p)
	}
	if spec.Out {
		in := filepath.Join(rootDir, guestabi.OutDir)
		if err := os.MkdirAll(in, 0o755); err != nil {
			return "", shares, err
		}
		if err := unix.Mount(guestabi.OutDir, in, "", unix.MS_BIND, ""); err != nil {
			return "", shares, fmt.Errorf("bind %s into the root: %w", guestabi.OutDir, err)
		}
	}
	if err := devLinks(filepath.Join(rootDir, "dev")); err != nil {
		return "", shares, err
	}
	// The name server the guest learnt by DHCP, if any, for the job's
	// resolver; written into the overlay, never into the share.
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil && len(b) > 0 {
		if err := writeResolvConf(rootDir, b); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: the job's /etc/resolv.conf: %v\n", err)
		}
	}
	if err := addHostName(rootDir, nodeName()); err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: the job's /etc/hosts: %v\n", err)
	}
	return rootDir, shares, nil
}

// addHostName gives the root's /etc/hosts (the host's, read through the
// share) a line for the guest's name, in the overlay, when it does not
// name it already, so that the job can look itself up (nameHost).
func addHostName(root, name string) error {
	if st, err := os.Lstat(filepath.Join(root, "etc")); err != nil || !st.IsDir() {
		return nil // a root without /etc: nothing looks names up there
	}
	// The file the job would read: a link (NixOS's into /etc/static)
	// is followed inside root, not in the init's own file system.
	var b []byte
	if p, st, ok := resolveIn(root, "/etc/hosts"); ok {
		if !st.Mode().IsRegular() {
			return nil
		}
		var err error
		if b, err = os.ReadFile(filepath.Join(root, p)); err != nil {
			return err
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[0], "#") && slices.Contains(f[1:], name) {
			return nil
		}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return writeEtcFile(root, "hosts", append(b, "127.0.1.1\t"+name+"\n"...))
}

// devLinks adds to a fresh devtmpfs at dev the links udev or systemd
// would make and programs expect: /dev/fd (bash's process substitution,
// `<(cmd)`) and /dev/stdin, stdout and stderr. Links already there are
// left alone (the devtmpfs is the init's own, mounted again).
func devLinks(dev string) error {
	for _, l := range []struct{ name, target string }{
		{"fd", "/proc/self/fd"},
		{"stdin", "/proc/self/fd/0"},
		{"stdout", "/proc/self/fd/1"},
		{"stderr", "/proc/self/fd/2"},
	} {
		if err := os.Symlink(l.target, filepath.Join(dev, l.name)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link /dev/%s: %w", l.name, err)
		}
	}
	return nil
}

// writeResolvConf makes b the root's /etc/resolv.conf (writeEtcFile).
func writeResolvConf(root string, b []byte) error { return writeEtcFile(root, "resolv.conf", b) }

// writeEtcFile makes b the root's /etc/NAME, a regular file.
// What the root has there is replaced, not written through: a host's
// /etc/resolv.conf is often a symlink (systemd-resolved's into /run,
// which the job's fresh /run lacks, for a 127.0.0.53 server the guest
// does not have), and following an absolute link from outside the
// chroot would write into the init's own file system instead.
func writeEtcFile(root, name string, b []byte) error {
	etc := filepath.Join(root, "etc")
	if st, err := os.Lstat(etc); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a directory", "/etc")
	}
	p := filepath.Join(etc, name)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// unmountShares unmounts the shares in reverse order, so everything the
// job wrote reaches the host (the unmount waits for the FUSE server's
// answers to the last writes and releases) before vmm is told the
// status. A share still busy (a process the job left behind) is synced
// and detached instead.
func unmountShares(shares []string) {
	for i := len(shares) - 1; i >= 0; i-- {
		if err := unix.Unmount(shares[i], 0); err != nil {
			if fd, oerr := unix.Open(shares[i], unix.O_RDONLY|unix.O_DIRECTORY, 0); oerr == nil {
				unix.Syncfs(fd)
				unix.Close(fd)
			}
			unix.Unmount(shares[i], unix.MNT_DETACH)
		}
	}
}

// lookPathIn finds a command the way exec.LookPath does, but in the tree
// under root and with the PATH the job will see; it returns the path as
// seen from inside root.
func lookPathIn(root, name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // relative PATH entries mean nothing before the chdir
		}
		p := filepath.Join(dir, name)
		// Stat from outside root resolves an absolute symlink against
		// the initramfs, not root, where exec after the chroot will
		// resolve it; such a link is taken as it is (exec reports it
		// if it leads nowhere).
		full := filepath.Join(root, p)
		if st, err := os.Stat(full); err == nil {
			if !st.IsDir() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		} else if lst, err := os.Lstat(full); err == nil && lst.Mode()&os.ModeSymlink != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// envValue returns the last KEY=value for key in env.
func envValue(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v, true
		}
	}
	return "", false
}
