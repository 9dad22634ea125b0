package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/iotool"
	"github.com/vmm-dev/vmm/tools/nested"
	"github.com/vmm-dev/vmm/virtio/net"
)

// Deadlines for the virtio tests. Everything in L2 runs under TCG twice
// over (L1 emulated, L2 on L1's nested KVM), so data moves at a few MiB/s.
const (
	// ioTimeout bounds one disk command in the guest.
	ioTimeout = 2 * time.Minute
	// transferTimeout bounds one TCP transfer, connection retries
	// included.
	transferTimeout = 5 * time.Minute
	// transferBytes is enough for TSO-sized frames, mergeable receive
	// buffers and the queues wrapping many times over; more only adds
	// exits, and with them the odds of the emulator killing the guest
	// (one such crash in the last round's 64 MiB runs).
	transferBytes = 16 << 20
)

// statusRE finds the exit status that run appends to a command's output.
// The terminal's echo of the typed line shows "$?", never digits.
var statusRE = regexp.MustCompile(`vmm-status=(\d+)=`)

// run types cmd into the guest's shell and returns its output (the echoed
// line included) and exit status.
func run(j *nested.Job, cmd string, timeout time.Duration) (string, int, error) {
	if err := j.Send(cmd + "; echo vmm-status=$?=\n"); err != nil {
		return "", 0, err
	}
	out, err := j.Expect(statusRE, timeout)
	if err != nil {
		return out, 0, fmt.Errorf("guest command %q: %w", cmd, err)
	}
	m := statusRE.FindAllStringSubmatch(out, -1)
	code, _ := strconv.Atoi(m[len(m)-1][1])
	return out, code, nil
}

// mustRun is run for commands that must succeed.
func mustRun(l *nested.L1, j *nested.Job, cmd string, timeout time.Duration) (string, error) {
	out, code, err := run(j, cmd, timeout)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, failure(l, "guest command %q: status %d", cmd, code)
	}
	return out, nil
}

// mustFail is run for commands that must fail: writes to a read-only disk.
func mustFail(l *nested.L1, j *nested.Job, cmd string, timeout time.Duration) (string, error) {
	out, code, err := run(j, cmd, timeout)
	if err != nil {
		return out, err
	}
	if code == 0 {
		return out, failure(l, "guest command %q succeeded; it must fail", cmd)
	}
	return out, nil
}

// failure is an error carrying what is needed to debug it without a rerun:
// the job console (vmm's and the guest's output) and L1's kernel log.
func failure(l *nested.L1, format string, args ...any) error {
	return fmt.Errorf("%s\n--- job console (tail) ---\n%s\n--- L1 kernel log (tail) ---\n%s\n---",
		fmt.Sprintf(format, args...), l.ConsoleTail(40), l.KernelLogTail(30))
}

// result finds the iotool result line for op in out.
func result(l *nested.L1, out, op string) (iotool.Result, error) {
	r, err := iotool.ParseLast(out, op)
	if err != nil {
		return r, failure(l, "%v", err)
	}
	return r, nil
}

// field is a result's value for key, "" if absent.
func field(r iotool.Result, key string) string {
	v, _ := r.Get(key)
	return v
}

// bootGuest starts vmm with the default guest (its initramfs with
// vmm-iotool: iotoolConfig) and extra flags and waits for the guest's
// shell.
func bootGuest(t *testing.T, l *nested.L1, extra ...string) (*nested.Job, error) {
	t0 := time.Now()
	j, err := l.Run(t.Context(), vmmArgs(append([]string{"-append", "quiet"}, extra...)...), nested.StdinTTY)
	if err != nil {
		return nil, err
	}
	if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
		return nil, err
	}
	t.Logf("guest ready %.1fs after starting vmm", time.Since(t0).Seconds())
	return j, nil
}

// powerOff ends the guest and vmm, which must exit with status 0.
func powerOff(l *nested.L1, j *nested.Job) error {
	if err := j.Send("poweroff\n"); err != nil {
		return err
	}
	code, err := j.Wait(exitTimeout)
	if err != nil {
		return err
	}
	if code != 0 {
		return failure(l, "vmm exited with status %d after poweroff, want 0", code)
	}
	return nil
}

