package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/tools/nested"
)

const (
	// hostileTimeout bounds the hostile run: boot, about 17,000 port
	// and MMIO exits (each a round trip through emulated nested SVM;
	// the card added about 2,200 for its window's sweep and 2,900 for
	// its crafted queues, counted by cmd/hostile's
	// TestCasesOnVMMDevices), the crafted queues; 20-70 s in all before
	// the card, 51 s with it in its first nested run. vmm's own -timeout is shorter, so a guest that hangs
	// ends with vmm's 124 and a vmm that hangs with redirect's
	// goroutine dump.
	hostileTimeout    = 5 * time.Minute
	hostileVMMTimeout = "3m"
	// hostileImageSize is each disk's size: 2048 sectors.
	hostileImageSize = 1 << 20
	// hostilePattern is what the hostile program's recovery step writes
	// over sector 1 of the writable disk, repeated.
	hostilePattern = "hostile-recovery "
)

// hostileImage writes size random bytes (seeded, so a failure can be
// replayed) to dir/name.
func hostileImage(t *testing.T, dir, name string, seed uint64) (string, []byte) {
	t.Helper()
	b := make([]byte, hostileImageSize)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestHostileGuest runs tools/e2e/cmd/hostile as a `vmm run` job: it writes
// garbage to every I/O port and every MMIO range vmm serves, and hands a
// virtio-blk device and both queues of a virtio-net card corrupted
// virtqueues (see its package comment). vmm must stay up (the job's own
// status 0 comes back, no Go panic or goroutine dump), report the
// malformed queues in a log line, fail only the device and recover it on
// reset, and leave the host's disk images untouched but for the one
// sector the guest legitimately wrote. The card is on -nic user, which
// needs nothing from L1: the program's net cases talk ARP with its
// gateway.
func TestHostileGuest(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	dir := t.TempDir()
	rwImage, rw := hostileImage(t, dir, "attack.img", 1)
	roImage, ro := hostileImage(t, dir, "attack-ro.img", 2)
	want := bytes.Clone(rw)
	copy(want[512:1024], bytes.Repeat([]byte(hostilePattern), 512/len(hostilePattern)+1))
	wantRW, wantRO := sha256Hex(want), sha256Hex(ro)

	c := ciConfig(t, map[string]string{
		"/hostile/attack.img":    rwImage,
		"/hostile/attack-ro.img": roImage,
		// -share attaches this directory to the guest as /share.
		"/hostile-share/hostile": ciBuild(t).hostile,
	})
	// Exits to vmm's userspace on two vCPUs are what the emulator's
	// guest crashes grow with (nested.ErrGuestCrashed), and nested.Retry
	// retries those only with L1's evidence for them, which a triple
	// fault does not leave: the attack samples where vmm has nothing
	// (tools/e2e/cmd/hostile) to keep them rare.
	nested.Retry(t, c, func(l *nested.L1) error {
		vmmFlags := []string{
			// The attack drives virtio-mmio registers itself;
			// TestHostilePCI attacks the PCI transport.
			"-virtio-transport", "mmio",
			"-smp", "2", // the garbage and an honest driver race on two vCPUs
			"-boot-timer", // so its port is there to be garbled too
			"-disk", "/hostile/attack.img", "-disk", "/hostile/attack-ro.img,ro",
			"-nic", "user",
			"-share", "/hostile-share", "-timeout", hostileVMMTimeout,
		}
		r, err := runHostile(t, l, vmmFlags)
		if err != nil {
			return err
		}
		for _, re := range []*regexp.Regexp{
			// A queue placed outside RAM, refused at DRIVER_OK.
			regexp.MustCompile(`vmm: virtio-blk0: virtio-mmio: queue 0: virtqueue: .*outside RAM`),
			// A malformed chain, which fails the device.
			regexp.MustCompile(`vmm: virtio-blk0: virtio-mmio: device failed: .*malformed virtqueue`),
			// The same on the card (which the MMIO garbage may have
			// provoked first: each is logged once per device).
			regexp.MustCompile(`vmm: virtio-net0: virtio-mmio: queue [01]: `),
			regexp.MustCompile(`vmm: virtio-net0: virtio-mmio: device failed: .*malformed virtqueue`),
		} {
			if !re.MatchString(r.Stderr) {
				return reportFailure(l, r, "vmm did not log %q", re)
			}
		}
		if err := checkHostileDisks(l, r, rw, ro, wantRW, wantRO); err != nil {
			return err
		}
		// The card answers honest traffic after the attack.
		if !regexp.MustCompile(`(?m)^case recovery-\S+: ok: the gateway \(\S+\) answered ARP`).MatchString(r.Stdout) {
			return reportFailure(l, r, "the network card did not carry an ARP exchange after the attack")
		}
		if _, err := report.ParseReport(strings.NewReader(r.Stderr)); err != nil {
			return reportFailure(l, r, "-boot-timer report after garbage on its port: %v", err)
		}
		return nil
	})
}

// TestHostilePCI runs tools/e2e/cmd/hostile -transport pci as a `vmm run`
// job on the virtio-pci transport: random configuration cycles through
// ports 0xCF8-0xCFF (BARs moved, decoding and MSI-X toggled), garbage at
// every width in BAR 0's structures, then each function reset, its
// configuration restored and Linux's driver bound again. vmm must stay
// up, both disks come back and read what is on the host, the writable
// one takes the pattern over sector 1 through the guest's own driver and
// nothing else of either image changes, and the card comes back as a
// network interface.
func TestHostilePCI(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	dir := t.TempDir()
	rwImage, rw := hostileImage(t, dir, "attack.img", 3)
	roImage, ro := hostileImage(t, dir, "attack-ro.img", 4)
	want := bytes.Clone(rw)
	copy(want[512:1024], bytes.Repeat([]byte(hostilePattern), 512/len(hostilePattern)+1))
	wantRW, wantRO := sha256Hex(want), sha256Hex(ro)
	c := ciConfig(t, map[string]string{
		"/hostile/attack.img":    rwImage,
		"/hostile/attack-ro.img": roImage,
		"/hostile-share/hostile": ciBuild(t).hostile,
	})
	nested.Retry(t, c, func(l *nested.L1) error {
		vmmFlags := []string{
			"-virtio-transport", "pci",
			"-smp", "2",
			"-disk", "/hostile/attack.img", "-disk", "/hostile/attack-ro.img,ro",
			"-nic", "user",
			"-share", "/hostile-share", "-timeout", hostileVMMTimeout,
		}
		r, err := runHostile(t, l, vmmFlags, "-transport", "pci")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`(?m)^hostile: pci: \d+ random configuration cycles`).MatchString(r.Stdout) ||
			!regexp.MustCompile(`(?m)^hostile: pci: \S+: \d+ accesses in BAR 0`).MatchString(r.Stdout) {
			return reportFailure(l, r, "the hostile job did not attack the configuration space and the BARs")
		}
		if err := checkHostileDisks(l, r, rw, ro, wantRW, wantRO); err != nil {
			return err
		}
		if !regexp.MustCompile(`(?m)^case recovery-\S+: ok: network interface \S+ back`).MatchString(r.Stdout) {
			return reportFailure(l, r, "the network card did not come back after the attack")
		}
		return nil
	})
}

