package tap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"tap0", true},
		{"t", true},
		{"vmm-tap.1_x", true},
		{"tap%d", true},
		{"abcdefghijklmno", true}, // 15 bytes, IFNAMSIZ-1
		{"abcdefghijklmnop", false},
		{"", false},
		{".", false},
		{"..", false},
		{"tap/0", false},
		{"tap 0", false},
		{"tap\t0", false},
		{"tap\n", false},
		{"tap:0", false},
		{"tap\x000", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// A bad name fails before /dev/net/tun is even opened, so this runs
// anywhere.
func TestOpenRejectsBadNameFirst(t *testing.T) {
	_, err := Open("bad/name")
	if err == nil || !strings.Contains(err.Error(), "bad/name") {
		t.Fatalf("Open(bad/name) = %v, want an error naming the interface", err)
	}
}

// openTestTap opens a fresh TAP with a per-process name, or skips the
// test saying why it cannot.
func openTestTap(t testing.TB) *Tap {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a TAP needs root (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat(tunPath); err != nil {
		t.Skipf("%s missing (modprobe tun): %v", tunPath, err)
	}
	name := fmt.Sprintf("vmmt%d", os.Getpid()%1000000)
	tp, err := Open(name)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if tp.Name() != name {
		t.Fatalf("Name() = %q, want %q", tp.Name(), name)
	}
	return tp
}

func TestOpenCloseRemovesInterface(t *testing.T) {
	tp := openTestTap(t)
	sys := "/sys/class/net/" + tp.Name()
	if _, err := os.Stat(sys); err != nil {
		tp.Close()
		t.Fatalf("interface missing after Open: %v", err)
	}
	flags, err := os.ReadFile(sys + "/tun_flags")
	if err != nil {
		tp.Close()
		t.Fatalf("tun_flags: %v", err)
	}
	var f uint32
	fmt.Sscanf(strings.TrimSpace(string(flags)), "0x%x", &f)
	want := uint32(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if f&want != want {
		t.Errorf("tun_flags = %#x, want %#x set", f, want)
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Unregistering is synchronous with the last close, but allow the
	// sysfs entry a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(sys); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists after Close", sys)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSetOffload(t *testing.T) {
	tp := openTestTap(t)
	defer tp.Close()
	for _, tc := range []struct {
		flags uint32
		ok    bool
	}{
		{0, true},
		{OffloadCsum, true},
		{OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN, true},
		{OffloadCsum | OffloadUFO, true},
		{1 << 20, false}, // unknown bit: the kernel says EINVAL
	} {
		err := tp.SetOffload(tc.flags)
		if (err == nil) != tc.ok {
			t.Errorf("SetOffload(%#x) = %v, want ok=%v", tc.flags, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tp.Name()) {
			t.Errorf("error %q does not name the interface", err)
		}
	}
}

// A blocked Read parks in the poller; a past deadline and Close must both
// wake it.
func TestReadWakesOnDeadlineAndClose(t *testing.T) {
	tp := openTestTap(t)
	buf := make([]byte, 2048)
	done := make(chan error, 1)
	go func() { _, err := tp.Read(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	tp.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read after deadline: %v, want ErrDeadlineExceeded", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("deadline did not wake Read")
	}
	tp.SetReadDeadline(time.Time{})
	go func() { _, err := tp.Read(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	tp.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake Read")
	}
}

// TryRead returns at once, with ok false, when no frame is queued,
// allocates nothing, and reports a past deadline and Close as errors.
func TestTryReadEmpty(t *testing.T) {
	tp := openTestTap(t)
	buf := make([]byte, 2048)
	n, ok, err := tp.TryRead(buf)
	if n != 0 || ok || err != nil {
		t.Fatalf("TryRead on an empty TAP = %d, %v, %v; want 0, false, nil", n, ok, err)
	}
	if a := testing.AllocsPerRun(100, func() { tp.TryRead(buf) }); a != 0 {
		t.Errorf("TryRead allocates %v times per call", a)
	}
	tp.SetReadDeadline(time.Now().Add(-time.Second))
	if _, ok, err := tp.TryRead(buf); ok || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("TryRead after a past deadline = %v, %v; want ErrDeadlineExceeded", ok, err)
	}
	tp.SetReadDeadline(time.Time{})
	tp.Close()
	if _, ok, err := tp.TryRead(buf); ok || !errors.Is(err, os.ErrClosed) {
		t.Errorf("TryRead after Close = %v, %v; want ErrClosed", ok, err)
	}
}

// testEtherType is IEEE's local experimental EtherType: the host stack
// ignores such frames, so only our packet socket sees them.
const testEtherType = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestFramesBothWays sends a frame into the TAP from a host packet socket
// and reads it with its header, then writes one with a header and
// receives it on the packet socket.
func TestFramesBothWays(t *testing.T) {
	tp := openTestTap(t)
	defer tp.Close()
	name := tp.Name()
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)

	// Bring the interface up: packet sockets refuse a down device.
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifi, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	if err != nil {
		t.Fatal(err)
	}
	var index int
	fmt.Sscan(string(ifi), &index)

	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
	if err != nil {
		t.Skipf("no packet socket: %v", err)
	}
	defer unix.Close(ps)
	if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: index}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(ps, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})

	frame := func(src byte, payload string) []byte {
		f := []byte{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, src, testEtherType >> 8, testEtherType & 0xff}
		f = append(f, payload...)
		for len(f) < 60 {
			f = append(f, 0)
		}
		return f
	}

	// Host → TAP reader.
	in := frame(2, "to the guest")
	if err := unix.Sendto(ps, in, 0, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: index, Halen: 6}); err != nil {
		t.Fatalf("sendto: %v", err)
	}
	tp.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65550)
	for {
		n, err := tp.Read(buf)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n < HeaderSize {
			t.Fatalf("Read %d bytes, shorter than the header", n)
		}
		if bytes.Equal(buf[HeaderSize:n], in) {
			break
		}
		// Something else the host sent (IPv6 may still chatter); skip.
	}

	// And with TryRead, which does not wait: poll until it is there.
	in = frame(4, "to the guest, tried")
	if err := unix.Sendto(ps, in, 0, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: index, Halen: 6}); err != nil {
		t.Fatalf("sendto: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		n, ok, err := tp.TryRead(buf)
		if err != nil {
			t.Fatalf("TryRead: %v", err)
		}
		if ok && bytes.Equal(buf[HeaderSize:n], in) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("TryRead did not return the frame within 2s")
		}
		if !ok {
			time.Sleep(time.Millisecond)
		}
	}

	// TAP writer → host.
	out := frame(3, "from the guest")
	pkt := append(make([]byte, HeaderSize), out...)
	if n, err := tp.Write(pkt); err != nil || n != len(pkt) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	rbuf := make([]byte, 2048)
	recv := func(want []byte) {
		t.Helper()
		for {
			n, _, err := unix.Recvfrom(ps, rbuf, 0)
			if err != nil {
				t.Fatalf("recvfrom: %v", err)
			}
			if bytes.Equal(rbuf[:n], want) {
				return
			}
		}
	}
	recv(out)

	// And gathered with WriteVectors: the header split across two
	// buffers, an empty one, the frame in three pieces.
	out = frame(5, "from the guest, gathered")
	pkt = append(make([]byte, HeaderSize), out...)
	bufs := [][]byte{pkt[:5], pkt[5:HeaderSize], nil, pkt[HeaderSize : HeaderSize+6], pkt[HeaderSize+6 : HeaderSize+20], pkt[HeaderSize+20:]}
	if n, err := tp.WriteVectors(bufs); err != nil || n != len(pkt) {
		t.Fatalf("WriteVectors = %d, %v", n, err)
	}
	recv(out)
	if _, err := tp.WriteVectors(make([][]byte, tp.MaxVectors()+1)); err == nil {
		t.Errorf("WriteVectors took %d buffers, more than MaxVectors", tp.MaxVectors()+1)
	}
	if a := testing.AllocsPerRun(20, func() {
		if _, err := tp.WriteVectors(bufs); err != nil {
			t.Fatalf("WriteVectors: %v", err)
		}
	}); a != 0 {
		t.Errorf("WriteVectors: %v allocations per frame, want 0", a)
	}
}