// sbin finds an e2fsprogs tool, which lives in /sbin, off a user's PATH.
func sbin(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	t.Fatalf("%s not found (Debian: apt-get install e2fsprogs; make host-deps does it)", name)
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// hostRun runs a host tool and returns its stdout.
func hostRun(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(sbin(t, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s%s", name, args, err, out, stderr.Bytes())
	}
	return out
}

// rawImage creates a zero-filled image of size bytes.
func rawImage(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// ext4Image creates an empty ext4 file system image of size bytes.
func ext4Image(t *testing.T, name string, size int64) string {
	t.Helper()
	p := rawImage(t, name, size)
	hostRun(t, "mkfs.ext4", "-F", "-q", p)
	return p
}

func fileSHA256(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := io.Reader(f)
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// A disk written in the guest holds the data on the host afterwards:
// ext4 made on the host, mounted read-write in L2, a small file and an
// 8 MiB one written, unmounted, vmm and L1 gone, then the host reads
// both files back and finds the file system consistent. The disk is a
// block device to vmm (L1's /dev/vda, QEMU's drive on the image).
func TestDiskWriteReadBack(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	const bigBytes = 8 << 20
	img := ext4Image(t, "rw.img", 64<<20)
	c := iotoolConfig(t)
	c.Disks = []nested.Disk{{Path: img}}
	var guestSHA string
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		t.Logf("L1 boot: %.1fs", l.BootTime.Seconds())
		j, err := bootGuest(t, l, "-disk", nested.DiskPath(0))
		if err != nil {
			return err
		}
		// 64 MiB is 65536 1-KiB blocks in /proc/partitions.
		if out, err := mustRun(l, j, "ls /dev/vda; cat /proc/partitions", cmdTimeout); err != nil {
			return err
		} else if !regexp.MustCompile(`\s65536\s+vda\r?\n`).MatchString(out) {
			return failure(l, "/proc/partitions has no 64 MiB vda: %q", out)
		}
		if out, err := mustRun(l, j, "echo vda-ro=$(cat /sys/block/vda/ro)", cmdTimeout); err != nil {
			return err
		} else if !strings.Contains(out, "vda-ro=0") {
			return failure(l, "writable disk shows as read-only: %q", out)
		}
		for _, cmd := range []string{
			"mkdir -p /mnt",
			"mount -t ext4 /dev/vda /mnt",
			"echo hello-from-l2 > /mnt/f",
			"touch /mnt/big",
		} {
			if _, err := mustRun(l, j, cmd, ioTimeout); err != nil {
				return err
			}
		}
		t0 := time.Now()
		out, err := mustRun(l, j, fmt.Sprintf("vmm-iotool blk-seq-write -dev /mnt/big -bytes %d -sha256", bigBytes), ioTimeout)
		if err != nil {
			return err
		}
		w, err := result(l, out, "blk-seq-write")
		if err != nil {
			return err
		}
		guestSHA = field(w, "sha256")
		t.Logf("8 MiB file written through ext4 in %.1fs: %s", time.Since(t0).Seconds(), w)
		for _, cmd := range []string{"sync", "umount /mnt"} {
			if _, err := mustRun(l, j, cmd, ioTimeout); err != nil {
				return err
			}
		}
		return powerOff(l, j)
	})
	t.Logf("L1 and guest, boot to poweroff: %.1fs", time.Since(start).Seconds())

	// L1 has shut down (syncing its page cache); QEMU has exited.
	if got := string(hostRun(t, "debugfs", "-R", "cat /f", img)); got != "hello-from-l2\n" {
		t.Errorf("/f on the host: %q, want %q", got, "hello-from-l2\n")
	}
	dump := filepath.Join(t.TempDir(), "big")
	hostRun(t, "debugfs", "-R", "dump /big "+dump, img)
	want := iotool.StreamSHA256(iotool.DefaultSeed, bigBytes)
	if got := fileSHA256(t, dump, -1); got != want || guestSHA != want {
		t.Errorf("/big: host reads sha256 %s, guest wrote %s, want %s", got, guestSHA, want)
	}
	// -f: check even though the file system is marked clean; -n: no
	// changes. Status 0 means no errors.
	hostRun(t, "e2fsck", "-f", "-n", img)
}

// A read-only disk next to a writable one: the guest sees the flag on the
// right disk only, reads the file system, cannot mount it writable or
// write it raw, and the image is byte-identical afterwards. The writable
// disk is a regular file in L1 (vmm's file backend).
//
// The guest's kernel refuses writes to a disk it knows is read-only, so
// this shows vmm announces the flag; that vmm fails the writes of a guest
// that ignores it is up to virtio/blk's unit tests.
func TestReadOnlyDisk(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	ro := ext4Image(t, "ro.img", 32<<20)
	hello := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(hello, []byte("read-only-content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostRun(t, "debugfs", "-w", "-R", "write "+hello+" hello", ro)
	before := fileSHA256(t, ro, -1)

	c := iotoolConfig(t)
	c.Disks = []nested.Disk{{Path: ro}}
	c.Files["/scratch.img"] = rawImage(t, "scratch.img", 4<<20)
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		j, err := bootGuest(t, l, "-disk", "/scratch.img", "-disk", nested.DiskPath(0)+",ro")
		if err != nil {
			return err
		}
		out, err := mustRun(l, j, "echo flags=$(cat /sys/block/vda/ro),$(cat /sys/block/vdb/ro)", cmdTimeout)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "flags=0,1") {
			return failure(l, "read-only flags of vda,vdb: %q, want 0,1", out)
		}
		if _, err := mustRun(l, j, "mkdir -p /mnt", cmdTimeout); err != nil {
			return err
		}
		if _, err := mustFail(l, j, "mount -t ext4 /dev/vdb /mnt", ioTimeout); err != nil {
			return err
		}
		if _, err := mustRun(l, j, "mount -r -t ext4 /dev/vdb /mnt", ioTimeout); err != nil {
			return err
		}
		if out, err := mustRun(l, j, "cat /mnt/hello", ioTimeout); err != nil {
			return err
		} else if !strings.Contains(out, "read-only-content\r\n") { // not in the typed line
			return failure(l, "/mnt/hello: %q", out)
		}
		if _, err := mustFail(l, j, "echo x > /mnt/new", ioTimeout); err != nil {
			return err
		}
		if _, err := mustRun(l, j, "umount /mnt", ioTimeout); err != nil {
			return err
		}
		if _, err := mustFail(l, j, "vmm-iotool blk-seq-write -dev /dev/vdb -bytes 4096", ioTimeout); err != nil {
			return err
		}
		// The flag is per disk: the other one takes writes.
		if _, err := mustRun(l, j, "vmm-iotool blk-seq-write -dev /dev/vda -bytes 1M", ioTimeout); err != nil {
			return err
		}
		return powerOff(l, j)
	})
	t.Logf("L1 and guest, boot to poweroff: %.1fs", time.Since(start).Seconds())
	if after := fileSHA256(t, ro, -1); after != before {
		t.Errorf("read-only image changed: sha256 %s before, %s after", before, after)
	}
}

// Two disks appear in -disk order with their sizes, and raw data written
// to each reads back the same in the guest and afterwards outside it:
// vda is a block device to vmm (L1's QEMU drive, read back on the host),
// vdb a regular file in L1 (read back in L1).
func TestTwoDisks(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	const (
		vdaSize, vdaWrite = 24 << 20, 16 << 20
		vdbSize           = 8 << 20 // written whole
	)
	img := rawImage(t, "vda.img", vdaSize)
	c := iotoolConfig(t)
	c.Disks = []nested.Disk{{Path: img}}
	c.Files["/vdb.img"] = rawImage(t, "vdb.img", vdbSize)
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		j, err := bootGuest(t, l, "-disk", nested.DiskPath(0), "-disk", "/vdb.img")
		if err != nil {
			return err
		}
		// Sizes in 512-byte sectors.
		out, err := mustRun(l, j, "echo sizes=$(cat /sys/block/vda/size),$(cat /sys/block/vdb/size)", cmdTimeout)
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("sizes=%d,%d", vdaSize/512, vdbSize/512); !strings.Contains(out, want) {
			return failure(l, "disk sizes: %q, want %s", out, want)
		}
		for _, d := range []struct {
			dev   string
			bytes int64
		}{{"/dev/vda", vdaWrite}, {"/dev/vdb", vdbSize}} {
			want := iotool.StreamSHA256(iotool.DefaultSeed, d.bytes)
			for _, op := range []string{"blk-seq-write", "blk-seq-read"} {
				t0 := time.Now()
				out, err := mustRun(l, j, fmt.Sprintf("vmm-iotool %s -dev %s -bytes %d -sha256", op, d.dev, d.bytes), ioTimeout)
				if err != nil {
					return err
				}
				r, err := result(l, out, op)
				if err != nil {
					return err
				}
				t.Logf("%s: %s (%.1fs)", d.dev, r, time.Since(t0).Seconds())
				if field(r, "sha256") != want || field(r, "direct") != "true" {
					return failure(l, "%s %s: %s, want sha256=%s direct=true", op, d.dev, r, want)
				}
			}
		}
		out, err = mustRun(l, j, "vmm-iotool blk-rand-read -dev /dev/vda -seconds 2", ioTimeout)
		if err != nil {
			return err
		}
		if r, err := result(l, out, "blk-rand-read"); err != nil {
			return err
		} else if n, _ := r.Int("ops"); n < 1 {
			return failure(l, "random reads: %s", r)
		} else {
			t.Logf("/dev/vda: %s", r)
		}
		if err := powerOff(l, j); err != nil {
			return err
		}
		// vmm is gone: the file in L1 has what the guest wrote.
		sum, err := l1io(t, l, cmdTimeout, "sum", "-file", "/vdb.img")
		if err != nil {
			return err
		}
		r, err := result(l, sum, "sum")
		if err != nil {
			return err
		}
		if want := iotool.StreamSHA256(iotool.DefaultSeed, vdbSize); field(r, "sha256") != want {
			return failure(l, "/vdb.img in L1 after vmm exited: %s, want sha256=%s", r, want)
		}
		return nil
	})
	t.Logf("L1 and guest, boot to poweroff: %.1fs", time.Since(start).Seconds())
	if got, want := fileSHA256(t, img, vdaWrite), iotool.StreamSHA256(iotool.DefaultSeed, vdaWrite); got != want {
		t.Errorf("vda image on the host: first %d bytes have sha256 %s, want %s", vdaWrite, got, want)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != vdaSize || !bytes.Equal(b[vdaWrite:], make([]byte, vdaSize-vdaWrite)) {
		t.Errorf("vda image: %d bytes, or bytes past the written %d changed", len(b), vdaWrite)
	}
}

