// Command l1init is /init of the L1 guest that the nested harness boots
// under QEMU TCG, so that vmm gets a real /dev/kvm on machines without one.
//
// As PID 1 it sets up a minimal system, loads the kvm modules packed into
// the initramfs and serves the host's requests on /dev/ttyS1 (see package
// vmm/tools/nested/proto). Jobs run on /dev/ttyS0, which carries nothing but the
// job's own bytes; the kernel and this agent log to ttyS2.
//
// When not PID 1 it is a small multi-call tool (see tools.go): L1 has no
// shell or coreutils, and the harness's tests need something to run there.
package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if os.Getpid() != 1 {
		os.Exit(toolMain(os.Args[1:]))
	}
	logger := log.New(os.Stderr, "l1init: ", log.Lmicroseconds)
	if err := agentMain(logger); err != nil {
		logger.Printf("fatal: %v", err)
	}
	poweroff(logger)
}

// poweroff ends L1. The kernel panics if PID 1 returns, which also stops
// QEMU (-no-reboot, panic=-1), but a clean power-off keeps the log readable.
func poweroff(logger *log.Logger) {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		logger.Printf("power off: %v", err)
	}
	// Reboot does not return on success; never let PID 1 exit regardless.
	for {
		time.Sleep(time.Hour)
	}
}

// setupSystem mounts what the agent and the jobs need: /dev for the serial
// ports and /dev/kvm, /proc and /sys for vmm and for diagnostics, and /tmp
// because the initramfs root is the only other writable place.
func setupSystem() error {
	mounts := []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return nil
}

// loadModules loads modules in the given order (the host ordered them
// dependencies first). A module that is already present is not an error:
// the same image may meet a kernel with kvm built in.
func loadModules(paths []string, logger *log.Logger) ([]string, error) {
	var loaded []string
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			if errors.Is(err, unix.EEXIST) {
				logger.Printf("module %s already loaded", p)
				continue
			}
			return loaded, err
		}
		loaded = append(loaded, p)
	}
	return loaded, nil
}

// moduleInitCompressedFile is MODULE_INIT_COMPRESSED_FILE from
// <linux/module.h>: the kernel decompresses the module itself.
const moduleInitCompressedFile = 4

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer f.Close()
	flags := 0
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if len(path) > len(ext) && path[len(path)-len(ext):] == ext {
			flags |= moduleInitCompressedFile
		}
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// waitForFile polls because device nodes can appear a moment after the
// module that registers them has finished loading.
func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := os.Stat(path)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v: %w", path, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
