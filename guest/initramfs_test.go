package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestURootDepsAnchored checks that internal/urootdeps imports every
// non-standard package the image's u-root commands import, so that
// `go mod tidy` keeps their modules in go.mod.
func TestURootDepsAnchored(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list; skipped with -short")
	}
	ctx := context.Background()
	root, err := ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list := func(args ...string) map[string]bool {
		cmd := exec.CommandContext(ctx, "go", append([]string{"list", "-tags", goshTag + ",vmm_urootdeps"}, args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		set := map[string]bool{}
		for _, l := range strings.Fields(string(out)) {
			if strings.Contains(strings.SplitN(l, "/", 2)[0], ".") {
				set[l] = true
			}
		}
		return set
	}
	need := list(append([]string{"-f", `{{join .Imports "\n"}}`}, UrootCommands()...)...)
	have := list("-f", `{{join .Imports "\n"}}`, "github.com/vmm-dev/vmm/guest/internal/urootdeps")
	var missing []string
	for p := range need {
		if !have[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("guest/internal/urootdeps/deps.go lacks imports:\n\t_ %q", missing)
	}
}

// console collects a guest's serial output and lets a test wait for text.
type console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// waitFor waits until s appears after offset from and returns the offset
// just past it.
func (c *console) waitFor(t *testing.T, from int, s string, d time.Duration) int {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if out := c.String(); len(out) >= from {
			if i := strings.Index(out[from:], s); i >= 0 {
				return from + i + len(s)
			}
		}
	}
	t.Fatalf("no %q on the console after %s; console:\n%s", s, d, c.String())
	return 0
}

// TestBootInQEMU builds the real guest and its copy with vmm-iotool, and
// boots the copy in QEMU (TCG, so it works without /dev/kvm), checking
// what vmm's own tests rely on: the ready marker, a working shell, the
// virtio modules, vmm-iotool, and poweroff.
func TestBootInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads a kernel, builds an initramfs and boots it; skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := FetchKernel(ctx, FlavorCloud, "")
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	start := time.Now()
	if err := BuildInitramfs(ctx, InitramfsOptions{Out: initrd, Kernel: k, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %d bytes, built in %s", fi.Size(), time.Since(start).Round(time.Second))
	// The image users boot has no vmm-iotool; AddIotool's copy has
	// everything the image has, and vmm-iotool. That copy boots here, so
	// the archive it writes is checked by the kernel's own unpacker too.
	lean := archiveNames(t, initrd)
	if lean[IotoolPath] {
		t.Errorf("%s in the image users boot", IotoolPath)
	}
	withIotool := filepath.Join(t.TempDir(), "initrd-iotool.cpio")
	if err := AddIotool(ctx, initrd, withIotool); err != nil {
		t.Fatal(err)
	}
	got := archiveNames(t, withIotool)
	for name := range lean {
		if !got[name] {
			t.Errorf("%s missing from the copy with vmm-iotool", name)
		}
	}
	if !got[IotoolPath] || len(got) != len(lean)+1 {
		t.Errorf("the copy with vmm-iotool has %d entries, want the image's %d and %s", len(got), len(lean), IotoolPath)
	}

	cmd := exec.CommandContext(ctx, qemu, "-m", "512", "-nographic", "-no-reboot",
		"-kernel", k.BzImage, "-initrd", withIotool, "-append", "console=ttyS0 quiet",
		"-device", "virtio-rng-pci")
	con := &console{}
	cmd.Stdout, cmd.Stderr = con, con
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()

	at := con.waitFor(t, 0, ReadyMarker+"\r\n", 3*time.Minute)
	at = con.waitFor(t, at, "$ ", time.Minute)
	send := func(line string) {
		if _, err := stdin.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	send("echo hi-$((6*7))")
	at = con.waitFor(t, at, "hi-42\r\n", time.Minute)
	send("ls /")
	at = con.waitFor(t, at, "bbin\r\n", time.Minute)
	// The one virtio device's drivers are loaded, and no others: no
	// disk, no virtio NIC (QEMU's is an e1000), no file system yet.
	mark := len(con.String())
	send("cat /proc/modules; echo modules-$((6*7))")
	at = con.waitFor(t, at, "modules-42\r\n", time.Minute)
	mods := con.String()[mark:at]
	for _, m := range []string{"virtio_pci ", "virtio_rng "} {
		if !strings.Contains(mods, m) {
			t.Errorf("module %q missing from /proc/modules:\n%s", m, mods)
		}
	}
	for _, m := range []string{"virtio_blk ", "virtio_net ", "overlay "} {
		if strings.Contains(mods, m) {
			t.Errorf("module %q loaded without its device or a mount:\n%s", m, mods)
		}
	}
	// The kernel's modprobe is vmm-init's link, and the path the kernel
	// runs before PID 1 (/sbin/modprobe) is absent (see modprobePath).
	mark = len(con.String())
	send("cat /proc/sys/kernel/modprobe; ls /sbin/modprobe; echo mp-$((6*7))")
	at = con.waitFor(t, at, "mp-42\r\n", time.Minute)
	if out := con.String()[mark:at]; !strings.Contains(out, "\n/bin/modprobe\r\n") || !strings.Contains(out, "no such file") {
		t.Errorf("want the kernel's modprobe /bin/modprobe and no /sbin/modprobe:\n%s", out)
	}
	// A mount loads its file system through the kernel's modprobe
	// (vmm-init as /bin/modprobe).
	mark = len(con.String())
	send("mkdir /o && mount -t overlay -o lowerdir=/etc:/bin overlay /o && ls /o/vmm-init && cat /proc/modules; echo overlay-$((6*7))")
	at = con.waitFor(t, at, "overlay-42\r\n", time.Minute)
	if out := con.String()[mark:at]; !strings.Contains(out, "\noverlay ") {
		t.Errorf("mount -t overlay did not load overlay:\n%s", out)
	}
	// So does opening a module's static node (fuse: read fails, as no
	// FUSE file system is mounted, but the open loads the module).
	mark = len(con.String())
	send("cat /dev/fuse; cat /proc/modules; echo fuse-$((6*7))")
	at = con.waitFor(t, at, "fuse-42\r\n", time.Minute)
	if out := con.String()[mark:at]; !strings.Contains(out, "\nfuse ") {
		t.Errorf("opening /dev/fuse did not load fuse:\n%s", out)
	}
	if strings.Contains(con.String(), "vmm-init:") {
		t.Errorf("vmm-init complained:\n%s", con.String())
	}
	// vmm-iotool is on the shell's PATH, at the path the benchmark
	// checks for, and works.
	send("ls /bin/vmm-iotool && vmm-iotool sum -file /bin/vmm-iotool -bytes 4096")
	at = con.waitFor(t, at, "iotool: sum bytes=4096 sha256=", time.Minute)
	send("poweroff")
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("qemu: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("guest did not power off; console:\n%s", con.String())
	}
}

// ImageSources must cover vmm code outside guest/ that the image's tools
// are built from, or a build stamp misses changes to it.
func TestImageSources(t *testing.T) {
	ctx := context.Background()
	files, err := ImageSources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f] = true
		if strings.HasSuffix(f, "_test.go") {
			t.Errorf("test file %s listed", f)
		}
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("listed file: %v", err)
		}
	}
	for _, want := range []string{"guest/cmd/vmm-init/main.go", "tools/iotool/cmd/vmm-iotool/main.go", "tools/iotool/iotool.go", "guest/internal/kmod/kmod.go"} {
		if !have[want] {
			t.Errorf("%s missing from %v", want, files)
		}
	}
	for f := range have {
		if strings.HasPrefix(f, "nested/") || strings.HasPrefix(f, "machine/") {
			t.Errorf("%s is not in the image", f)
		}
	}
}

