package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Init runs the container setup stage when this process is one, and
// returns at once otherwise. Call it first thing in main (and TestMain)
// of any binary that starts containers: Start re-executes the binary for
// the setup stage.
func Init() {
	if len(os.Args) < 4 || os.Args[0] != setupArg0 {
		return
	}
	err := setup(os.Args[1], os.Args[2], os.Args[3:])
	// setup returns only on failure: report it to Start and give up.
	status := os.NewFile(statusFD, "status")
	fmt.Fprintf(status, "setup: %v", err)
	os.Exit(1)
}

// hostDevices are bind-mounted from the host into the container's /dev,
// as container runtimes do: device nodes cannot be created in a user
// namespace, and these are harmless to share.
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// devLinks are the usual /dev symlinks.
var devLinks = [][2]string{
	{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
	{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	{"pts/ptmx", "ptmx"},
}

// setup runs as PID 1 of the new PID namespace, root of the new user
// namespace, in the new mount namespace (a copy of the host's). It makes
// root the file system root and executes args; it returns only errors.
func setup(root, hostname string, args []string) error {
	unix.CloseOnExec(statusFD)
	// Nothing mounted from here on may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// pivot_root needs the new root to be a mount point.
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", root, err)
	}
	if err := setupDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	// proc and sysfs must be mounted before pivot_root: in a user
	// namespace the kernel allows a new instance only while a fully
	// visible one exists in the mount namespace (the host's, until the
	// old root is detached). proc shows the new PID namespace, sysfs
	// the new network namespace.
	for _, m := range []struct{ fs, dir string }{{"proc", "proc"}, {"sysfs", "sys"}} {
		dir := filepath.Join(root, m.dir)
		if err := os.MkdirAll(dir, 0o555); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
		if err := unix.Mount(m.fs, dir, m.fs, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fs, dir, err)
		}
	}
	if err := unix.Sethostname([]byte(hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	// pivot_root(".", ".") stacks the old root under the new one at
	// "/"; detaching it leaves only the new root, with no directory
	// needed for the old one.
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir %s: %w", root, err)
	}
	err := unix.PivotRoot(".", ".")
	switch {
	case err == nil:
		if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detach old root: %w", err)
		}
	case errors.Is(err, unix.EINVAL):
		// The host's root is the initramfs itself (our L1 guest),
		// which cannot be pivoted away from. Do what runc's
		// --no-pivot does: move the new root over / and chroot into
		// it. The old root stays underneath, out of the file
		// system's reach but not out of a chroot escape's: weaker
		// isolation, the same work for the benchmark.
		if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to /: %w", root, err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot %s: %w", root, err)
		}
	default:
		return fmt.Errorf("pivot_root %s: %w", root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	err = unix.Exec(args[0], args, os.Environ())
	return fmt.Errorf("exec %s: %w", args[0], err)
}

// setupDev gives the container a /dev of its own: a tmpfs with the host
// devices bound in, the standard links, and mount points for devpts and
// shm (which the container's init mounts).
func setupDev(dev string) error {
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", dev, err)
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dev, err)
	}
	for _, d := range hostDevices {
		p := filepath.Join(dev, d)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		f.Close()
		err = unix.Mount("/dev/"+d, p, "", unix.MS_BIND, "")
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
			os.Remove(p) // the host lacks it: so does the container
			continue
		}
		if err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	for _, l := range devLinks {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("symlink %s: %w", l[1], err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return fmt.Errorf("mkdir /dev/%s: %w", d, err)
		}
	}
	return nil
}
