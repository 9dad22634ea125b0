package bench

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHost plays L1 and both VMMs' guests by answering the commands the
// runner types and executes the way vmm-iotool and l1tool would. vmm's
// figures are twice QEMU's, so every ratio must come out 2.
type fakeHost struct {
	t *testing.T

	mu          sync.Mutex
	started     []string // system per Start
	cur         *fakeConsole
	listeners   map[string]chan int64 // host tcp-recv port -> bytes sent by guest
	neverListen bool                  // the host receiver never starts
	failOp      string                // guest op that fails
	badSHA      bool
	killed      int
	execs       []string
	mounts      []string // the guests' mount commands
}

func newFakeHost(t *testing.T) *fakeHost {
	return &fakeHost{t: t, listeners: map[string]chan int64{}}
}

type fakeConsole struct {
	*localConsole
	h      *fakeHost
	scale  float64
	recvOn string // guest tcp-recv port, "" if none
}

func (h *fakeHost) Start(ctx context.Context, args []string) (Console, error) {
	c := &fakeConsole{localConsole: &localConsole{changed: make(chan struct{}), exited: make(chan struct{})}, h: h, scale: 1}
	name := SysQEMU
	if strings.HasSuffix(args[0], "/vmm") {
		name, c.scale = SysVMM, 2
	}
	if slices.Contains(args, "/guest/fs-bzImage") {
		name += "-fs"
	}
	h.mu.Lock()
	h.started = append(h.started, name)
	h.cur = c
	h.mu.Unlock()
	c.Write([]byte("booting\r\nvmm-guest: ready\r\n$ "))
	return c, nil
}

func (c *fakeConsole) exit(code int) {
	c.mu.Lock()
	c.code = code
	c.mu.Unlock()
	close(c.exited)
	c.broadcast()
}

func (c *fakeConsole) Kill() error {
	c.h.mu.Lock()
	c.h.killed++
	c.h.mu.Unlock()
	select {
	case <-c.exited:
	default:
		c.exit(137)
	}
	return nil
}

var flagRE = regexp.MustCompile(`(?:^| )-([a-z]+) (\S+)`)

func flags(cmd string) map[string]string {
	m := map[string]string{}
	for _, f := range flagRE.FindAllStringSubmatch(cmd, -1) {
		m[f[1]] = f[2]
	}
	return m
}

func (c *fakeConsole) Send(s string) error {
	c.Write([]byte(s)) // the guest's echo
	if s == "poweroff\n" {
		go c.exit(0)
		return nil
	}
	if s == "echo bench-$((6*7))\n" {
		c.Write([]byte("bench-42\r\n$ "))
		return nil
	}
	cmd, ok := strings.CutSuffix(s, "; echo bench-rc-$?\n")
	if !ok {
		return fmt.Errorf("fake guest: unexpected input %q", s)
	}
	out, rc := c.guestCommand(cmd)
	if rc >= 0 {
		c.Write([]byte(out + fmt.Sprintf("bench-rc-%d\r\n$ ", rc)))
	}
	return nil
}