// runHostile runs the hostile program as a `vmm run` job with vmmFlags
// and its own flags, logs its report, and fails unless vmm stayed up,
// the job exited 0 and said it finished. The share is a virtio-fs device,
// one of those the attack unbinds and garbles: the program runs from a
// copy in RAM with the share detached (lazily: u-root's shell keeps its
// first working directory, /share, whatever cd says).
func runHostile(t *testing.T, l *nested.L1, vmmFlags []string, flags ...string) (redirectReport, error) {
	job := "cp /share/hostile /tmp/hostile && umount -l /share && exec /tmp/hostile " + strings.Join(flags, " ") + " -pattern '" + hostilePattern + "'"
	r, err := redirectExec(t.Context(), l, hostileTimeout,
		[]string{"-sha256", "/hostile/attack.img", "-sha256", "/hostile/attack-ro.img"},
		runArgs(vmmFlags, "sh", "-c", job)...)
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		t.Log(line)
	}
	t.Logf("hostile run took %.1fs", r.ElapsedMS/1000)
	if nested.GoCrash(r.Stderr) {
		return r, reportFailure(l, r, "vmm crashed")
	}
	if r.Exit != 0 {
		return r, reportFailure(l, r, "vmm run exited with status %d, want the hostile job's 0 (3: a device misbehaved or did not come back, see the FAIL lines; 4: the attack could not start; 124: the guest hung; 125: it crashed or reset)", r.Exit)
	}
	if !regexp.MustCompile(`(?m)^hostile: done: \d+ cases ok, 0 failed$`).MatchString(r.Stdout) {
		return r, reportFailure(l, r, "the hostile job did not finish its attack")
	}
	return r, nil
}

// checkHostileDisks: after the attack both disks still serve honest I/O
// and read back what is on the host's images (the job's "sector0"
// lines), and neither image changed but for the pattern over sector 1
// of the writable one.
func checkHostileDisks(l *nested.L1, r redirectReport, rw, ro []byte, wantRW, wantRO string) error {
	heads := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^hostile: \S+ sector0 ([0-9a-f]+)$`).FindAllStringSubmatch(r.Stdout, -1) {
		heads[m[1]] = true
	}
	for name, img := range map[string][]byte{"attack.img": rw, "attack-ro.img": ro} {
		if !heads[hex.EncodeToString(img[:16])] {
			return reportFailure(l, r, "no disk read back sector 0 of %s after the attack", name)
		}
	}
	for path, want := range map[string]string{"/hostile/attack.img": wantRW, "/hostile/attack-ro.img": wantRO} {
		if got := r.SHA256[path]; got != want {
			return reportFailure(l, r, "%s changed: SHA-256 %s, want %s (only sector 1 of the writable disk may change)", path, got, want)
		}
	}
	return nil
}
