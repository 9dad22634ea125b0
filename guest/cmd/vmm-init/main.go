// Command vmm-init is the init of vmm's guest.
//
// The kernel starts it as the first process (/init in vmm's initramfs).
// It mounts what every guest has (/dev, /proc, /sys, /tmp, ...; pid1.go),
// loads the drivers (kernel modules shipped in the initramfs) of the
// devices the machine has, prints the ready
// marker the host waits for, and then runs `vmm run`'s job or starts the
// shell on the console, reaping orphans meanwhile. When the shell exits
// it powers the machine off.
//
// After the modules it brings lo up and configures each virtio-net card
// by DHCP (net.go), so a guest on vmm's -nic user network has its
// address, route and name server before the marker, or before a job
// starts.
//
// It used to be u-root's init that was the first process, starting
// vmm-init as its uinit. That init is general: it prints a banner, mounts
// a dozen cgroup v1 hierarchies, copies /etc to a tmpfs and sets up an
// in-guest Go toolchain's environment (GOROOT=/go, which a -rootfs job's
// own go command then refused). Booting with rdinit=/bin/vmm-init reached
// vmm-init about 0.7 s sooner in one nested L1 (boot-timer, 4 interleaved
// pairs: 2.2-2.5 s from the first exit against 2.9-3.2 s), out of a
// 4.4 s boot. Started by another init (not as PID 1), vmm-init still does
// its part and exits after the marker, as before.
//
// Invoked as "reboot" (through a symlink) it reboots the machine instead,
// because u-root's core commands only offer that as "shutdown reboot".
// Invoked as "modprobe" (/bin/modprobe) it loads a module by name or
// alias, which is how the kernel loads a file system on its first mount
// (modprobe.go).
//
// It stamps two phases on vmm's boot timer (package boottimer): init-start
// first thing and ready with the marker. In a container (the environment
// variable "container" is set, the convention of systemd and container
// managers) there is no kernel of our own to load modules into, so it
// skips them and prints the marker at once.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/guest/internal/kmod"
	"github.com/vmm-dev/vmm/guestabi"
)

// readyLine is what the host's tests wait for on the console; keep it in
// sync with guest.ReadyMarker.
const readyLine = "vmm-guest: ready"

func main() {
	switch filepath.Base(os.Args[0]) {
	case "reboot":
		if err := reboot(); err != nil {
			fmt.Fprintf(os.Stderr, "reboot: %v\n", err)
			os.Exit(1)
		}
		return
	case "modprobe":
		os.Exit(modprobe(os.Args[1:]))
	}
	stampBoot(guestabi.InitStart)
	pid1 := os.Getpid() == 1
	inContainer := os.Getenv("container") != ""
	if pid1 {
		defer powerOffOnPanic()
		setUpPID1(inContainer)
		if !inContainer {
			nameHost()
		}
	} else {
		releaseConsole()
	}
	if !inContainer {
		loDone := startLoopback()
		// Also when another init started vmm-init: the kernel's
		// default modprobe path is not vmm-init's (modprobePath).
		if err := useOurModprobe(); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		}
		if dir, err := moduleDir(); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		} else {
			loadModules(dir, waitAsked())
		}
		setUpNetwork(loDone) // after the modules: virtio_net is one
	}
	stampBoot(guestabi.Ready)
	runJobIfAsked() // `vmm run`: does not return when there is a job
	fmt.Println(readyLine)
	if pid1 {
		runConsoleShell() // does not return
	}
}

// moduleDir is /lib/modules/<the running kernel's release>.
func moduleDir() (string, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:])), nil
}

// loadModules loads the modules listed in dir/modules.dep that this
// machine needs now, dependencies first: with a modules.alias (vmm's
// image builder writes one), the drivers of the devices present (kmod's
// ForDevices), leaving file systems and drivers reached through a device
// node to the kernel's requests (modprobe.go); without one, all of them.
// Failures are reported one line each and do not stop the others: a guest
// with a missing driver is still more useful than no guest.
//
// Loading only what the devices need matters because each module costs
// the boot its relocation and initialisation: in one nested L1 (4
// interleaved pairs, boot-timer), vmm-init's phase took 0.48-0.53 s with
// all 15 modules of the default image and 0.17-0.28 s with one.
//
// A guest that will be snapshotted (snapshotFS) loads the file systems
// too: each restore would otherwise load them again on its first mount
// (a -rootfs job's overlay).
func loadModules(dir string, snapshotFS bool) {
	ix, aliases, err := readModuleIndex(dir)
	if errors.Is(err, os.ErrNotExist) {
		return // an image without modules
	}
	if err != nil && ix == nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmm-init: %v; loading every module\n", err)
	}
	if aliases == nil {
		order, err := ix.LoadOrder()
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
			return
		}
		loadAll(dir, order, map[string]bool{})
		return
	}
	makeStaticNodes(kmod.StaticNodes(aliases))
	loaded := map[string]bool{}
	if snapshotFS {
		mods, err := ix.Closure(kmod.FileSystems(aliases))
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
		} else {
			loadAll(dir, mods, loaded)
		}
	}
	// A bus driver finds devices that other drivers serve (virtio_pci's
	// PCI functions become virtio devices), so the devices are looked at
	// again after each round, until a round adds nothing.
	for range maxModuleRounds {
		mods, err := ix.ForDevices(aliases, deviceModaliases(sysBus), loaded)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: %v\n", err)
			return
		}
		if len(mods) == 0 {
			return
		}
		loadAll(dir, mods, loaded)
	}
}

