package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmm-dev/vmm/guest/internal/kmod"
)

// modprobePath is vmm-init's modprobe link in vmm's image, which PID 1
// makes the kernel's modprobe (/proc/sys/kernel/modprobe). It is not
// CONFIG_MODPROBE_PATH's default, /sbin/modprobe, on purpose: the kernel
// runs that path for requests during its initcalls, before PID 1, when
// no module can help (Debian's cloud kernel asks for
// crypto-hmac(sha256), built in, at crypto_kdf108_init). With vmm-init
// there, each request started a 3 MB Go program (initcall_debug in a
// nested L1: crypto_kdf108_init took 437 ms, 274 of them after the
// initramfs was unpacked, which the request waits for), and the kernel's
// phase took 2.46-2.65 s against 2.22-2.42 s without it (4 interleaved
// pairs); with no file there the exec fails at once, as before vmm-init
// was a modprobe.
const modprobePath = "/bin/modprobe"

// modprobeLink is what modprobePath links to in vmm's image
// (guest.BuildInitramfs).
const modprobeLink = "vmm-init"

// modprobe is vmm-init run as modprobe. The kernel runs it
// (request_module, kernel/kmod.c) as "modprobe -q -- NAME" when it needs
// a module it lacks: a file system on its first mount ("fs-overlay"), a
// character device's driver, a protocol family. vmm-init loads no file
// system at boot (kmod's ForDevices) and leaves them to this, so a boot
// pays only for the file systems it mounts. NAME is a module's name or
// an alias in modules.alias. It returns modprobe's status: 0 once the module and its
// dependencies are loaded, 1 otherwise, with a line on stderr unless -q.
func modprobe(args []string) int {
	name, quiet, err := modprobeArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		return 1
	}
	if err := probe(name); err != nil {
		if !quiet {
			fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		}
		return 1
	}
	return 0
}

// modprobeArgs takes the module name and -q from modprobe's arguments.
// It loads one module and nothing else: any other option (-r would
// remove, -n would only pretend) and module parameters are refused
// rather than ignored.
func modprobeArgs(args []string) (name string, quiet bool, err error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = args[i+1:]
			break
		}
		if a == "-q" || a == "--quiet" {
			quiet = true
			continue
		}
		if strings.HasPrefix(a, "-") {
			return "", quiet, fmt.Errorf("option %s is not supported (this modprobe, vmm-init, only loads a module)", a)
		}
		rest = args[i:]
		break
	}
	switch {
	case len(rest) == 0:
		return "", quiet, errors.New("no module name")
	case len(rest) > 1:
		return "", quiet, fmt.Errorf("module parameters (%s) are not supported", strings.Join(rest[1:], " "))
	}
	return rest[0], quiet, nil
}

// probe loads the modules name stands for, dependencies first; one
// already loaded counts as loaded.
func probe(name string) error {
	dir, err := moduleDir()
	if err != nil {
		return err
	}
	ix, aliases, err := readModuleIndex(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("module %s not found: %w", name, err)
	}
	if err != nil {
		return err
	}
	mods, err := ix.Resolve(aliases, name)
	if err != nil {
		return err
	}
	for _, m := range mods {
		if err := load(filepath.Join(dir, m.Path)); err != nil {
			return fmt.Errorf("load module %s: %w", kmod.Name(m.Path), err)
		}
	}
	return nil
}

// useOurModprobe points the kernel's modprobe path at modprobePath when
// the image has it, whatever the kernel was built with: the file systems
// of a vmm guest are loaded only through it. On another image (a
// distribution's, where /bin/modprobe may well be kmod's, through a
// merged /usr) it leaves the kernel's setting alone.
func useOurModprobe() error {
	if target, err := os.Readlink(modprobePath); err != nil || target != modprobeLink {
		return nil
	}
	b, err := os.ReadFile("/proc/sys/kernel/modprobe")
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without modules (CONFIG_MODULES=n)
	}
	if err == nil && strings.TrimSpace(string(b)) == modprobePath {
		return nil
	}
	if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte(modprobePath+"\n"), 0); err != nil {
		return fmt.Errorf("set the kernel's modprobe to %s: %w", modprobePath, err)
	}
	return nil
}
