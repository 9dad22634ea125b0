package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"
)

// InitPackage is the import path of the guest's init (/init).
const InitPackage = "github.com/vmm-dev/vmm/guest/cmd/vmm-init"

// IotoolPackage is the import path of vmm-iotool, the guest's end of the
// disk and network tests and of the benchmark. It is not in the image
// BuildInitramfs writes, which is what `vmm run` jobs boot: AddIotool
// writes a copy with it for the tests and benchmarks that need it.
const IotoolPackage = "github.com/vmm-dev/vmm/tools/iotool/cmd/vmm-iotool"

// IotoolPath is where AddIotool puts vmm-iotool in the archive (on the
// guest shell's PATH).
const IotoolPath = "bin/vmm-iotool"

// ImagePackages are vmm's own commands in the image, each built as a
// normal binary into /bin.
func ImagePackages() []string { return []string{InitPackage} }

// sourcePackages are vmm's commands in the image or in the copy
// AddIotool writes: a build stamp covers both.
func sourcePackages() []string { return append(ImagePackages(), IotoolPackage) }

// modulePath is vmm's own module path: ImageSources keeps the packages
// under it.
const modulePath = "github.com/vmm-dev/vmm"

// urootModule is the module the guest's userland comes from. Its version is
// whatever vmm's go.mod requires, so the image changes only when go.mod does.
const urootModule = "github.com/u-root/u-root"

// UrootCommands are the u-root commands compiled (as one busybox binary) into
// the image: the gosh shell, plus enough of u-root's core set to
// look around, debug drivers and power off. It is a fixed list rather than
// all of cmds/core because some core commands (sshd, scp, gpgv, ...) pull in
// modules vmm does not otherwise need and make the image slower to build.
func UrootCommands() []string {
	names := []string{
		"gosh",
		"cat", "chmod", "cmp", "cp", "date", "dd", "df", "dirname", "basename", "dmesg",
		"echo", "false", "find", "free", "grep", "head", "hexdump", "hostname", "id",
		"insmod", "ip", "kill", "ln", "ls", "lsmod", "mkdir", "mknod", "more", "mount",
		"mv", "pci", "poweroff", "printenv", "ps", "pwd", "readlink", "rm", "rmmod",
		"seq", "shutdown", "sleep", "sort", "strings", "sync", "tail", "tee", "touch",
		"tr", "true", "umount", "uname", "uniq", "uptime", "wc", "which", "xargs",
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = urootModule + "/cmds/core/" + n
	}
	return out
}

// goshTag is the build tag the image's Go programs are compiled with.
const goshTag = "goshsmall"

// InitramfsOptions says what to put in the guest's initramfs.
type InitramfsOptions struct {
	// Out is the path of the archive to write: an uncompressed newc
	// cpio, which Linux unpacks as is (no decompressor needed, and it
	// compresses well if anyone stores it). It is written to a
	// temporary file first and renamed, so Out is always complete.
	Out string
	// Kernel supplies the modules; nil builds an image without modules.
	Kernel *KernelFiles
	// Modules are the module names to carry, with everything they
	// depend on. Empty means DefaultModules(). Modules built into the
	// kernel are skipped.
	Modules []string
	// TempDir holds intermediate files; "" means a fresh directory
	// under os.TempDir() that is removed afterwards.
	TempDir string
}