// makeStaticNodes creates the device nodes of modules not loaded yet
// (kmod.StaticNodes): opening one makes the kernel ask modprobe for its
// module. A node already there (its module loaded) is left alone.
func makeStaticNodes(nodes []kmod.Node) {
	for _, n := range nodes {
		p := filepath.Join("/dev", n.Name)
		mode := uint32(unix.S_IFCHR)
		if n.Block {
			mode = unix.S_IFBLK
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: node for module %s: %v\n", n.Module, err)
			continue
		}
		err := unix.Mknod(p, mode|0o600, int(unix.Mkdev(n.Major, n.Minor)))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			fmt.Fprintf(os.Stderr, "vmm-init: node for module %s: mknod %s: %v\n", n.Module, p, err)
		}
	}
}

// maxModuleRounds bounds loadModules' rounds: vmm's deepest chain is a
// transport, then the drivers of the devices behind it.
const maxModuleRounds = 4

// loadAll loads mods in order and marks each as loaded, whether or not
// it loaded: a module that failed is not tried again.
func loadAll(dir string, mods []kmod.Module, loaded map[string]bool) {
	for _, m := range mods {
		loaded[kmod.Name(m.Path)] = true
		if err := load(filepath.Join(dir, m.Path)); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: load module %s: %v\n", kmod.Name(m.Path), err)
		}
	}
}

// readModuleIndex reads dir's modules.dep and modules.alias, for the boot
// and for modprobe alike. An error with a nil Index is the modules.dep's
// (os.ErrNotExist when the image has no modules); with an Index, the
// modules.alias's, and the aliases are nil.
func readModuleIndex(dir string) (*kmod.Index, []kmod.Alias, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, nil, err
	}
	ix, err := kmod.ParseDep(f)
	f.Close()
	if err != nil {
		return nil, nil, err
	}
	aliases, err := readAliases(filepath.Join(dir, "modules.alias"))
	return ix, aliases, err
}

// readAliases reads a modules.alias; nil without an error when there is
// none (an image made before vmm wrote one, or by another builder).
func readAliases(p string) ([]kmod.Alias, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	aliases, err := kmod.ParseAlias(f)
	if err != nil {
		return nil, err
	}
	if aliases == nil {
		aliases = []kmod.Alias{} // present but empty: every module that is not a library
	}
	return aliases, nil
}

// sysBus is where sysfs lists the devices of each bus (sysfs-bus(5)).
const sysBus = "/sys/bus"

// deviceModaliases returns the modalias of every device under bus
// (sysBus: BUS/devices/DEVICE/modalias), which is what a module alias
// matches. It lists each bus's devices and opens their modalias files
// directly: filepath.Glob of the same pattern also stats every candidate
// (and every bus's devices directory), and in a nested L1 the scan took
// 160-300 ms of vmm-init's phase with Glob for eight modaliases among
// about thirty devices; natively, on this project's machine, 4.2-5.2 ms
// against 1.4-1.6 ms this way.
func deviceModaliases(bus string) []string {
	var out []string
	buses, _ := os.ReadDir(bus)
	for _, b := range buses {
		dir := filepath.Join(bus, b.Name(), "devices")
		devs, _ := os.ReadDir(dir)
		for _, d := range devs {
			if m, ok := readModalias(filepath.Join(dir, d.Name(), "modalias")); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// readModalias reads one modalias file: a line, at most a page (sysfs
// attributes are). Devices without one (most buses' are optional) say
// ENOENT.
func readModalias(p string) (string, bool) {
	f, err := os.Open(p)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var buf [4096]byte
	n, err := io.ReadFull(f, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", false
	}
	m := strings.TrimSpace(string(buf[:n]))
	return m, m != ""
}

func load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil // already loaded (or built in): fine
	}
	return err
}

// releaseConsole gives up the controlling terminal without hanging it up.
//
// u-root's init starts us as a session leader with the console as
// controlling terminal. When a session leader exits, Linux hangs up its
// controlling terminal if that is not a pty: every open file of the serial
// console, including the ones init already opened for the shell it starts
// next, then reads EOF and fails writes, and the shell dies at once.
// TIOCNOTTY detaches the session without that hangup; it sends SIGHUP to
// our own process group, hence the Ignore.
func releaseConsole() {
	signal.Ignore(syscall.SIGHUP)
	for fd := 0; fd <= 2; fd++ {
		if unix.IoctlSetInt(fd, unix.TIOCNOTTY, 0) == nil {
			return
		}
	}
}

func reboot() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