// guestCommand returns the command's output and status; -1 means it is
// still running (a receiver) and will print later.
func (c *fakeConsole) guestCommand(cmd string) (string, int) {
	f := flags(cmd)
	op := strings.TrimPrefix(strings.Fields(cmd)[0], "vmm-")
	if op == "iotool" {
		op = strings.Fields(cmd)[1]
	}
	if op == c.h.failOp {
		return "vmm-iotool: " + op + ": input/output error\r\n", 1
	}
	switch op {
	case "echo", "ip":
		return "", 0
	case "mkdir":
		// The mount line: each VMM's own file system.
		want := map[bool]string{true: "mount -t virtiofs bench /mnt/fs", false: "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 bench /mnt/fs"}[c.scale == 2]
		if !strings.Contains(cmd, want) {
			return "mount: wrong file system: " + cmd + "\r\n", 1
		}
		c.h.mu.Lock()
		c.h.mounts = append(c.h.mounts, cmd)
		c.h.mu.Unlock()
		return "", 0
	case "fs-files":
		// Times: vmm takes half as long.
		return fmt.Sprintf("iotool: fs-files files=%s size=%s create_s=%g stat_s=%g read_s=%g seconds=1\r\n", f["count"], f["size"], 4/c.scale, 2/c.scale, 3/c.scale), 0
	case "fs-seq-read":
		return fmt.Sprintf("iotool: fs-seq-read bytes=%s seconds=%g mibps=1\r\n", f["bytes"], 8/c.scale), 0
	case "ping":
		return "iotool: ping sent=3 received=3\r\n", 0
	case "blk-seq-write", "blk-seq-read":
		return fmt.Sprintf("iotool: %s bytes=%s seconds=1.0 mibps=%g\r\n", op, f["bytes"], 10*c.scale), 0
	case "blk-rand-read":
		return fmt.Sprintf("iotool: blk-rand-read ops=5000 seconds=%s iops=%g\r\n", f["seconds"], 1000*c.scale), 0
	case "tcp-send":
		_, port, _ := strings.Cut(f["addr"], ":")
		// Like vmm-iotool, retry while the receiver is not listening.
		var l chan int64
		for try := 0; l == nil; try++ {
			c.h.mu.Lock()
			l = c.h.listeners[port]
			c.h.mu.Unlock()
			if l == nil && try == 100 {
				return "vmm-iotool: tcp-send: connect " + f["addr"] + ": still failing: connection refused\r\n", 1
			}
			time.Sleep(time.Millisecond)
		}
		n, _ := strconv.ParseInt(f["bytes"], 10, 64)
		l <- n
		return fmt.Sprintf("iotool: tcp-send bytes=%d sha256=%s seconds=2 mibps=%g\r\n", n, sha(n), 5*c.scale), 0
	case "tcp-recv":
		c.recvOn = f["port"]
		return "", -1
	}
	return "unknown command\r\n", 127
}

func sha(n int64) string { return fmt.Sprintf("%064x", n) }

