package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/kvmstats"
	"github.com/vmm-dev/vmm/tools/nested"
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
	failTimes   int                   // how many times it fails; 0: always
	failed      int
	loUp        bool // L1's lo was brought up
	noStats     bool // vmstat fails
	frozen      bool // vmstat finds L1 frozen
	pid         int
	badSHA      bool
	killed      int
	execs       []string
	mounts      []string // the guests' mount commands
	// latePrompt: the guest's shell prints its prompt a while after a
	// command's status line, and a line typed meanwhile has the prompt
	// inside its echo, as QEMU's guest's console does.
	latePrompt bool
}

func newFakeHost(t *testing.T) *fakeHost {
	return &fakeHost{t: t, listeners: map[string]chan int64{}}
}

type fakeConsole struct {
	*localConsole
	h      *fakeHost
	scale  float64
	args   []string
	recvOn string // guest tcp-recv port once it listens, "" if none (under h.mu)
	userUp bool   // the guest configured its user-mode card
	sentTo string // the host the guest's last tcp-send reached
	// seqReads counts the guest's fs-seq-read commands: the second of a
	// boot (the read again, in RAM used before) takes 6 time units, not 8.
	seqReads int

	pid      int
	typed    string // input before Enter
	pmu      sync.Mutex
	pending  bool   // latePrompt: a prompt not yet printed
	redirect bool   // the running command's output goes to file
	file     string // /tmp/bench.out
	// The VM's counters and the VMM's CPU ticks: every workload adds
	// per unit of work 100 exits (60 MMIO, 30 injections) for QEMU,
	// 50 for vmm (scale 2), and 2 (QEMU) or 1 (vmm) user ticks.
	cmu      sync.Mutex
	counters map[string]int64
	user     int64
	switches int64 // of the VMM's one thread, as its sample lists it
	// The guest cards' packet counters (both cards alike): per unit of
	// work 40 frames received and 20 sent for QEMU, half for vmm.
	rxFrames, txFrames int64
}

// work adds units of a workload's cost to the VM's counters.
func (c *fakeConsole) work(units float64) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	n := int64(units * 100 / c.scale)
	c.counters["exits"] += n
	c.counters["mmio_exits"] += n * 6 / 10
	c.counters["irq_injections"] += n * 3 / 10
	c.user += int64(units * 2 / c.scale)
	c.switches += int64(units * 4 / c.scale)
	c.rxFrames += int64(units * 40 / c.scale)
	c.txFrames += int64(units * 20 / c.scale)
}

func (h *fakeHost) Start(ctx context.Context, args []string) (Console, error) {
	c := &fakeConsole{localConsole: &localConsole{changed: make(chan struct{}), exited: make(chan struct{})}, h: h, scale: 1, args: args,
		counters: map[string]int64{"exits": 12345, "io_exits": 99, "mmio_exits": 0, "irq_injections": 1}}
	name := SysQEMU
	if strings.HasSuffix(args[0], "/vmm") {
		name, c.scale = SysVMM, 2
	}
	if slices.Contains(args, "/guest/fs-bzImage") {
		name += "-fs"
	}
	h.mu.Lock()
	h.started = append(h.started, name)
	h.pid++
	c.pid = h.pid
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
	c.echo(s)
	c.typed += s
	if !strings.HasSuffix(c.typed, "\n") {
		return nil // Enter comes later
	}
	s, c.typed = c.typed, ""
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
	cmd, c.redirect = strings.CutSuffix(cmd, " >/tmp/bench.out 2>&1")
	stderrOnConsole := false
	if !c.redirect {
		cmd, stderrOnConsole = strings.CutSuffix(cmd, " >/tmp/bench.out")
		c.redirect = stderrOnConsole
	}
	if strings.HasPrefix(cmd, "vmm-iotool tcp-recv ") {
		// It listens a moment later, saying so on stderr.
		port := flags(cmd)["port"]
		go func() {
			time.Sleep(20 * time.Millisecond)
			c.h.mu.Lock()
			c.recvOn = port
			c.h.mu.Unlock()
			if stderrOnConsole {
				c.Write([]byte("vmm-iotool: tcp-recv: listening on [::]:" + port + "\r\n"))
			}
		}()
		return nil
	}
	var out string
	rc := 0
	if cmd == "cat /tmp/bench.out" {
		out = c.file
	} else {
		out, rc = c.guestCommand(cmd)
	}
	if rc >= 0 {
		c.output(out, rc)
	}
	return nil
}

