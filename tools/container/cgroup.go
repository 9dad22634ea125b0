package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCgroupMount is where a cgroup v2 hierarchy is mounted when the
// system has none yet (a bare L1 guest): the usual place.
const DefaultCgroupMount = "/sys/fs/cgroup"

// cpuPeriod is the cpu.max period in microseconds: the kernel's default
// (Documentation/admin-guide/cgroup-v2.rst, "cpu.max").
const cpuPeriod = 100000

// CgroupMount returns the mount point of the cgroup v2 hierarchy. With
// mount set, and none mounted, it mounts one at DefaultCgroupMount first.
func CgroupMount(mount bool) (string, error) {
	if p, err := findCgroup2(); err != nil || p != "" {
		return p, err
	}
	if !mount {
		return "", errors.New("no cgroup v2 hierarchy mounted")
	}
	if err := unix.Mount("cgroup2", DefaultCgroupMount, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mount cgroup2 on %s: %w", DefaultCgroupMount, err)
	}
	return DefaultCgroupMount, nil
}

// findCgroup2 reads /proc/self/mountinfo for a cgroup2 mount, preferring
// DefaultCgroupMount when there are several.
func findCgroup2() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			found = append(found, pf[4])
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("cgroup: mountinfo: %w", err)
	}
	if slices.Contains(found, DefaultCgroupMount) {
		return DefaultCgroupMount, nil
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return "", nil
}

// Limits are the cgroup v2 limits of a container.
type Limits struct {
	// MemoryBytes becomes memory.max (and memory.swap.max 0, so the
	// limit means RAM as it does for a VM); 0 leaves memory unlimited.
	MemoryBytes int64
	// CPUs becomes cpu.max: CPUs full periods per period, the share
	// of `-smp CPUs`; 0 leaves CPU time unlimited.
	CPUs int
}

func (l Limits) controllers() []string {
	var c []string
	if l.MemoryBytes > 0 {
		c = append(c, "memory")
	}
	if l.CPUs > 0 {
		c = append(c, "cpu")
	}
	return c
}

// CgroupUsable reports why limits l cannot be applied here, or nil if
// they can: a cgroup v2 hierarchy (mounted if there is none) whose root
// offers the controllers l needs. On hosts that still bind memory and cpu
// to cgroup v1 hierarchies it says so.
func CgroupUsable(l Limits) error {
	mount, err := CgroupMount(true)
	if err != nil {
		return err
	}
	have, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", mount, err)
	}
	for _, c := range l.controllers() {
		if !slices.Contains(strings.Fields(string(have)), c) {
			return fmt.Errorf("cgroup %s: controller %s not available (held by a cgroup v1 hierarchy?)", mount, c)
		}
	}
	return nil
}

// newCgroup creates a cgroup for one container under parent (a cgroup v2
// directory) with the limits applied, and returns its path.
func newCgroup(parent string, l Limits) (string, error) {
	ctrl := l.controllers()
	if len(ctrl) > 0 {
		have, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
		if err != nil {
			return "", fmt.Errorf("cgroup %s: %w", parent, err)
		}
		var missing []string
		for _, c := range ctrl {
			if !slices.Contains(strings.Fields(string(have)), c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("cgroup %s: controllers %v not available (held by a cgroup v1 hierarchy?)", parent, missing)
		}
		var enable []string
		for _, c := range ctrl {
			enable = append(enable, "+"+c)
		}
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
			return "", fmt.Errorf("cgroup %s: enable %v: %w", parent, ctrl, err)
		}
	}
	// A random name: several containers, or benchmarks, may share parent.
	dir, err := os.MkdirTemp(parent, "vmm-container-")
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	write := func(file, val string) error {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
			return fmt.Errorf("cgroup %s: %s %q: %w", dir, file, val, err)
		}
		return nil
	}
	if l.MemoryBytes > 0 {
		err = write("memory.max", strconv.FormatInt(l.MemoryBytes, 10))
		if err == nil {
			// Without swap accounting the file is absent: no swap
			// to forbid then.
			if _, serr := os.Stat(filepath.Join(dir, "memory.swap.max")); serr == nil {
				err = write("memory.swap.max", "0")
			}
		}
	}
	if err == nil && l.CPUs > 0 {
		err = write("cpu.max", fmt.Sprintf("%d %d", l.CPUs*cpuPeriod, cpuPeriod))
	}
	if err != nil {
		os.Remove(dir)
		return "", err
	}
	return dir, nil
}

// removeCgroup removes a container's cgroup once its processes are gone.
// After the container's PID 1 is reaped, the kernel may still be tearing
// down the rest of the PID namespace, and rmdir says EBUSY until it is
// done; that takes milliseconds, so a short bounded retry suffices.
func removeCgroup(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