func (h *fakeHost) Exec(ctx context.Context, args ...string) (string, int, error) {
	h.mu.Lock()
	h.execs = append(h.execs, strings.Join(args, " "))
	c := h.cur
	h.mu.Unlock()
	cmd := strings.Join(args, " ")
	f := flags(cmd)
	switch {
	case strings.Contains(cmd, "mkdisk"), strings.Contains(cmd, "netup"), strings.Contains(cmd, "netdown"),
		strings.Contains(cmd, "benchtool rm"), strings.Contains(cmd, " signal "):
		return "", 0, nil
	case strings.Contains(cmd, "io tcp-recv"):
		l := make(chan int64, 1)
		h.mu.Lock()
		if !h.neverListen {
			h.listeners[f["port"]] = l
		}
		h.mu.Unlock()
		select {
		case n := <-l:
			s := sha(n)
			if h.badSHA {
				s = sha(n + 1)
			}
			return fmt.Sprintf("iotool: tcp-recv bytes=%d sha256=%s seconds=2 mibps=%g\n", n, s, 6*c.scale), 0, nil
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
	case strings.Contains(cmd, "io tcp-send"):
		_, port, _ := strings.Cut(f["addr"], ":")
		if c.recvOn != port {
			return "l1tool: tcp-send: connect: still failing: connection refused\n", 1, nil
		}
		n, _ := strconv.ParseInt(f["bytes"], 10, 64)
		c.Write([]byte(fmt.Sprintf("iotool: tcp-recv bytes=%d sha256=%s seconds=1 mibps=%g\r\nbench-rc-0\r\n$ ", n, sha(n), 7*c.scale)))
		return fmt.Sprintf("iotool: tcp-send bytes=%d sha256=%s seconds=1 mibps=1\n", n, sha(n)), 0, nil
	}
	return "unknown", 127, nil
}

func (h *fakeHost) Tails() string { return "--- fake tails ---" }

func testRunner(h *fakeHost) *Runner {
	p := DefaultParams()
	p.Rounds, p.SeqBytes, p.TCPBytes, p.DiskBytes = 3, 4<<20, 3<<20, 8<<20
	p.FSFiles = 0 // TestRunnerSharedDir turns it on
	return &Runner{Host: h, Params: p, Layout: Layout{VMM: "/vmm", QEMU: "/usr/bin/qemu-system-x86_64", Disk: "/tmp/disk.img", L1Tool: "/bin/l1tool", BenchTool: "/bin/benchtool",
		FSKernel: "/guest/fs-bzImage", FSInitrd: "/guest/initrd-fs.cpio", FSDir: "/tmp/fsbench"}}
}

// The shared-directory workload boots each system once more per round,
// with its own kernel and file system, and its times give ratios of 0.5
// (vmm takes half as long in the fake).
func TestRunnerSharedDir(t *testing.T) {
	h := newFakeHost(t)
	r := testRunner(h)
	r.Params.FSFiles, r.Params.FSFileSize, r.Params.FSSeqBytes = 100, 512, 2<<20
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(h.started, ","), "vmm,vmm-fs,QEMU,QEMU-fs,QEMU,QEMU-fs,vmm,vmm-fs,vmm,vmm-fs,QEMU,QEMU-fs"; got != want {
		t.Errorf("boot order %s, want %s", got, want)
	}
	want := map[string]float64{"fs-create": 4, "fs-stat": 2, "fs-read": 3, "fs-seq-read": 8}
	for key, v := range want {
		if got := Median(rep.Samples[SysQEMU][key]); got != v {
			t.Errorf("%s: QEMU median %v, want %v", key, got, v)
		}
		if got := rep.Ratio(key); got != 0.5 {
			t.Errorf("%s: ratio %v, want 0.5", key, got)
		}
	}
	if got := rep.Ratio("blk-seq-read"); got != 2 {
		t.Errorf("blk-seq-read: ratio %v, want 2 (the other boots still count)", got)
	}
	if len(h.mounts) != 6 {
		t.Errorf("%d mounts, want one per shared-directory boot", len(h.mounts))
	}
	execs := strings.Join(h.execs, "\n")
	for _, want := range []string{"/bin/benchtool mkdisk /tmp/fsbench/seq.img 2097152", "/bin/benchtool rm /tmp/fsbench/files", "/bin/benchtool rm /tmp/fsbench"} {
		if !strings.Contains(execs, want) {
			t.Errorf("no exec %q in:\n%s", want, execs)
		}
	}
	var b strings.Builder
	rep.WriteMarkdown(&b)
	if !strings.Contains(b.String(), "| shared dir: stat them (s) | 1.00 | 2.00 | 0.50 (0.50-0.50) |") {
		t.Errorf("markdown:\n%s", b.String())
	}
	// Without the workload the report leaves its rows out.
	rep = &Report{}
	r.Params.FSFiles = 0
	h.started = nil
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	rep.WriteMarkdown(&b)
	if strings.Contains(b.String(), "shared dir") || strings.Contains(strings.Join(h.started, ","), "-fs") {
		t.Errorf("shared-directory rows or boots without the workload:\n%s", b.String())
	}
}

func TestRunnerRounds(t *testing.T) {
	h := newFakeHost(t)
	r := testRunner(h)
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(h.started, ","), "vmm,QEMU,QEMU,vmm,vmm,QEMU"; got != want {
		t.Errorf("boot order %s, want %s (interleaved)", got, want)
	}
	want := map[string]float64{"blk-seq-read": 10, "blk-seq-write": 10, "blk-rand-read": 1000, "tcp-guest-to-host": 6, "tcp-host-to-guest": 7}
	for _, f := range Figures {
		if f.FS {
			if rep.Samples[SysVMM][f.Key] != nil {
				t.Errorf("%s: measured with the shared-directory workload off", f.Key)
			}
			continue
		}
		if got := Median(rep.Samples[SysQEMU][f.Key]); got != want[f.Key] {
			t.Errorf("%s: QEMU median %v, want %v (the receiver's figure)", f.Key, got, want[f.Key])
		}
		if n := len(rep.Samples[SysVMM][f.Key]); n != 3 {
			t.Errorf("%s: %d vmm samples, want 3", f.Key, n)
		}
		if got := rep.Ratio(f.Key); got != 2 {
			t.Errorf("%s: ratio %v, want 2", f.Key, got)
		}
	}
	if h.killed != 0 {
		t.Errorf("%d VMMs killed in a clean run", h.killed)
	}
	execs := strings.Join(h.execs, "\n")
	for _, want := range []string{"/bin/benchtool mkdisk /tmp/disk.img 8388608", "/bin/l1tool io netup -dev tapv -addr 169.254.100.1/24",
		"/bin/l1tool io netup -dev tapq -addr 169.254.101.1/24", "/bin/l1tool io tcp-send -addr 169.254.101.2:",
		"/bin/l1tool io netdown -dev tapv", "/bin/l1tool io netdown -dev tapq", "/bin/benchtool rm /tmp/disk.img"} {
		if !strings.Contains(execs, want) {
			t.Errorf("no exec %q in:\n%s", want, execs)
		}
	}
}

func TestRunnerFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *fakeHost, r *Runner)
		want  string
	}{
		{"guest command fails", func(h *fakeHost, r *Runner) { h.failOp = "blk-seq-read" }, "blk-seq-read: guest command"},
		{"checksum mismatch", func(h *fakeHost, r *Runner) { h.badSHA = true }, "sha256 mismatch"},
		{"never listening", func(h *fakeHost, r *Runner) { h.neverListen = true }, "connection refused"},
		{"only one system", func(h *fakeHost, r *Runner) { r.Only = []string{"nope"} }, "no systems selected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			r := testRunner(h)
			tt.setup(h, r)
			err := r.Run(t.Context(), &Report{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if len(h.started) > 0 {
				if h.killed != 1 {
					t.Errorf("%d VMMs killed after a failure, want 1", h.killed)
				}
				if !strings.Contains(err.Error(), "fake tails") {
					t.Errorf("error without console tails: %v", err)
				}
			}
		})
	}
}