// output is a command's output, to the console or the file, and its
// status line.
func (c *fakeConsole) output(out string, rc int) {
	if c.redirect {
		c.file, out = out, ""
	}
	if !c.h.latePrompt {
		c.Write([]byte(out + fmt.Sprintf("bench-rc-%d\r\n$ ", rc)))
		return
	}
	c.pmu.Lock()
	defer c.pmu.Unlock()
	c.Write([]byte(out + fmt.Sprintf("bench-rc-%d\r\n", rc)))
	c.pending = true
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.pmu.Lock()
		defer c.pmu.Unlock()
		if c.pending {
			c.pending = false
			c.Write([]byte("$ "))
		}
	}()
}

// echo is the guest's echo of typed input, with a pending late prompt
// landing just before its last character.
func (c *fakeConsole) echo(s string) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if !c.pending || s == "" {
		c.Write([]byte(s))
		return
	}
	c.pending = false
	at := max(0, len(strings.TrimSuffix(s, "\n"))-1)
	c.Write([]byte(s[:at] + "$ " + s[at:]))
}

// guestCommand returns the command's output and status; -1 means it is
// still running (a receiver) and will print later.
func (c *fakeConsole) guestCommand(cmd string) (string, int) {
	f := flags(cmd)
	op := strings.TrimPrefix(strings.Fields(cmd)[0], "vmm-")
	if op == "iotool" {
		op = strings.Fields(cmd)[1]
	}
	if op == c.h.failOp && (c.h.failTimes == 0 || c.h.failed < c.h.failTimes) {
		c.h.failed++
		return "vmm-iotool: " + op + ": input/output error\r\n", 1
	}
	switch op {
	case "echo":
		return "", 0
	case "ip":
		return "", 0
	case "cat":
		if strings.Contains(cmd, "/statistics/") {
			// A card's packet counters.
			for _, card := range []string{"eth0", "eth1"} {
				dir := "/sys/class/net/" + card + "/statistics/"
				if cmd == "cat "+dir+"rx_packets "+dir+"tx_packets" {
					c.cmu.Lock()
					defer c.cmu.Unlock()
					return fmt.Sprintf("%d\r\n%d\r\n", c.rxFrames, c.txFrames), 0
				}
			}
			return "unexpected: " + cmd + "\r\n", 1
		}
		// The user-mode card's MAC, then its address.
		want := " && ip addr add 10.0.2.15/24 dev eth1 && ip link set dev eth1 up"
		if !strings.HasPrefix(cmd, "cat /sys/class/net/eth1/address") || !strings.HasSuffix(cmd, want) {
			return "unexpected: " + cmd + "\r\n", 1
		}
		for _, a := range c.args {
			if _, mac, ok := strings.Cut(a, "mac="); ok && (strings.HasPrefix(a, "user,") || strings.Contains(a, "netdev=n1")) {
				c.userUp = true
				return mac + "\r\n", 0
			}
		}
		return "cat: /sys/class/net/eth1/address: no such file\r\n", 1
	case "mkdir":
		// The mount line: each VMM's own file system.
		want := map[bool]string{true: "mount -t virtiofs bench /mnt/fs", false: "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 bench /mnt/fs"}[c.scale == 2 || slices.Contains(c.args, "daemon-exec")]
		if !strings.Contains(cmd, want) {
			return "mount: wrong file system: " + cmd + "\r\n", 1
		}
		c.h.mu.Lock()
		c.h.mounts = append(c.h.mounts, cmd)
		c.h.mu.Unlock()
		return "", 0
	case "fs-files":
		n, _ := strconv.Atoi(f["count"])
		c.work(float64(n))
		// Times: vmm takes half as long.
		return fmt.Sprintf("iotool: fs-files files=%s size=%s create_s=%g stat_s=%g read_s=%g seconds=1\r\n", f["count"], f["size"], 4/c.scale, 2/c.scale, 3/c.scale), 0
	case "fs-seq-read":
		if !strings.Contains(cmd, " -drop-caches") {
			return "unexpected: a sequential read from a warm page cache: " + cmd + "\r\n", 1
		}
		c.seqReads++
		n, _ := strconv.ParseInt(f["bytes"], 10, 64)
		c.work(float64(n) / (1 << 20))
		t := 8.0
		if c.seqReads == 2 {
			t = 6
		}
		return fmt.Sprintf("iotool: fs-seq-read bytes=%s seconds=%g mibps=1\r\n", f["bytes"], t/c.scale), 0
	case "ping":
		return "iotool: ping sent=3 received=3\r\n", 0
	case "blk-seq-write", "blk-seq-read":
		n, _ := strconv.ParseInt(f["bytes"], 10, 64)
		c.work(float64(n) / (1 << 20))
		return fmt.Sprintf("iotool: %s bytes=%s seconds=1.0 mibps=%g\r\n", op, f["bytes"], 10*c.scale), 0
	case "blk-rand-read":
		c.work(5000)
		return fmt.Sprintf("iotool: blk-rand-read ops=5000 seconds=%s iops=%g\r\n", f["seconds"], 1000*c.scale), 0
	case "tcp-send":
		host, port, _ := strings.Cut(f["addr"], ":")
		if host == "10.0.2.2" && !c.userUp {
			return "vmm-iotool: tcp-send: connect " + f["addr"] + ": network is unreachable\r\n", 1
		}
		c.sentTo = host
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
		c.work(float64(n) / (1 << 20))
		l <- n
		return fmt.Sprintf("iotool: tcp-send bytes=%d sha256=%s seconds=2 mibps=%g\r\n", n, sha(n), 5*c.scale), 0
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
	case strings.Contains(cmd, "netup -dev lo -addr 127.0.0.1/8"):
		h.mu.Lock()
		h.loUp = true
		h.mu.Unlock()
		return "", 0, nil
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
			rate := 6.0 // over the TAP; 3 over the user-mode network
			if c.sentTo == "10.0.2.2" {
				if !h.loUp {
					return "", 0, errors.New("fake: the guest reached L1's loopback while it was down")
				}
				rate = 3
			}
			return fmt.Sprintf("iotool: tcp-recv bytes=%d sha256=%s seconds=2 mibps=%g\n", n, s, rate*c.scale), 0, nil
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
	case strings.Contains(cmd, "benchtool tail /tmp/fsbench-virtiofsd.log"):
		return "virtiofsd: fake: vhost-user message failed\n", 0, nil
	case strings.Contains(cmd, "benchtool vmstat"):
		switch {
		case h.frozen:
			return "", 0, fmt.Errorf("exec: %w", nested.ErrFrozen)
		case h.noStats:
			return "benchtool: no KVM VM of this process in debugfs\n", 1, nil
		case c == nil || args[len(args)-1] != map[float64]string{1: "qemu-system-x86", 2: "vmm"}[c.scale]:
			return "benchtool: vmstat: 0 processes named " + args[len(args)-1] + ", want one\n", 1, nil
		}
		c.cmu.Lock()
		defer c.cmu.Unlock()
		procs := []string{vmmComm(c.args)}
		if slices.Contains(c.args, "daemon-exec") {
			procs = append(procs, "virtiofsd")
		}
		b, _ := json.Marshal(kvmstats.Sample{PID: c.pid, VM: fmt.Sprintf("%d-12", c.pid), Counters: maps.Clone(c.counters),
			CPU: kvmstats.CPU{User: c.user, System: 7, Switches: 1000 + c.switches}, Procs: procs,
			Threads: map[int]kvmstats.Thread{c.pid: {Proc: procs[0], Switches: 1000 + c.switches, Wait: "do_epoll_wait"}}})
		return string(b) + "\n", 0, nil
	case strings.Contains(cmd, "io tcp-send"):
		host, port, _ := strings.Cut(f["addr"], ":")
		listening := func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return c.recvOn == port
		}
		rate := 7.0 // over the TAP; 4 through the port forward
		if host == "127.0.0.1" {
			// Only a VMM's forward listens there, and it accepts
			// at once: a guest not yet listening breaks the
			// connection, with no retry.
			fwd := fmt.Sprintf("hostfwd=tcp:127.0.0.1:%s-:", port)
			i := slices.IndexFunc(c.args, func(a string) bool { return strings.Contains(a, fwd) })
			if i < 0 || !h.loUp {
				return "l1tool: tcp-send: connect " + f["addr"] + ": connection refused\n", 1, nil
			}
			_, gport, _ := strings.Cut(c.args[i], fwd)
			gport, _, _ = strings.Cut(gport, ",")
			port = gport
			if !listening() || !c.userUp {
				return "l1tool: tcp-send: to " + f["addr"] + " after 0 bytes: connection reset by peer\n", 1, nil
			}
			rate = 4
		} else {
			// Like l1tool, retry while the receiver is not listening.
			for try := 0; !listening(); try++ {
				if try == 1000 {
					return "l1tool: tcp-send: connect: still failing: connection refused\n", 1, nil
				}
				time.Sleep(time.Millisecond)
			}
		}
		n, _ := strconv.ParseInt(f["bytes"], 10, 64)
		c.work(float64(n) / (1 << 20))
		h.mu.Lock()
		c.recvOn = ""
		h.mu.Unlock()
		c.output(fmt.Sprintf("iotool: tcp-recv bytes=%d sha256=%s seconds=1 mibps=%g\r\n", n, sha(n), rate*c.scale), 0)
		return fmt.Sprintf("iotool: tcp-send bytes=%d sha256=%s seconds=1 mibps=1\n", n, sha(n)), 0, nil
	}
	return "unknown", 127, nil
}