// BuildInitramfs builds the guest's initramfs with u-root as a library:
// u-root's commands go into one busybox binary (/bbin/bb) and vmm-init
// is built as a normal binary (/bin/vmm-init, linked as /init and
// /bin/reboot). /bin/sh is gosh. The modules of o.Kernel go under
// /lib/modules/<version>/ with a modules.dep that lists only them.
//
// It compiles from source, so it needs the go command and must run inside
// the vmm module's source tree (any directory of it); the u-root sources
// come from the module cache (or the module proxy) at the version go.mod
// requires.
func BuildInitramfs(ctx context.Context, o InitramfsOptions) error {
	if o.Out == "" {
		return fmt.Errorf("build initramfs: no output path")
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	tmp := o.TempDir
	if tmp == "" {
		if tmp, err = os.MkdirTemp("", "vmm-initramfs-"); err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		defer os.RemoveAll(tmp)
	} else if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}

	var extra []string
	if o.Kernel != nil {
		want := o.Modules
		if len(want) == 0 {
			want = DefaultModules()
		}
		tree, err := loadModuleTree(ctx, o.Kernel.ModulesDir, want)
		if err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		mods, err := tree.resolve(want)
		if err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		stage, err := os.MkdirTemp(tmp, "modules-")
		if err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		dst := filepath.Join(stage, "lib", "modules", o.Kernel.Version)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		if err := tree.stageModules(ctx, mods, dst); err != nil {
			return fmt.Errorf("build initramfs: %w", err)
		}
		extra = append(extra, filepath.Join(stage, "lib")+":lib")
	}

	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	partial := o.Out + ".partial"
	os.Remove(partial)
	defer os.Remove(partial)

	env := imageEnv(ctx, root)
	buildTmp, err := os.MkdirTemp(tmp, "uimage-")
	if err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	var logBuf bytes.Buffer
	logger := llog.New(slog.LevelWarn, llog.WritePrintf(&logBuf))
	err = uimage.Create(logger,
		uimage.WithReplaceEnv(env),
		uimage.WithBaseArchive(baseRamfs()),
		uimage.WithBusyboxCommands(UrootCommands()...),
		uimage.WithBinaryCommands(ImagePackages()...),
		uimage.WithInit("vmm-init"), // /init: vmm-init is the first process
		uimage.WithShell("gosh"),
		uimage.WithSymlink("bin/reboot", "vmm-init"),
		uimage.WithSymlink("bin/modprobe", "vmm-init"), // the kernel's modprobe once PID 1 says so
		uimage.WithFiles(extra...),
		uimage.WithSkipLDD(), // only Go binaries and .ko files: nothing to ldd
		uimage.WithTempDir(buildTmp),
		uimage.WithCPIOOutput(partial),
	)
	if err != nil {
		return fmt.Errorf("build initramfs with u-root: %w\n%s", err, logBuf.String())
	}
	if err := os.Rename(partial, o.Out); err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	return nil
}

// imageEnv is how the image's Go programs are built: static, for
// linux/amd64, from the vmm module at root.
func imageEnv(ctx context.Context, root string) *golang.Environ {
	env := golang.Default(
		golang.DisableCGO(), // the image has no libc
		golang.WithGOOS("linux"),
		golang.WithGOARCH("amd64"),
		golang.WithWorkingDir(root),
		// goshsmall gives gosh a plain "$ " prompt that reads lines
		// in the tty's cooked mode. The default line editor
		// (bubbline) sends terminal queries and redraws the screen,
		// which a serial console driven by a test neither answers nor
		// wants.
		golang.WithBuildTag(goshTag),
	)
	if goroot, err := goEnv(ctx, root, "GOROOT"); err == nil && goroot != "" {
		// build.Default's GOROOT can be empty in a -trimpath binary; the
		// go command in PATH knows for sure.
		env.Apply(golang.WithGOROOT(goroot))
	}
	return env
}