// Link-local addresses only: nothing here is meant to leave L1 (which has
// no network card anyway).
const (
	tapName  = "tap0"
	l1IP     = "169.254.100.1"
	guestIP  = "169.254.100.2"
	netBits  = "/24"
	portUp   = "5201" // guest to L1
	portDown = "5202" // L1 to guest
)

// A network card on an L1 TAP: the guest has the MAC derived from the
// TAP's name, pings go both ways, and 16 MiB of TCP arrive intact in each
// direction (the same SHA-256 at both ends, and the one the data must
// have).
func TestTapPingAndTransfer(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := iotoolConfig(t)
	c.Modules = []string{"kvm-amd", "tun"}
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		t.Logf("L1 boot: %.1fs", l.BootTime.Seconds())
		if _, err := l1io(t, l, cmdTimeout, "netup", "-dev", tapName, "-addr", l1IP+netBits); err != nil {
			return err
		}
		// The TAP has no DHCP server: the guest's addresses are set by
		// hand, so its init's DHCP would only wait out its deadline.
		j, err := bootGuest(t, l, "-tap", tapName, "-append", "quiet vmm.dhcp=off") // the last -append wins
		if err != nil {
			return err
		}
		mac := net.DefaultMAC(tapName)
		wantMAC := fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
		if out, err := mustRun(l, j, "echo mac=$(cat /sys/class/net/eth0/address)", cmdTimeout); err != nil {
			return err
		} else if !strings.Contains(out, "mac="+wantMAC) {
			return failure(l, "eth0's MAC: %q, want %s", out, wantMAC)
		}
		if _, err := mustRun(l, j, "ip addr add "+guestIP+netBits+" dev eth0 && ip link set dev eth0 up", cmdTimeout); err != nil {
			return err
		}

		// Guest to L1, which also resolves the neighbours both ways.
		out, err := mustRun(l, j, "vmm-iotool ping -addr "+l1IP+" -count 3 -timeout 10s", cmdTimeout)
		if err != nil {
			return err
		}
		if err := checkPing(l, out); err != nil {
			return err
		}
		if out, err = l1io(t, l, cmdTimeout, "ping", "-addr", guestIP, "-count", "3", "-timeout", "10s"); err != nil {
			return err
		}
		if err := checkPing(l, out); err != nil {
			return err
		}

		want := iotool.StreamSHA256(iotool.DefaultSeed, transferBytes)
		if err := guestToL1(t, l, j, want); err != nil {
			return err
		}
		if err := l1ToGuest(t, l, j, want); err != nil {
			return err
		}
		return powerOff(l, j)
	})
	t.Logf("L1 and guest, boot to poweroff: %.1fs", time.Since(start).Seconds())
}

