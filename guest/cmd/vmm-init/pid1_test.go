package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestChoosesLogLevel(t *testing.T) {
	for _, tt := range []struct {
		cmdline string
		want    bool
	}{
		{"console=ttyS0 cryptomgr.notests\n", false},
		{"console=ttyS0 quiet\n", true},
		{"loglevel=7 console=ttyS0", true},
		{"debug", true},
		{"ignore_loglevel", true},
		{"rdinit=/init debugfs=on", false}, // only whole words count
		{"", false},
	} {
		if got := choosesLogLevel(tt.cmdline); got != tt.want {
			t.Errorf("choosesLogLevel(%q) = %v, want %v", tt.cmdline, got, tt.want)
		}
	}
}

func TestPID1Mounts(t *testing.T) {
	for _, inContainer := range []bool{false, true} {
		ms := pid1Mounts(inContainer)
		if !inContainer && ms[0].target != "/dev" {
			t.Errorf("first mount is %s: devtmpfs must come first, the others' mount points are under /dev and /sys", ms[0].target)
		}
		seen := map[string]bool{}
		for _, m := range ms {
			if !strings.HasPrefix(m.target, "/") || seen[m.target] {
				t.Errorf("container %v: mount point %q: not absolute, or twice", inContainer, m.target)
			}
			for p := range seen {
				if strings.HasPrefix(p, m.target+"/") {
					t.Errorf("container %v: %s is mounted after %s, which it would hide", inContainer, m.target, p)
				}
			}
			seen[m.target] = true
			if inContainer && strings.Contains(m.data, "gid=") {
				t.Errorf("container: %s has %q, and the container maps no group but 0", m.target, m.data)
			}
		}
		need := []string{"/tmp", "/dev/pts", "/dev/shm"}
		if !inContainer {
			need = append(need, "/dev", "/proc", "/sys")
		}
		for _, n := range need {
			if !seen[n] {
				t.Errorf("container %v: no %s", inContainer, n)
			}
		}
	}
}

func TestMountNeedless(t *testing.T) {
	required := pid1Mount{"proc", "/proc", "proc", "", false}
	optional := pid1Mount{"debugfs", "/sys/kernel/debug", "debugfs", "", true}
	for _, tt := range []struct {
		name string
		m    pid1Mount
		err  error
		want bool
	}{
		{"mounted", required, nil, true},
		{"already there", required, unix.EBUSY, true},
		{"required, kernel lacks it", required, unix.ENODEV, false},
		{"optional, kernel lacks it", optional, unix.ENODEV, true},
		{"optional, refused", optional, unix.EPERM, false},
		{"required, refused", required, unix.EPERM, false},
	} {
		if got := mountNeedless(tt.m, tt.err); got != tt.want {
			t.Errorf("%s: mountNeedless(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	// An optional file system whose mount point sysfs lacks is skipped
	// before any mount is tried.
	if err := mountOnce(pid1Mount{"debugfs", "/nonexistent-vmm-test/debug", "debugfs", "", true}); err != nil {
		t.Errorf("optional without its mount point: %v, want nil", err)
	}
}

func TestStatusOf(t *testing.T) {
	for _, tt := range []struct {
		name string
		ws   unix.WaitStatus
		want int
	}{
		{"exit 0", 0, 0},
		{"exit 3", 3 << 8, 3},
		{"exit 255", 255 << 8, 255},
		{"SIGKILL", unix.WaitStatus(unix.SIGKILL), 128 + 9},
		{"SIGTERM with core", unix.WaitStatus(unix.SIGTERM) | 0x80, 128 + 15},
	} {
		if got := statusOf(tt.ws); got != tt.want {
			t.Errorf("%s: statusOf(%#x) = %d, want %d", tt.name, uint32(tt.ws), got, tt.want)
		}
	}
}

// TestRunReaping: a child that ended before the one waited for is reaped
// on the way (as PID 1 it would be an orphan's zombie), and the status is
// the waited one's.
func TestRunReaping(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	other := exec.Command(sh, "-c", "exit 5")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until other is a zombie without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, other.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if got := runReaping(exec.Command(sh, "-c", "exit 3")); got != 3 {
		t.Errorf("status %d, want 3", got)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(other.Process.Pid, &ws, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
		t.Errorf("the other child is still there to wait for (%v): not reaped", err)
	}
	if got := runReaping(exec.Command(sh, "-c", "kill -9 $$")); got != 128+9 {
		t.Errorf("killed: status %d, want 137", got)
	}
	if got := runReaping(exec.Command("/nonexistent/command")); got != 127 {
		t.Errorf("missing command: status %d, want 127", got)
	}
}