func (h *fakeHost) Tails() string { return "--- fake tails ---" }

func testRunner(h *fakeHost) *Runner {
	p := DefaultParams()
	p.Rounds, p.SeqBytes, p.TCPBytes, p.DiskBytes = 3, 4<<20, 3<<20, 8<<20
	p.FSFiles = 0 // TestRunnerSharedDir turns it on
	return &Runner{Host: h, Params: p, cmdWait: 5 * time.Second, Layout: Layout{VMM: "/vmm", QEMU: "/usr/bin/qemu-system-x86_64", Disk: "/tmp/disk.img", L1Tool: "/bin/l1tool", BenchTool: "/bin/benchtool",
		FSKernel: "/guest/fs-bzImage", FSInitrd: "/guest/initrd-fs.cpio", FSDir: "/tmp/fsbench", LoopbackDown: true}}
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
	want := map[string]float64{"fs-create": 4, "fs-stat": 2, "fs-read": 3, "fs-seq-read": 8, "fs-seq-reread": 6}
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
	if !strings.Contains(h.mounts[1], "mount -t 9p") {
		t.Errorf("QEMU without virtiofsd mounted %q", h.mounts[1])
	}
	var b strings.Builder
	rep.WriteMarkdown(&b)
	if !strings.Contains(b.String(), "| shared dir: stat them (s) | 1.00 | 2.00 | 0.50 (0.50-0.50) |") {
		t.Errorf("markdown:\n%s", b.String())
	}
	// With QEMU's virtiofsd both mount virtio-fs, and QEMU's boot goes
	// through daemon-exec.
	r.Layout.VirtioFSD = "/usr/lib/qemu/virtiofsd"
	h.started, h.mounts = nil, nil
	var log strings.Builder
	r.Log = &log
	if err := r.Run(t.Context(), &Report{}); err != nil {
		t.Fatal(err)
	}
	r.Log = nil
	// Said once, and only for the boots whose cost holds it.
	if n := strings.Count(log.String(), "QEMU's CPU time counts the processes qemu-system-x86, virtiofsd\n"); n != 1 {
		t.Errorf("the log says %d times that QEMU's cost holds virtiofsd's:\n%s", n, log.String())
	}
	if got, want := strings.Join(h.started, ","), "vmm,vmm-fs,QEMU,QEMU-fs,QEMU,QEMU-fs,vmm,vmm-fs,vmm,vmm-fs,QEMU,QEMU-fs"; got != want {
		t.Errorf("boot order with virtiofsd %s, want %s", got, want)
	}
	for _, m := range h.mounts {
		if !strings.Contains(m, "mount -t virtiofs bench /mnt/fs") {
			t.Errorf("with virtiofsd a guest mounted %q", m)
		}
	}
	r.Layout.VirtioFSD = ""
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
	want := map[string]float64{"blk-seq-read": 10, "blk-seq-write": 10, "blk-rand-read": 1000, "tcp-guest-to-host": 6, "tcp-host-to-guest": 7,
		"tcp-user-guest-to-host": 3, "tcp-user-host-to-guest": 4}
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
		"/bin/l1tool io netup -dev lo -addr 127.0.0.1/8", "/bin/l1tool io tcp-send -addr 127.0.0.1:5150 ", "/bin/l1tool io tcp-send -addr 127.0.0.1:5151 ",
		"/bin/l1tool io netdown -dev tapv", "/bin/l1tool io netdown -dev tapq", "/bin/benchtool rm /tmp/disk.img"} {
		if !strings.Contains(execs, want) {
			t.Errorf("no exec %q in:\n%s", want, execs)
		}
	}
}