// l1io runs `l1tool io ARGS` in L1, next to the running vmm job, and
// returns its output; it must succeed.
func l1io(t *testing.T, l *nested.L1, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	out, code, err := l.Exec(ctx, append([]string{"/bin/l1tool", "io"}, args...)...)
	if err != nil {
		return out, err // already carries the tails
	}
	if code != 0 {
		return out, failure(l, "l1tool io %q in L1: status %d: %s", args, code, out)
	}
	return out, nil
}

func checkPing(l *nested.L1, out string) error {
	r, err := result(l, out, "ping")
	if err != nil {
		return err
	}
	if field(r, "replies") != "3" || field(r, "sent") != "3" {
		return failure(l, "ping: %s, want 3 replies to 3 requests", r)
	}
	return nil
}

// checkTransfer compares both ends' result lines with what was sent.
func checkTransfer(l *nested.L1, sent, got iotool.Result, want string) error {
	for _, r := range []iotool.Result{sent, got} {
		if field(r, "bytes") != strconv.Itoa(transferBytes) || field(r, "sha256") != want {
			return failure(l, "transfer: sender %s, receiver %s; want bytes=%d sha256=%s at both ends", sent, got, transferBytes, want)
		}
	}
	return nil
}

// guestToL1: L1 receives (as an exec, concurrently with the vmm job), the
// guest sends.
func guestToL1(t *testing.T, l *nested.L1, j *nested.Job, want string) error {
	type recvResult struct {
		out string
		err error
	}
	recv := make(chan recvResult, 1)
	go func() {
		out, err := l1io(t, l, transferTimeout, "tcp-recv", "-port", portUp, "-timeout", transferTimeout.String())
		recv <- recvResult{out, err}
	}()
	t0 := time.Now()
	// The sender retries until L1's receiver listens.
	out, err := mustRun(l, j, fmt.Sprintf("vmm-iotool tcp-send -addr %s:%s -bytes %d -connect-timeout 60s", l1IP, portUp, transferBytes), transferTimeout)
	if err != nil {
		return err
	}
	sent, err := result(l, out, "tcp-send")
	if err != nil {
		return err
	}
	// The sender returns once the receiver has closed: l1io's own
	// deadline bounds this wait.
	rr := <-recv
	if rr.err != nil {
		return rr.err
	}
	got, err := result(l, rr.out, "tcp-recv")
	if err != nil {
		return err
	}
	t.Logf("guest to L1: %.1fs; guest %s; L1 %s", time.Since(t0).Seconds(), sent, got)
	return checkTransfer(l, sent, got, want)
}