// BenchmarkSend sends a 64 KiB frame held in five buffers, as a guest's
// GSO frame arrives in a TX chain: copied into one buffer and written
// (what virtio-net did before WriteVectors, and does for a backend
// without it), or gathered by WriteVectors. The interface is up, and the
// host stack drops the frames (an EtherType it ignores), so both pay the
// same for the kernel's side.
func BenchmarkSend(b *testing.B) {
	tp := openTestTap(b)
	defer tp.Close()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(s)
	ifr, _ := unix.NewIfreq(tp.Name())
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		b.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		b.Fatal(err)
	}
	frame := make([]byte, HeaderSize+65536)
	copy(frame[HeaderSize:], []byte{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, testEtherType >> 8, testEtherType & 0xff})
	bufs := [][]byte{frame[:HeaderSize], frame[HeaderSize : HeaderSize+1000], frame[HeaderSize+1000 : HeaderSize+20000], frame[HeaderSize+20000 : HeaderSize+40000], frame[HeaderSize+40000:]}
	b.Run("copy+Write", func(b *testing.B) {
		gather := make([]byte, len(frame))
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			off := 0
			for _, p := range bufs {
				off += copy(gather[off:], p)
			}
			if _, err := tp.Write(gather[:off]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("WriteVectors", func(b *testing.B) {
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := tp.WriteVectors(bufs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// An interface that exists and is not a TAP (lo) is refused in words
// that say so, not with TUNSETIFF's bare "invalid argument".
func TestOpenRefusesOtherInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("TUNSETIFF on an existing name needs root (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat(tunPath); err != nil {
		t.Skipf("%s missing (modprobe tun): %v", tunPath, err)
	}
	if _, err := os.Stat("/sys/class/net/lo"); err != nil {
		t.Skipf("no lo here: %v", err)
	}
	tp, err := Open("lo")
	if err == nil {
		tp.Close()
		t.Fatal("Open(lo) succeeded")
	}
	if !strings.Contains(err.Error(), "not a TAP vmm can attach") {
		t.Errorf("Open(lo): %v, want it to say lo is not a TAP", err)
	}
}