// AddIotool writes out: the newc archive in (an image BuildInitramfs
// wrote) with vmm-iotool added at IotoolPath, built as BuildInitramfs
// builds vmm-init (u-root's defaults: static, stripped, no inlining), as
// one archive. The image users boot leaves vmm-iotool out because the
// kernel copies every byte of the initramfs into its rootfs at every
// boot, and vmm into guest RAM before it: its 6 MB were a third of the
// image. An entry at IotoolPath already in the archive is replaced. out
// is written to a temporary file and renamed, so it is always complete.
func AddIotool(ctx context.Context, in, out string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return fmt.Errorf("add vmm-iotool: %w", err)
	}
	// Absolute: the go command runs in root, and writes -o there.
	dir, err := filepath.Abs(filepath.Dir(out))
	if err != nil {
		return fmt.Errorf("add vmm-iotool: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("add vmm-iotool: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".iotool-")
	if err != nil {
		return fmt.Errorf("add vmm-iotool: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "vmm-iotool")
	if err := imageEnv(ctx, root).Build(bin, []string{IotoolPackage}, nil); err != nil {
		return fmt.Errorf("add vmm-iotool: build: %w", err)
	}
	partial := filepath.Join(tmp, "out.cpio")
	if err := appendFile(in, partial, IotoolPath, bin); err != nil {
		return fmt.Errorf("add vmm-iotool to %s: %w", in, err)
	}
	if err := os.Rename(partial, out); err != nil {
		return fmt.Errorf("add vmm-iotool: %w", err)
	}
	return nil
}

// appendFile writes to out the records of the newc archive in, but one
// named name, then the regular file src as name (mode 0755, owned by
// root), then the trailer. An archive without its trailer is refused.
func appendFile(in, out, name, src string) error {
	inf, err := os.Open(in)
	if err != nil {
		return err
	}
	defer inf.Close()
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	st, err := sf.Stat()
	if err != nil {
		return err
	}
	of, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer of.Close()
	bw := bufio.NewWriterSize(of, 1<<20)
	w := cpio.Newc.Writer(bw)
	// The reader under u-root's EOFReader, which would also end quietly
	// at a short read: an archive must end in its trailer, or it was cut
	// short.
	rr := cpio.Newc.Reader(inf)
	if e, ok := rr.(cpio.EOFReader); ok {
		rr = e.RecordReader
	}
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return errors.New("the archive ends before its trailer")
		}
		if err != nil {
			return err
		}
		if rec.Name == cpio.Trailer {
			break
		}
		if cpio.Normalize(rec.Name) == name {
			continue
		}
		if err := w.WriteRecord(rec); err != nil {
			return err
		}
	}
	rec := cpio.Record{ReaderAt: sf, Info: cpio.Info{
		Name:     name,
		Mode:     cpio.S_IFREG | 0o755,
		NLink:    1,
		FileSize: uint64(st.Size()),
	}}
	if err := w.WriteRecord(rec); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return of.Close()
}

// ModuleRoot returns the root directory of the vmm module the current
// directory is in; building the guest compiles packages from it.
func ModuleRoot(ctx context.Context) (string, error) {
	gomod, err := goEnv(ctx, "", "GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module (run from the vmm source tree)")
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", gomod, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if strings.TrimSpace(first) != "module "+modulePath {
		return "", fmt.Errorf("%s is not the vmm module (run from the vmm source tree)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// ImageSources returns the files, relative to the module root, of every
// vmm package compiled into the image or the copy AddIotool writes:
// vmm-init, vmm-iotool and everything of vmm's they import, wherever it
// lives (vmm-iotool's code is in tools/iotool, shared with the nested
// harness). A build stamp must hash these, or a change outside guest/
// leaves a stale image behind.
func ImageSources(ctx context.Context) ([]string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	args := append([]string{"list", "-deps", "-f",
		`{{if not .Standard}}{{.ImportPath}}{{range .GoFiles}} {{.}}{{end}}{{range .SFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}`},
		sourcePackages()...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	// The image's build configuration, so that the file lists match.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("go list -deps %v: %w\n%s", sourcePackages(), err, stderr)
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != modulePath && !strings.HasPrefix(f[0], modulePath+"/")) {
			continue
		}
		dir := strings.TrimPrefix(strings.TrimPrefix(f[0], modulePath), "/")
		for _, name := range f[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(dir, name)))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("go list -deps %v: no vmm sources", sourcePackages())
	}
	return files, nil
}

// UrootVersion returns the version of u-root that go.mod selects, which is
// the one BuildInitramfs compiles; build stamps include it.
func UrootVersion(ctx context.Context) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}{{with .Replace}} => {{.Path}} {{.Version}}{{end}}", urootModule)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", urootModule, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func goEnv(ctx context.Context, dir, key string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", key)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", key, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// baseRamfs is u-root's base archive without its /etc/resolv.conf
// (nameserver 8.8.8.8) and with an /etc/hosts. The guest's name server
// is the one a DHCP lease gives, which vmm-init writes there; a -rootfs
// job is given it, and otherwise keeps the host's own, which the
// image's fixed address would replace (vmm-init copies the initramfs's
// file into the job's root). /etc/hosts names localhost, which a job's
// test server or client looks up by name.
func baseRamfs() *cpio.Archive {
	a := uimage.DefaultRamfs()
	const name = "etc/resolv.conf"
	delete(a.Files, name)
	a.Order = slices.DeleteFunc(a.Order, func(n string) bool { return n == name })
	if _, ok := a.Get("etc/hosts"); !ok {
		// 127.0.1.1: the guest's name (vmm-init's hostName), as Debian
		// names the machine's own.
		a.WriteRecord(cpio.StaticFile("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tvmm\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644))
	}
	return a
}