// A shell whose prompt comes late is waited for: typed before it, the
// next command's echo would hold the prompt and never match.
func TestRunnerLatePrompt(t *testing.T) {
	h := newFakeHost(t)
	h.latePrompt = true
	r := testRunner(h)
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) != 0 {
		t.Errorf("failed attempts with a late prompt: %v", rep.Failures)
	}
	if got := rep.Ratio("blk-seq-read"); got != 2 {
		t.Errorf("blk-seq-read: ratio %v, want 2", got)
	}
}

// A failure that persists through every attempt of every round fails
// the run, after maxAttempts boots per round, each killed.
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
			r.Params.Rounds = 2
			tt.setup(h, r)
			rep := &Report{}
			err := r.Run(t.Context(), rep)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if len(h.started) > 0 {
				if want := maxAttempts * r.Params.Rounds; h.killed != want || len(rep.Failures) != want {
					t.Errorf("%d VMMs killed, %d failures recorded; want %d of each", h.killed, len(rep.Failures), want)
				}
				if !strings.Contains(err.Error(), "no round completed") || !strings.Contains(err.Error(), "fake tails") {
					t.Errorf("error without its summary or console tails: %v", err)
				}
				if !slices.Equal(rep.Abandoned, []int{1, 2}) {
					t.Errorf("abandoned rounds %v", rep.Abandoned)
				}
			}
		})
	}
}

