package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// QEMUFirmware is what QEMU 7.x reads from its firmware path for
// `-M pc -kernel` with -nodefaults and no option ROMs (found by tracing
// its open calls): SeaBIOS, the kvmvapic ROM that patches the guest's TPR
// accesses, and the DMA variant of the Linux loader ROM that -kernel
// installs. Everything else is skipped by -vga none and romfile=.
var qemuFirmware = []string{"bios-256k.bin", "kvmvapic.bin", "linuxboot_dma.bin"}

// QEMUFiles returns the absolute path of the QEMU binary and what it needs to run inside L1, as nested.Config.Files
// entries (L1 path -> host path): the binary, every shared library ldd
// names (the dynamic loader included), and its firmware. Each file goes to
// the absolute path the host's dynamic loader and QEMU would find it at, so
// the same binary resolves the same files in L1, whose initramfs is
// otherwise empty.
func QEMUFiles(ctx context.Context, qemu string) (string, map[string]string, error) {
	bin, err := exec.LookPath(qemu)
	if err != nil {
		return "", nil, fmt.Errorf("bench: %s not found (Debian: apt-get install qemu-system-x86): %w", qemu, err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return "", nil, fmt.Errorf("bench: %s: %w", qemu, err)
	}
	files, err := binaryFiles(ctx, bin)
	if err != nil {
		return "", nil, err
	}

	// QEMU prints its firmware search path, relative to its own binary
	// (/usr/bin/../share/qemu), for `-L help`.
	out, err := exec.CommandContext(ctx, bin, "-L", "help").Output()
	if err != nil {
		return "", nil, fmt.Errorf("bench: %s -L help: %w", bin, err)
	}
	dirs := parseFirmwareDirs(string(out))
	for _, name := range qemuFirmware {
		p, err := findFirmware(dirs, name)
		if err != nil {
			return "", nil, fmt.Errorf("bench: QEMU firmware: %w", err)
		}
		files[p] = p
	}
	return bin, files, nil
}

// binaryFiles is a dynamically linked binary with every shared library
// ldd names, as nested.Config.Files entries at their own paths.
func binaryFiles(ctx context.Context, bin string) (map[string]string, error) {
	files := map[string]string{bin: bin}
	out, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("bench: ldd %s: %w", bin, err)
	}
	libs, err := parseLdd(string(out))
	if err != nil {
		return nil, fmt.Errorf("bench: ldd %s: %w", bin, err)
	}
	for _, l := range libs {
		files[l] = l
	}
	return files, nil
}

// virtiofsdPlaces are where a virtiofsd is installed relative to
// qemu-system-x86_64. Debian 12's QEMU 7.2 ships QEMU's own C virtiofsd
// in qemu-system-common as /usr/lib/qemu/virtiofsd (QEMU 8.0 dropped it
// from its tree); the Rust virtiofsd that replaced it is
// /usr/libexec/virtiofsd on Fedora and on Debian 13. Both take the
// options Systems passes (--socket-path, -o source=, -o sandbox=), the
// Rust one as compatibility options; the report names the binary and
// its version, since the two are different servers.
func virtiofsdPlaces() []string {
	return []string{"../lib/qemu/virtiofsd", "../libexec/virtiofsd"}
}

// VirtioFSDFiles finds a virtiofsd beside the QEMU binary qemuBin (an
// absolute path, as QEMUFiles returns) and returns its path and what it
// needs to run in L1 (binaryFiles). ErrNoVirtioFSD: none installed.
func VirtioFSDFiles(ctx context.Context, qemuBin string) (string, map[string]string, error) {
	places := virtiofsdPlaces()
	for _, rel := range places {
		p := filepath.Clean(filepath.Join(filepath.Dir(qemuBin), rel))
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			continue
		}
		files, err := binaryFiles(ctx, p)
		if err != nil {
			return "", nil, err
		}
		return p, files, nil
	}
	return "", nil, fmt.Errorf("%w beside %s (looked for %s)", ErrNoVirtioFSD, qemuBin, strings.Join(places, ", "))
}

// CheckVirtioFSDShare says whether QEMU can share fsDir through virtiofsd
// as Systems sets it up: the daemon takes the directory in a
// comma-separated -o option, and its socket beside it must fit a Unix
// socket address (sun_path, 108 bytes with the NUL; unix(7)).
func CheckVirtioFSDShare(fsDir string) error {
	if strings.Contains(fsDir, ",") {
		return fmt.Errorf("bench: the shared directory %s holds a comma, which virtiofsd's -o source= cannot take", fsDir)
	}
	if sock, _ := virtiofsdPaths(fsDir); len(sock) > 107 {
		return fmt.Errorf("bench: virtiofsd's socket %s is longer than a Unix socket address allows (107 bytes)", sock)
	}
	return nil
}

// ErrNoVirtioFSD means QEMU's virtiofsd is not installed.
var ErrNoVirtioFSD = errors.New("bench: no virtiofsd")

// parseLdd extracts the absolute paths of ldd's output: "name => /path
// (addr)" for libraries and "/path (addr)" for the dynamic loader. The vDSO
// has no file; a library ldd cannot find is an error, since QEMU would not
// start in L1 either.
func parseLdd(out string) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "linux-vdso") || strings.HasPrefix(line, "linux-gate") {
			continue
		}
		if line == "statically linked" || line == "not a dynamic executable" {
			continue
		}
		target := line
		if name, rest, ok := strings.Cut(line, "=>"); ok {
			target = strings.TrimSpace(rest)
			if strings.HasPrefix(target, "not found") {
				return nil, fmt.Errorf("library %s not found", strings.TrimSpace(name))
			}
		}
		if i := strings.Index(target, " ("); i >= 0 {
			target = target[:i]
		}
		target = strings.TrimSpace(target)
		if target == "" {
			continue // "name => (addr)": a library without a file
		}
		if !strings.HasPrefix(target, "/") {
			return nil, fmt.Errorf("unexpected ldd line %q", line)
		}
		libs = append(libs, path.Clean(target))
	}
	if len(libs) == 0 {
		return nil, errors.New("no libraries listed")
	}
	return libs, nil
}

// parseFirmwareDirs reads `qemu -L help`: one directory per line.
func parseFirmwareDirs(out string) []string {
	var dirs []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "/") {
			dirs = append(dirs, path.Clean(l))
		}
	}
	return dirs
}

func findFirmware(dirs []string, name string) (string, error) {
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not in %v", name, dirs)
}
