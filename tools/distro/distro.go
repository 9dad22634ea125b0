// Package distro builds a real Linux distribution for vmm to boot, the way
// a user installs one: Debian 12 from debootstrap with systemd as init and
// Debian's cloud kernel installed through apt, so the initrd is
// initramfs-tools' own and the root is an ext4 image on a disk. Such a
// system exercises what a tiny test init does not: udev probing every
// device, systemd's early services writing the disk on both vCPUs, a
// journal, module loads. The image's one addition is a unit that prints
// Marker on the console once multi-user.target is reached and powers the
// machine off, so every boot ends by itself.
//
// The recipe is debian12.sh, embedded here. Built images are cached under
// the vmm cache directory by the recipe's SHA-256, so changing the recipe
// builds a new image and nothing else does; a warm cache needs neither
// root nor the network.
package distro

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vmm-dev/vmm/guest"
)

//go:embed debian12.sh
var debian12Recipe []byte

// Marker is what the image's vmm-distro-done.service prints on the
// console when multi-user.target is reached, just before it powers off.
const Marker = "vmm-distro: multi-user.target reached"

// PowerOffLine is what Linux prints on the console as its very last act
// of a clean power-off (kernel/reboot.c, kernel_power_off).
const PowerOffLine = "reboot: Power down"

// ErrUnavailable means the image is not cached and this machine cannot
// build it (not root, or a tool is missing); tests skip on it.
var ErrUnavailable = errors.New("distro: the image cannot be built here")

// Image is a built system: boot Kernel with Initrd and
// "root=/dev/vda" with Disk as the first virtio disk.
type Image struct {
	Dir    string // the cache directory holding the three files
	Kernel string // bzImage
	Initrd string // initramfs-tools' initrd, compressed
	Disk   string // raw ext4 image; copy it before writing (see CopyDisk)
}

// RecipeKey is the cache key of the Debian 12 image: the first 16 hex
// digits of the recipe's SHA-256.
func RecipeKey() string {
	sum := sha256.Sum256(debian12Recipe)
	return hex.EncodeToString(sum[:8])
}

// Debian12 returns the Debian 12 image, building it into cacheDir the
// first time (cacheDir "" means guest.DefaultCacheDir()/distro). Building
// takes minutes, needs root, debootstrap, mkfs.ext4 and Debian's package
// mirror, and writes its progress to log (nil: discarded). It is built in
// a temporary directory renamed into place, so an interrupted build never
// leaves an image a later call would trust.
func Debian12(ctx context.Context, cacheDir string, log io.Writer) (*Image, error) {
	if cacheDir == "" {
		cacheDir = filepath.Join(guest.DefaultCacheDir(), "distro")
	}
	if log == nil {
		log = io.Discard
	}
	dir := filepath.Join(cacheDir, "debian12-"+RecipeKey())
	img := ImageIn(dir)
	if img.complete() {
		return img, nil
	}
	if err := canBuild(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("distro: cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".debian12-")
	if err != nil {
		return nil, fmt.Errorf("distro: cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "debian12.sh")
	if err := os.WriteFile(script, debian12Recipe, 0o755); err != nil {
		return nil, fmt.Errorf("distro: write recipe: %w", err)
	}
	out := filepath.Join(tmp, "out")
	cmd := exec.CommandContext(ctx, "/bin/sh", script, out)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	fmt.Fprintf(log, "distro: building Debian 12 into %s (minutes)\n", dir)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("distro: build Debian 12 with debootstrap: %w", err)
	}
	if err := os.Rename(out, dir); err != nil {
		// Another process may have finished the same build first.
		if img.complete() {
			return img, nil
		}
		return nil, fmt.Errorf("distro: cache: %w", err)
	}
	if !img.complete() {
		return nil, fmt.Errorf("distro: the recipe left no kernel, initrd or disk in %s", dir)
	}
	return img, nil
}

// ImageIn is the image whose three files are in dir, as Debian12 leaves
// them there.
func ImageIn(dir string) *Image {
	return &Image{Dir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), Disk: filepath.Join(dir, "rootfs.ext4")}
}

// Check says which of the image's files is missing or empty, if any.
func (img *Image) Check() error {
	for _, p := range []string{img.Kernel, img.Initrd, img.Disk} {
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			return fmt.Errorf("distro image %s: no %s", img.Dir, filepath.Base(p))
		}
	}
	return nil
}

func (img *Image) complete() bool { return img.Check() == nil }

// canBuild says why this machine cannot run the recipe, wrapped in
// ErrUnavailable, or nil.
func canBuild() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: debootstrap needs root", ErrUnavailable)
	}
	for _, tool := range []string{"debootstrap", "mkfs.ext4", "chroot"} {
		if _, err := lookSbin(tool); err != nil {
			return fmt.Errorf("%w: %s not found (Debian: apt-get install debootstrap e2fsprogs)", ErrUnavailable, tool)
		}
	}
	return nil
}

// lookSbin finds a tool on PATH or in the sbin directories an ordinary
// user's PATH lacks.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// CopyDisk copies the image's disk to dst, keeping it sparse, so a run
// can write its copy and leave the cached image pristine.
func (img *Image) CopyDisk(ctx context.Context, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "--sparse=always", img.Disk, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("distro: copy disk: %w: %s", err, out)
	}
	return nil
}