// A guest that fails in one attempt (as when the emulator kills it) is
// booted again and the run completes, with the failure reported; one
// that fails every attempt in a round costs that round only.
func TestRunnerRetries(t *testing.T) {
	tests := []struct {
		name      string
		failTimes int
		rounds    int // rounds in the report
		abandoned []int
		started   string
	}{
		{"once", 1, 3, nil, "vmm,vmm,QEMU,QEMU,vmm,vmm,QEMU"},
		{"a whole round", maxAttempts, 2, []int{1}, "vmm,vmm,vmm,QEMU,vmm,vmm,QEMU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.failOp, h.failTimes = "blk-rand-read", tt.failTimes
			r := testRunner(h)
			rep := &Report{}
			if err := r.Run(t.Context(), rep); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(h.started, ","); got != tt.started {
				t.Errorf("boots %s, want %s", got, tt.started)
			}
			if len(rep.Failures) != tt.failTimes || rep.Failures[0] != (Failure{Round: 1, System: SysVMM, Attempt: 1,
				Error: `blk-rand-read: guest command "vmm-iotool blk-rand-read -dev /dev/vda -bs 4096 -seconds 5": status 1: vmm-iotool: blk-rand-read: input/output error`}) {
				t.Errorf("failures %+v", rep.Failures)
			}
			if !slices.Equal(rep.Abandoned, tt.abandoned) {
				t.Errorf("abandoned %v, want %v", rep.Abandoned, tt.abandoned)
			}
			for _, sys := range []string{SysVMM, SysQEMU} {
				if n := len(rep.Samples[sys]["blk-seq-read"]); n != tt.rounds {
					t.Errorf("%s: %d rounds of samples, want %d", sys, n, tt.rounds)
				}
				if n := len(rep.Costs[sys]["blk-seq-read"]); n != tt.rounds {
					t.Errorf("%s: %d rounds of costs, want %d", sys, n, tt.rounds)
				}
			}
			if got := rep.Ratio("blk-rand-read"); got != 2 {
				t.Errorf("ratio %v", got)
			}
			var b strings.Builder
			rep.WriteMarkdown(&b)
			if !strings.Contains(b.String(), "round 1, vmm, attempt 1: blk-rand-read: guest command") {
				t.Errorf("markdown without the failure:\n%s", b.String())
			}
		})
	}
}

