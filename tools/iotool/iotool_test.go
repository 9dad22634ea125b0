package iotool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func streamBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	NewStream(seed).Read(b)
	return b
}

func TestStream(t *testing.T) {
	const n = 3<<20 + 12345
	whole := streamBytes(DefaultSeed, n)

	// Any split into reads gives the same bytes, stamps cut in half
	// included.
	for _, chunk := range []int{1, 7, 4095, 4096, 4097, 65536, 1 << 20, 1<<20 + 3} {
		s := NewStream(DefaultSeed)
		got := make([]byte, 0, n)
		buf := make([]byte, chunk)
		for len(got) < n {
			b := buf[:min(chunk, n-len(got))]
			s.Read(b)
			got = append(got, b...)
		}
		if !bytes.Equal(got, whole) {
			t.Errorf("reads of %d bytes differ from one read", chunk)
		}
		if s.Offset() != n {
			t.Errorf("offset %d after %d bytes", s.Offset(), n)
		}
	}
	for _, off := range []int{0, 4096, 1 << 20, 3 << 20} {
		if got := binary.LittleEndian.Uint64(whole[off:]); got != uint64(off) {
			t.Errorf("stamp at %d = %d", off, got)
		}
	}
	// The stamps make equal-looking periods differ.
	if bytes.Equal(whole[:1<<20], whole[1<<20:2<<20]) {
		t.Error("stream repeats after 1 MiB")
	}
	if !bytes.Equal(whole[8:4096], whole[1<<20+8:1<<20+4096]) {
		t.Error("pattern under the stamps does not repeat: the period is not what the sender's cost assumes")
	}
	if bytes.Equal(whole, streamBytes(DefaultSeed+1, n)) {
		t.Error("seed makes no difference")
	}
	if got, want := StreamSHA256(DefaultSeed, n), sha(whole); got != want {
		t.Errorf("StreamSHA256 = %s, want %s", got, want)
	}
	if got, want := StreamSHA256(DefaultSeed, 0), sha(nil); got != want {
		t.Errorf("StreamSHA256(0 bytes) = %s, want %s", got, want)
	}
	// Bytes that are neither stamps nor zero: a generator stuck at zero
	// would pass every equality above.
	zeros := bytes.Count(whole, []byte{0})
	if zeros > n/100 {
		t.Errorf("%d of %d stream bytes are zero", zeros, n)
	}
}

