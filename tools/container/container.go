// Package container starts a program from a root directory the way a
// container runtime would, with nothing but the kernel's own mechanisms:
// new user, PID, mount, UTS, IPC, network and cgroup namespaces, a
// pivot_root into the directory, and cgroup v2 limits on memory and CPU.
// The boot benchmark uses it to start the guest's userland (its unpacked
// initramfs) as a container, for the VM-against-container comparison.
//
// Where the host's own root is an initramfs (pivot_root refuses to move
// away from it; our nested L1 guest is such a host), the setup moves the
// new root over / and chroots instead, as runc's --no-pivot does.
//
// The setup between clone and exec (mounts, pivot_root, hostname) must run
// inside the new namespaces, so it runs in a second stage of the calling
// binary itself, started as /proc/self/exe: programs using this package
// call Init first thing in main (and in TestMain).
//
// User namespace: the container's root (uid and gid 0) is the caller's
// own uid and gid, and nothing else is mapped. So the container needs no
// privilege beyond what creating a user namespace takes; the cgroup, if
// limits are asked for, needs write access to a cgroup v2 hierarchy.
package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Namespaces are the namespaces every container gets.
const Namespaces = unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS |
	unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// EnvMarker is put in the program's environment. "container" is the
// variable systemd and container managers set for a container's PID 1,
// and how the guest's init (vmm-init) knows it has no kernel of its own.
const EnvMarker = "container=vmm"

// Config describes a container.
type Config struct {
	// Root is the directory that becomes "/": an unpacked initramfs
	// (see Unpack). It is bind-mounted, not copied; the container's
	// writes land in it.
	Root string
	// Args is the program to run, an absolute path inside Root, and
	// its arguments: ["/init"] for an initramfs.
	Args []string
	// Env is the program's whole environment; EnvMarker is added.
	Env []string
	// Hostname is the UTS name; default "vmm-container".
	Hostname string
	// Limits are applied in a new cgroup under CgroupParent.
	Limits Limits
	// CgroupParent is a cgroup v2 directory to create the container's
	// cgroup in; "" means the root of the cgroup v2 hierarchy (mounted
	// at DefaultCgroupMount if there is none). Unused without limits.
	CgroupParent string
	// Stdin, Stdout and Stderr are the program's; nil means /dev/null.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Container is a started container.
type Container struct {
	cmd    *exec.Cmd
	cgroup string
	waited chan struct{}
	err    error

	// StartedAt is just before the clone; ExecAt is when the setup
	// stage had finished and the program was executed.
	StartedAt, ExecAt time.Time
}

// setupArg0 is argv[0] of the setup stage: how Init recognizes it.
const setupArg0 = "vmm-container-setup"

// statusFD is the setup stage's descriptor for reporting a failure. It
// is close-on-exec: the parent reading EOF means the program was
// executed.
const statusFD = 3

// Start creates the cgroup, clones the setup stage into new namespaces
// and returns once it has executed the program (or failed).
func Start(c Config) (*Container, error) {
	if c.Root == "" || len(c.Args) == 0 || !strings.HasPrefix(c.Args[0], "/") {
		return nil, errors.New("container: need a root directory and an absolute program path")
	}
	root, err := filepath.Abs(c.Root)
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if c.Hostname == "" {
		c.Hostname = "vmm-container"
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("container: own binary for the setup stage: %w", err)
	}

	ct := &Container{waited: make(chan struct{})}
	attr := &syscall.SysProcAttr{
		Cloneflags:                 Namespaces,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
		Setsid:                     true,
	}
	if ctrl := c.Limits.controllers(); len(ctrl) > 0 {
		parent := c.CgroupParent
		if parent == "" {
			if parent, err = CgroupMount(true); err != nil {
				return nil, fmt.Errorf("container: %w", err)
			}
		}
		if ct.cgroup, err = newCgroup(parent, c.Limits); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
		fd, err := unix.Open(ct.cgroup, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			removeCgroup(ct.cgroup)
			return nil, fmt.Errorf("container: open cgroup: %w", err)
		}
		defer unix.Close(fd)
		// clone3(CLONE_INTO_CGROUP): the child is born in the cgroup,
		// so no instant of it runs unlimited.
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}

	statusR, statusW, err := os.Pipe()
	if err != nil {
		ct.cleanup()
		return nil, fmt.Errorf("container: %w", err)
	}
	defer statusR.Close()
	cmd := &exec.Cmd{
		Path:        self,
		Args:        append([]string{setupArg0, root, c.Hostname}, c.Args...),
		Env:         append(append([]string(nil), c.Env...), EnvMarker),
		Stdin:       c.Stdin,
		Stdout:      c.Stdout,
		Stderr:      c.Stderr,
		ExtraFiles:  []*os.File{statusW}, // statusFD
		SysProcAttr: attr,
	}
	ct.cmd = cmd
	ct.StartedAt = time.Now()
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		ct.cleanup()
		return nil, fmt.Errorf("container: start: %w", err)
	}
	msg, rerr := io.ReadAll(io.LimitReader(statusR, 4096))
	ct.ExecAt = time.Now()
	go func() {
		ct.err = cmd.Wait()
		ct.cleanup()
		close(ct.waited)
	}()
	if rerr != nil || len(msg) > 0 {
		<-ct.waited
		if rerr != nil {
			return nil, fmt.Errorf("container: setup status: %w", rerr)
		}
		return nil, fmt.Errorf("container: %s", msg)
	}
	return ct, nil
}

func (ct *Container) cleanup() {
	if ct.cgroup != "" {
		removeCgroup(ct.cgroup)
	}
}

// Pid is the container's PID 1 as the host sees it.
func (ct *Container) Pid() int { return ct.cmd.Process.Pid }

// Cgroup is the container's cgroup directory, "" without limits. It is
// removed when the container has exited.
func (ct *Container) Cgroup() string { return ct.cgroup }

// Kill ends the container: SIGKILL to its PID 1 makes the kernel kill
// every process of its PID namespace.
func (ct *Container) Kill() error {
	err := ct.cmd.Process.Signal(syscall.SIGKILL)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Wait waits for PID 1 to exit and the cgroup to be removed, and returns
// how PID 1 ended (an *exec.ExitError for a non-zero status or a signal).
func (ct *Container) Wait() error {
	<-ct.waited
	return ct.err
}

// Done is closed once Wait would return.
func (ct *Container) Done() <-chan struct{} { return ct.waited }