// Each workload's cost is the difference of the VM's counters around its
// command, over its units: the fake adds 100 exits and 2 ticks per unit
// for QEMU, half for vmm, while booting and typing add exits of their
// own that must not count.
func TestRunnerCosts(t *testing.T) {
	h := newFakeHost(t)
	r := testRunner(h)
	r.Params.FSFiles, r.Params.FSFileSize, r.Params.FSSeqBytes = 100, 512, 2<<20
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	for _, w := range Workloads {
		for _, tc := range []struct {
			metric string
			sys    string
			want   float64
		}{
			{"exits", SysQEMU, 100}, {"exits", SysVMM, 50}, {"mmio_exits", SysQEMU, 60}, {"irq_injections", SysVMM, 15},
			{"io_exits", SysQEMU, 0}, {"cpu_ms", SysQEMU, 20}, {"cpu_ms", SysVMM, 10}, {"guest_ms", SysVMM, 0},
			{"switches", SysQEMU, 4}, {"switches", SysVMM, 2},
		} {
			got := r2(rep.PerUnit(tc.sys, w.Key, metricByKey(tc.metric)))
			if !slices.Equal(got, []float64{tc.want, tc.want, tc.want}) {
				t.Errorf("%s %s per %s: %v, want %v each round", w.Key, tc.metric, w.Unit, got, tc.want)
			}
		}
		if got := rep.CostRatios(w.Key, metricByKey("exits")); !slices.Equal(r2(got), []float64{0.5, 0.5, 0.5}) {
			t.Errorf("%s exits ratios %v", w.Key, got)
		}
		if got := rep.CostRatios(w.Key, metricByKey("switches")); !slices.Equal(r2(got), []float64{0.5, 0.5, 0.5}) {
			t.Errorf("%s context switch ratios %v", w.Key, got)
		}
		if th := rep.Costs[SysVMM][w.Key][0].Threads; len(th) != 1 || th[0].Proc != "vmm" || th[0].Wait != "do_epoll_wait" {
			t.Errorf("%s: vmm's thread groups %+v, want its one thread", w.Key, th)
		}
		if got := rep.CostRatios(w.Key, metricByKey("io_exits")); len(got) != 0 {
			t.Errorf("%s I/O exits ratios %v: 0/0 is no ratio", w.Key, got)
		}
		// Only the network figures count the guest's frames.
		network := strings.HasPrefix(w.Key, "tcp-")
		for _, tc := range []struct {
			m         Metric
			qemu, vmm float64
		}{{FrameMetrics[0], 40, 20}, {FrameMetrics[1], 20, 10}} {
			q, v := r2(rep.PerUnit(SysQEMU, w.Key, tc.m)), r2(rep.PerUnit(SysVMM, w.Key, tc.m))
			switch {
			case network && (!slices.Equal(q, []float64{tc.qemu, tc.qemu, tc.qemu}) || !slices.Equal(v, []float64{tc.vmm, tc.vmm, tc.vmm})):
				t.Errorf("%s %s per MiB: QEMU %v, vmm %v; want %v and %v each round", w.Key, tc.m.Key, q, v, tc.qemu, tc.vmm)
			case !network && (len(q) != 0 || len(v) != 0):
				t.Errorf("%s counted frames: %v, %v", w.Key, q, v)
			}
		}
	}
	if c := rep.Costs[SysVMM]["blk-rand-read"][0]; c.Units != 5000 {
		t.Errorf("random read units %v, want the 5000 requests made", c.Units)
	}
	var b strings.Builder
	rep.WriteMarkdown(&b)
	md := b.String()
	for _, want := range []string{
		"| virtio-blk sequential read (MiB/s) | 20.0 | 10.0 | 2.00 (2.00-2.00) | 0.50 (0.50-0.50) | 0.50 (0.50-0.50) |",
		"| shared dir: stat them (s) | 1.00 | 2.00 | 0.50 (0.50-0.50) | 0.50 (0.50-0.50) | 0.50 (0.50-0.50) |",
		"| workload, per unit | system | exits | I/O | MMIO | HLT | IRQ window | host IRQ | IRQs injected | emulated insns | page faults | CPU ms | of it guest ms |",
		"| virtio-blk 4 KiB random read, per request | vmm | 50.0 | 0.000 | 30.0 | n/a | n/a | n/a | 15.0 | n/a | n/a | 10.0 | 0.000 |",
		"| | QEMU | 100 | 0.000 | 60.0 | n/a | n/a | n/a | 30.0 | n/a | n/a | 20.0 | 0.000 |",
		"| | vmm/QEMU | 0.50 | n/a | 0.50 | n/a | n/a | n/a | 0.50 | n/a | n/a | 0.50 | n/a |",
		"| shared dir: create, stat and read back small files, per file | vmm |",
		"| virtio-net TCP guest → host, user-mode network (vmm usernet, QEMU slirp) (MiB/s) | 6.00 | 3.00 | 2.00 (2.00-2.00) | 0.50 (0.50-0.50) | 0.50 (0.50-0.50) |",
		"| virtio-net TCP host → guest, user-mode network's port forward (MiB/s) | 8.00 | 4.00 | 2.00 (2.00-2.00) | 0.50 (0.50-0.50) | 0.50 (0.50-0.50) |",
		"| virtio-net TCP host → guest, user-mode port forward, per MiB | vmm | 50.0 |",
		"  tcp-user-host-to-guest vmm 8.00 8.00 8.00 / QEMU 4.00 4.00 4.00",
		"| workload, per unit | system | frames to the guest | frames from the guest |",
		"| virtio-net TCP host → guest, user-mode port forward, per MiB | vmm | 20.0 | 10.0 |\n| | QEMU | 40.0 | 20.0 |\n| | vmm/QEMU | 0.50 | 0.50 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var j jsonReport
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Costs) != len(Workloads) || j.Costs[0].Metrics[0].Key != "exits" || *j.Costs[0].Metrics[0].Ratio != 0.5 ||
		len(j.Costs[0].Raw["qemu"]) != 3 || j.Costs[0].Raw["qemu"][0].Counters["exits"] != 400 || j.Figures[7].Cost != "fs-files" ||
		j.Figures[5].Key != "tcp-user-guest-to-host" || *j.Figures[5].Ratio != 2 || *j.Figures[6].QEMU.Median != 4 || j.Costs[5].Key != "tcp-user-guest-to-host" {
		t.Errorf("json costs: %s", raw)
	}
}