func TestRunnerOnly(t *testing.T) {
	h := newFakeHost(t)
	r := testRunner(h)
	r.Only = []string{"qemu"}
	r.Params.Rounds = 2
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.started, ","); got != "QEMU,QEMU" {
		t.Errorf("booted %s", got)
	}
	if rep.Samples[SysVMM] != nil {
		t.Error("vmm samples without vmm")
	}
}

func TestLocalConsole(t *testing.T) {
	h := &DirectHost{}
	c, err := h.Start(t.Context(), []string{"sh", "-c", `echo ready; read x; echo "got $x"; exit 3`})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expect(regexp.MustCompile(`ready`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Send("hello\n"); err != nil {
		t.Fatal(err)
	}
	out, err := c.Expect(regexp.MustCompile(`got (\w+)`), 10*time.Second)
	if err != nil || !strings.Contains(out, "got hello") {
		t.Fatalf("out %q, err %v", out, err)
	}
	code, err := c.Wait(10 * time.Second)
	if err != nil || code != 3 {
		t.Fatalf("exit %d, %v; want 3", code, err)
	}
	if _, err := c.Expect(regexp.MustCompile(`never`), 10*time.Second); err == nil || !strings.Contains(err.Error(), "status 3") {
		t.Errorf("expect after exit: %v", err)
	}
	if !strings.Contains(h.Tails(), "got hello") {
		t.Errorf("tails %q", h.Tails())
	}

	c, err = h.Start(t.Context(), []string{"sleep", "60"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expect(regexp.MustCompile(`x`), 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("expect on a silent process: %v", err)
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, err := c.Wait(10 * time.Second); err != nil || code != 137 {
		t.Errorf("killed: exit %d, %v; want 137", code, err)
	}

	out, code, err = h.Exec(t.Context(), "sh", "-c", "echo hi; exit 4")
	if err != nil || code != 4 || out != "hi\n" {
		t.Errorf("exec: %q %d %v", out, code, err)
	}
	if _, _, err := h.Exec(t.Context(), "/nonexistent"); err == nil {
		t.Error("exec of a missing program succeeded")
	}
}