// archiveNames returns the names in the newc archive at p, without a
// leading "./".
func archiveNames(t *testing.T, p string) map[string]bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	rr := cpio.Newc.Reader(f)
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		names[cpio.Normalize(rec.Name)] = true
	}
}

// appendFile keeps every record of the archive but one of the added
// file's name, which it replaces, and the result is one archive that
// ends in a trailer.
func TestAppendFile(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.cpio")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticFile("bin/vmm-init", "init", 0o755),
		cpio.StaticFile("bin/vmm-iotool", "old", 0o755),
		cpio.Symlink("init", "bin/vmm-init"),
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src := filepath.Join(dir, "tool")
	if err := os.WriteFile(src, []byte("new tool"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.cpio")
	if err := appendFile(in, out, IotoolPath, src); err != nil {
		t.Fatal(err)
	}
	of, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	got, err := cpio.ReadAllRecords(cpio.Newc.Reader(of))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
	}
	if want := []string{"bin", "bin/vmm-init", "init", IotoolPath}; !slices.Equal(names, want) {
		t.Fatalf("records %q, want %q", names, want)
	}
	last := got[len(got)-1]
	data, err := io.ReadAll(io.NewSectionReader(last.ReaderAt, 0, int64(last.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "new tool" || last.Mode != cpio.S_IFREG|0o755 || last.UID != 0 {
		t.Errorf("%s: %q mode %o uid %d, want the new file, a regular file 0755 of root's", last.Name, data, last.Mode, last.UID)
	}
	// An archive cut short anywhere is refused, not completed.
	whole, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 50, 120, len(whole) / 2, len(whole) - 20} {
		cut := filepath.Join(dir, "cut.cpio")
		if err := os.WriteFile(cut, whole[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := appendFile(cut, filepath.Join(dir, "cut-out.cpio"), IotoolPath, src); err == nil {
			t.Errorf("the archive cut at %d of %d bytes: no error", n, len(whole))
		}
	}
	// Nothing follows the trailer: the kernel reads one archive.
	st, err := of.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndex(b, []byte("TRAILER!!!")); i < 0 || st.Size()-int64(i) > 16 {
		t.Errorf("the archive does not end in its trailer (%d bytes, trailer at %d)", st.Size(), i)
	}
}