// r2 rounds to 2 decimals (per-unit costs come from integer counters).
func r2(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int64(x*100+0.5)) / 100
	}
	return out
}

// Without samples the figures are still measured and the costs read
// n/a; an L1 that froze ends the run at once (WithL1 retries a whole L1).
func TestRunnerSampleFailures(t *testing.T) {
	h := newFakeHost(t)
	h.noStats = true
	r := testRunner(h)
	r.Params.Rounds = 1
	rep := &Report{}
	if err := r.Run(t.Context(), rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ratio("blk-seq-read") != 2 || len(rep.Costs[SysVMM]["blk-seq-read"]) != 1 || rep.Costs[SysVMM]["blk-seq-read"][0] != nil {
		t.Errorf("samples %v costs %v", rep.Samples, rep.Costs)
	}
	var b strings.Builder
	rep.WriteMarkdown(&b)
	if !strings.Contains(b.String(), "| virtio-blk sequential read (MiB/s) | 20.0 | 10.0 | 2.00 | n/a | n/a |") || strings.Contains(b.String(), "Cost per unit") {
		t.Errorf("markdown:\n%s", b.String())
	}

	h = newFakeHost(t)
	h.frozen = true
	r = testRunner(h)
	err := r.Run(t.Context(), &Report{})
	if !errors.Is(err, nested.ErrFrozen) {
		t.Fatalf("err %v, want ErrFrozen", err)
	}
	if len(h.started) != 1 {
		t.Errorf("booted %v after L1 froze", h.started)
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

// A failed shared-directory boot of QEMU with virtiofsd reports the end
// of the daemon's log; one without a daemon has none to report.
func TestRunnerDaemonLog(t *testing.T) {
	for _, virtiofsd := range []string{"/usr/lib/qemu/virtiofsd", ""} {
		h := newFakeHost(t)
		h.failOp = "fs-seq-read"
		r := testRunner(h)
		r.Params.Rounds, r.Params.FSFiles, r.Params.FSFileSize, r.Params.FSSeqBytes = 1, 10, 512, 1<<20
		r.Layout.VirtioFSD = virtiofsd
		r.Only = []string{SysQEMU}
		err := r.Run(t.Context(), &Report{})
		if err == nil {
			t.Fatal("a failing phase in every attempt did not fail the run")
		}
		has := strings.Contains(err.Error(), "--- /tmp/fsbench-virtiofsd.log (tail) ---\nvirtiofsd: fake: vhost-user message failed")
		if has != (virtiofsd != "") {
			t.Errorf("virtiofsd %q: the daemon's log in the error is %v: %v", virtiofsd, has, err)
		}
	}
}

func TestParseFrames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Frames
		err  bool
	}{
		{"12\r\n34\r\n", Frames{RX: 12, TX: 34}, false},
		{"\r\n0\n18446744073709551615\n", Frames{TX: 1<<64 - 1}, false},
		{"12\r\n", Frames{}, true},
		{"12 34 56", Frames{}, true},
		{"cat: /sys/class/net/eth9/statistics/rx_packets: No such file or directory", Frames{}, true},
		{"-1 2", Frames{}, true},
		{"18446744073709551616 2", Frames{}, true},
	} {
		got, err := parseFrames(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseFrames(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