// l1ToGuest: the guest receives, L1 sends once the guest listens.
func l1ToGuest(t *testing.T, l *nested.L1, j *nested.Job, want string) error {
	t0 := time.Now()
	if err := j.Send(fmt.Sprintf("vmm-iotool tcp-recv -port %s -timeout %v; echo vmm-status=$?=\n", portDown, transferTimeout)); err != nil {
		return err
	}
	if _, err := j.Expect(regexp.MustCompile(`tcp-recv: listening on`), cmdTimeout); err != nil {
		return err
	}
	out, err := l1io(t, l, transferTimeout, "tcp-send", "-addr", guestIP+":"+portDown, "-bytes", strconv.Itoa(transferBytes))
	if err != nil {
		return err
	}
	sent, err := result(l, out, "tcp-send")
	if err != nil {
		return err
	}
	gout, err := j.Expect(statusRE, cmdTimeout)
	if err != nil {
		return err
	}
	if m := statusRE.FindAllStringSubmatch(gout, -1); m[len(m)-1][1] != "0" {
		return failure(l, "guest's receiver: status %s", m[len(m)-1][1])
	}
	got, err := result(l, gout, "tcp-recv")
	if err != nil {
		return err
	}
	t.Logf("L1 to guest: %.1fs; L1 %s; guest %s", time.Since(t0).Seconds(), sent, got)
	return checkTransfer(l, sent, got, want)
}