func TestStreamReadAllocatesNothing(t *testing.T) {
	s := NewStream(DefaultSeed)
	buf := make([]byte, 1<<16)
	if a := testing.AllocsPerRun(100, func() { s.Read(buf) }); a != 0 {
		t.Errorf("Read allocates %v times", a)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"4k", 4096, true},
		{"64M", 64 << 20, true},
		{"64MiB", 64 << 20, true},
		{"64mb", 64 << 20, true},
		{"2G", 2 << 30, true},
		{"8589934591G", 8589934591 << 30, true},
		{"8589934592G", 0, false},
		{"", 0, false},
		{"M", 0, false},
		{"-1", 0, false},
		{"1.5M", 0, false},
		{"12B", 0, false},
		{"1T", 0, false},
		{" 1", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestResultLines(t *testing.T) {
	r := Result{Op: "tcp-send"}
	r.add("bytes", "%d", 42)
	r.add("sha256", "%s", "abc")
	r.add("mibps", "%.2f", 1.5)
	line := r.String()
	if line != "iotool: tcp-send bytes=42 sha256=abc mibps=1.50" {
		t.Fatalf("String() = %q", line)
	}
	older := Result{Op: "tcp-send", Fields: []Field{{"bytes", "1"}}}
	console := strings.Join([]string{
		"$ vmm-iotool tcp-send -addr 1.2.3.4:5 -bytes 42\r",
		older.String() + "\r",
		"$ " + line + "\r", // a prompt may share the line
		"iotool: tcp-recv bytes=7\r",
		"$ ",
	}, "\n")
	tests := []struct {
		op      string
		want    string
		wantErr bool
	}{
		{"tcp-send", line, false},
		{"tcp-recv", "iotool: tcp-recv bytes=7", false},
		{"ping", "", true},
		{"tcp", "", true},
	}
	for _, tt := range tests {
		got, err := ParseLast(console, tt.op)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLast(%q): %v", tt.op, err)
			continue
		}
		if err == nil && got.String() != tt.want {
			t.Errorf("ParseLast(%q) = %q, want %q", tt.op, got.String(), tt.want)
		}
	}
	got, _ := ParseLast(console, "tcp-send")
	if n, err := got.Int("bytes"); n != 42 || err != nil {
		t.Errorf("Int(bytes) = %d, %v", n, err)
	}
	if f, err := got.Float("mibps"); f != 1.5 || err != nil {
		t.Errorf("Float(mibps) = %v, %v", f, err)
	}
	if _, err := got.Int("sha256"); err == nil {
		t.Error("Int of a non-number succeeded")
	}
	if _, err := got.Float("missing"); err == nil {
		t.Error("Float of a missing field succeeded")
	}
}

// tcpPair runs a receiver on loopback and a sender to it.
func tcpPair(t *testing.T, n int64) (sent, got Result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type res struct {
		r   Result
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := TCPRecv(ctx, ln)
		done <- res{r, err}
	}()
	sent, err = TCPSend(ctx, TCPSendOptions{Addr: ln.Addr().String(), Bytes: n})
	if err != nil {
		t.Fatal(err)
	}
	rr := <-done
	if rr.err != nil {
		t.Fatal(rr.err)
	}
	return sent, rr.r
}

func TestTCPLoopback(t *testing.T) {
	for _, n := range []int64{0, 1, 4<<20 + 123} {
		sent, got := tcpPair(t, n)
		for _, r := range []Result{sent, got} {
			if b, err := r.Int("bytes"); b != n || err != nil {
				t.Errorf("%s: bytes = %d, %v; want %d", r, b, err, n)
			}
			if s, _ := r.Get("sha256"); s != StreamSHA256(DefaultSeed, n) {
				t.Errorf("%s: sha256 is not the stream's", r)
			}
			if _, err := r.Float("mibps"); err != nil {
				t.Error(err)
			}
			if _, err := r.Float("seconds"); err != nil {
				t.Error(err)
			}
		}
		if sent.Op != "tcp-send" || got.Op != "tcp-recv" {
			t.Errorf("ops %q, %q", sent.Op, got.Op)
		}
	}
}

// A sender started before its receiver keeps trying, as it must under
// nesting, where the receiver's program starts slowly.
func TestTCPSendWaitsForReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	recv := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			recv <- err
			return
		}
		_, err = TCPRecv(ctx, ln)
		recv <- err
	}()
	if _, err := TCPSend(ctx, TCPSendOptions{Addr: addr, Bytes: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := <-recv; err != nil {
		t.Fatal(err)
	}

	// Nobody listening at all: it gives up when told to.
	t0 := time.Now()
	_, err = TCPSend(ctx, TCPSendOptions{Addr: addr, Bytes: 1, ConnectTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "still failing") {
		t.Errorf("send to nobody: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// A receiver whose context ends while waiting reports that, not a hang.
func TestTCPRecvDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := TCPRecv(ctx, ln); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TCPRecv with nobody sending: %v", err)
	}
}

func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s needs root (CAP_NET_RAW / CAP_NET_ADMIN); running as uid %d", what, os.Geteuid())
	}
}

func TestPingLoopback(t *testing.T) {
	needRoot(t, "a raw ICMP socket")
	r, err := Ping(t.Context(), PingOptions{Addr: "127.0.0.1", Count: 3, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Int("replies"); n != 3 {
		t.Errorf("%s: want 3 replies", r)
	}
	if n, _ := r.Int("sent"); n != 3 {
		t.Errorf("%s: want 3 sent", r)
	}
	if ms, err := r.Float("rtt_ms"); err != nil || ms < 0 || ms > 2000 {
		t.Errorf("%s: rtt_ms %v, %v", r, ms, err)
	}
}

func TestPingNoReply(t *testing.T) {
	needRoot(t, "a raw ICMP socket")
	if _, err := os.Stat(tunDevice); err != nil {
		t.Skipf("no %s for a silent network: %v", tunDevice, err)
	}
	// A TAP nobody reads: the neighbour is never resolved, so no reply
	// can come, whatever the machine's own network answers.
	dev := "iotp" + strconv.Itoa(os.Getpid()%100000)
	t.Cleanup(func() { NetDown(dev) })
	if _, err := NetUp(NetUpOptions{Dev: dev, Addr: "169.254.214.1/24"}); err != nil {
		t.Fatal(err)
	}
	r, err := Ping(t.Context(), PingOptions{Addr: "169.254.214.2", Count: 2, Timeout: 150 * time.Millisecond, Interval: 10 * time.Millisecond})
	if err == nil {
		t.Fatalf("ping of nobody succeeded: %s", r)
	}
	if r.String() != "iotool: ping replies=0 sent=2" {
		t.Errorf("result %q", r)
	}
}

func TestPingBadAddress(t *testing.T) {
	for _, a := range []string{"", "::1", "localhost", "1.2.3"} {
		if _, err := Ping(t.Context(), PingOptions{Addr: a}); err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
			t.Errorf("Ping(%q): %v", a, err)
		}
	}
}

func TestEchoReplyMatching(t *testing.T) {
	token := []byte("0123456789abcdef")
	reply := func(mut func(b []byte)) []byte {
		b := make([]byte, icmpHeaderSize+len(token))
		encodeEcho(b, 0x1234, 7, token)
		// What the kernel sends back: type 0, checksum fixed up.
		b[0] = icmpEchoReply
		binary.BigEndian.PutUint16(b[2:], 0)
		binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
		if mut != nil {
			mut(b)
		}
		return b
	}
	fix := func(b []byte) {
		binary.BigEndian.PutUint16(b[2:], 0)
		binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	}
	tests := []struct {
		name string
		msg  []byte
		want bool
	}{
		{"reply", reply(nil), true},
		{"reply with extra bytes", append(reply(nil), 0, 0), true},
		{"request", reply(func(b []byte) { b[0] = icmpEchoRequest; fix(b) }), false},
		{"other id", reply(func(b []byte) { b[4]++; fix(b) }), false},
		{"other seq", reply(func(b []byte) { b[7]++; fix(b) }), false},
		{"other token", reply(func(b []byte) { b[icmpHeaderSize]++; fix(b) }), false},
		{"bad checksum", reply(func(b []byte) { b[2]++ }), false},
		{"nonzero code", reply(func(b []byte) { b[1] = 1; fix(b) }), false},
		{"truncated", reply(nil)[:icmpHeaderSize+3], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := isEchoReply(tt.msg, 0x1234, 7, token); got != tt.want {
			t.Errorf("%s: isEchoReply = %v, want %v", tt.name, got, tt.want)
		}
	}
	// RFC 1071's worked example: the sum of 0001 f203 f4f5 f6f7 is ddf2.
	if got := inetChecksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("RFC 1071 example: %#04x", got)
	}
	if got := inetChecksum([]byte{0xff}); got != ^uint16(0xff00) {
		t.Errorf("odd length: %#04x", got)
	}
}

// directWorks tells whether dir's file system takes O_DIRECT, which the
// tools must then use.
func directWorks(t *testing.T, dir string) bool {
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func TestBlkWriteReadSum(t *testing.T) {
	dirs := []string{t.TempDir()}
	// tmpfs refuses O_DIRECT on kernels before 6.6: the fallback.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "iotool-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs = append(dirs, d)
		}
	}
	const size = 3 << 20
	ctx := t.Context()
	for _, dir := range dirs {
		dev := filepath.Join(dir, "disk.img")
		if err := os.WriteFile(dev, make([]byte, size+8192), 0o644); err != nil {
			t.Fatal(err)
		}
		wantDirect := strconv.FormatBool(directWorks(t, dir))
		want := StreamSHA256(DefaultSeed, size)

		w, err := BlkSeqWrite(ctx, BlkOptions{Dev: dev, Bytes: size, BlockSize: 1 << 20, SHA256: true})
		if err != nil {
			t.Fatal(err)
		}
		rd, err := BlkSeqRead(ctx, BlkOptions{Dev: dev, Bytes: size, BlockSize: 64 << 10, SHA256: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []Result{w, rd} {
			if s, _ := r.Get("sha256"); s != want {
				t.Errorf("%s: %s: sha256 is not the stream's %s", dir, r, want)
			}
			if d, _ := r.Get("direct"); d != wantDirect {
				t.Errorf("%s: %s: want direct=%s", dir, r, wantDirect)
			}
			if n, _ := r.Int("bytes"); n != size {
				t.Errorf("%s: %s: want bytes=%d", dir, r, size)
			}
		}
		// The file itself, read another way, holds the stream and
		// nothing past it was touched.
		b, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		if sha(b[:size]) != want {
			t.Errorf("%s: file content is not the stream", dir)
		}
		if !bytes.Equal(b[size:], make([]byte, 8192)) {
			t.Errorf("%s: bytes past the write changed", dir)
		}
		s, err := Sum(ctx, SumOptions{Path: dev, Bytes: size})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get("sha256"); got != want {
			t.Errorf("%s: sum %s, want %s", dir, s, want)
		}
		s, err = Sum(ctx, SumOptions{Path: dev})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get("sha256"); got != sha(b) {
			t.Errorf("%s: sum of whole file %s", dir, s)
		}

		rr, err := BlkRandRead(ctx, BlkRandOptions{Dev: dev, Duration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if ops, _ := rr.Int("ops"); ops < 1 {
			t.Errorf("%s: %s: no reads", dir, rr)
		}
		if d, _ := rr.Get("direct"); d != wantDirect {
			t.Errorf("%s: %s: want direct=%s", dir, rr, wantDirect)
		}

		// Reading past the end says where the device ends.
		_, err = BlkSeqRead(ctx, BlkOptions{Dev: dev, Bytes: size + 16384})
		if err == nil || !strings.Contains(err.Error(), "ends at offset") {
			t.Errorf("%s: read past the end: %v", dir, err)
		}
		if _, err := Sum(ctx, SumOptions{Path: dev, Bytes: size + 16384}); err == nil {
			t.Errorf("%s: sum past the end succeeded", dir)
		}
	}
}

func TestBlkBadOptions(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(dev, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tests := []struct {
		name string
		run  func() (Result, error)
		want string
	}{
		{"unaligned bytes", func() (Result, error) { return BlkSeqWrite(ctx, BlkOptions{Dev: dev, Bytes: 1000}) }, "multiple of 4096"},
		{"zero bytes", func() (Result, error) { return BlkSeqRead(ctx, BlkOptions{Dev: dev}) }, "multiple of 4096"},
		{"unaligned bs", func() (Result, error) { return BlkSeqRead(ctx, BlkOptions{Dev: dev, Bytes: 4096, BlockSize: 512}) }, "block size"},
		{"missing device", func() (Result, error) {
			return BlkSeqWrite(ctx, BlkOptions{Dev: dev + ".missing", Bytes: 4096})
		}, "no such file"},
		{"device smaller than a block", func() (Result, error) {
			return BlkRandRead(ctx, BlkRandOptions{Dev: dev, BlockSize: 8192})
		}, "less than one"},
		{"rand unaligned bs", func() (Result, error) { return BlkRandRead(ctx, BlkRandOptions{Dev: dev, BlockSize: 100}) }, "block size"},
	}
	for _, tt := range tests {
		_, err := tt.run()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

func TestNetUpDown(t *testing.T) {
	needRoot(t, "creating a TAP")
	if _, err := os.Stat(tunDevice); err != nil {
		t.Skipf("no %s: %v", tunDevice, err)
	}
	dev := "iot" + strconv.Itoa(os.Getpid()%100000)
	t.Cleanup(func() { NetDown(dev) })
	r, err := NetUp(NetUpOptions{Dev: dev, Addr: "169.254.213.1/24"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "iotool: netup dev=" + dev + " addr=169.254.213.1/24 created=true"; r.String() != want {
		t.Errorf("result %q, want %q", r, want)
	}
	check := func() {
		t.Helper()
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		if ifc.Flags&net.FlagUp == 0 {
			t.Errorf("%s is not up: %v", dev, ifc.Flags)
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0].String() != "169.254.213.1/24" {
			t.Errorf("%s addresses %v", dev, addrs)
		}
		flags, err := os.ReadFile("/sys/class/net/" + dev + "/tun_flags")
		if err != nil {
			t.Fatal(err)
		}
		// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, and persistence (IFF_PERSIST,
		// 0x800, in <linux/if_tun.h>).
		if got := strings.TrimSpace(string(flags)); got != "0x5802" {
			t.Errorf("tun_flags %s, want 0x5802", got)
		}
	}
	check()
	// Again, as a second benchmark run would: same state, not created.
	r, err = NetUp(NetUpOptions{Dev: dev, Addr: "169.254.213.1/24"})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Get("created"); v != "false" {
		t.Errorf("second netup: %s", r)
	}
	check()
	// The TAP takes vmm's flags: attaching like vmm does works.
	if err := tapPersist(dev, true); err != nil {
		t.Errorf("attach with vmm's flags: %v", err)
	}
	if err := NetDown(dev); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(dev); err == nil {
		t.Errorf("%s still exists after netdown", dev)
	}
}

func TestNetUpBadInput(t *testing.T) {
	for _, o := range []NetUpOptions{
		{Dev: "tap0", Addr: "169.254.1.1"},
		{Dev: "tap0", Addr: "fe80::1/64"},
		{Dev: "", Addr: "169.254.1.1/24"},
		{Dev: "a-name-far-too-long", Addr: "169.254.1.1/24"},
		{Dev: "a/b", Addr: "169.254.1.1/24"},
	} {
		if _, err := NetUp(o); err == nil {
			t.Errorf("NetUp(%+v) succeeded", o)
		}
	}
	if got := netmask(24); got != [4]byte{255, 255, 255, 0} {
		t.Errorf("netmask(24) = %v", got)
	}
	if got := netmask(0); got != [4]byte{} {
		t.Errorf("netmask(0) = %v", got)
	}
	if got := netmask(32); got != [4]byte{255, 255, 255, 255} {
		t.Errorf("netmask(32) = %v", got)
	}
}

// Main is what both front ends run: status codes, one parseable line on
// stdout, and messages on stderr.
func TestMainCLI(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(dev, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args   []string
		status int
		stdout *regexp.Regexp
		stderr *regexp.Regexp
	}{
		{nil, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`usage: prog tcp-recv`)},
		{[]string{"bogus"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`unknown subcommand "bogus"`)},
		{[]string{"tcp-recv"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`-port must be`)},
		{[]string{"tcp-send", "-bytes", "1x"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`invalid value "1x"`)},
		{[]string{"tcp-send", "-addr", "a:1", "extra"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`unexpected arguments`)},
		{[]string{"ping"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`-addr is required`)},
		{[]string{"blk-rand-read", "-dev", dev, "-seconds", "0"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`-seconds must be`)},
		{[]string{"blk-seq-write", "-dev", dev, "-bytes", "256K", "-bs", "64K", "-sha256"}, 0,
			regexp.MustCompile(`^iotool: blk-seq-write bytes=262144 sha256=` + StreamSHA256(DefaultSeed, 256<<10) + ` seconds=[0-9.]+ mibps=[0-9.]+ direct=(true|false)\n$`),
			regexp.MustCompile(`^$`)},
		{[]string{"blk-seq-read", "-dev", dev, "-bytes", "2M"}, 1, regexp.MustCompile(`^$`), regexp.MustCompile(`^prog: blk-seq-read: .*ends at offset 1048576\n$`)},
		{[]string{"sum", "-file", dev, "-bytes", "256K"}, 0,
			regexp.MustCompile(`^iotool: sum bytes=262144 sha256=` + StreamSHA256(DefaultSeed, 256<<10) + `\n$`), regexp.MustCompile(`^$`)},
		{[]string{"netup", "-dev", "x"}, 2, regexp.MustCompile(`^$`), regexp.MustCompile(`-dev and -addr are required`)},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := Main(t.Context(), "prog", tt.args, &out, &errb)
		if code != tt.status || !tt.stdout.MatchString(out.String()) || !tt.stderr.MatchString(errb.String()) {
			t.Errorf("Main(%q) = %d\nstdout %q\nstderr %q\nwant %d, stdout ~ %s, stderr ~ %s", tt.args, code, out.String(), errb.String(), tt.status, tt.stdout, tt.stderr)
		}
	}
}

// tcp-recv says where it listens (on stderr) before anything arrives, so
// that a test can start the sender only then.
func TestMainTCPRecvAnnouncesListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	var out bytes.Buffer
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer errR.Close()
	done := make(chan int, 1)
	go func() {
		done <- Main(t.Context(), "prog", []string{"tcp-recv", "-port", port, "-timeout", "30s"}, &out, errW)
		errW.Close()
	}()
	line := make([]byte, 200)
	n, err := errR.Read(line)
	if err != nil || !strings.Contains(string(line[:n]), "prog: tcp-recv: listening on") {
		t.Fatalf("stderr %q, %v", line[:n], err)
	}
	if _, err := TCPSend(t.Context(), TCPSendOptions{Addr: "127.0.0.1:" + port, Bytes: 5000}); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Fatalf("status %d", code)
	}
	r, err := ParseLast(out.String(), "tcp-recv")
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Get("sha256"); s != StreamSHA256(DefaultSeed, 5000) {
		t.Errorf("%s", r)
	}
}
