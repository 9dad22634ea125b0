package usernet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// transferTimeout bounds one bulk transfer in these tests.
const transferTimeout = 2 * time.Minute

// streamSum writes size bytes of a seeded stream to w and returns their
// SHA-256.
func streamSum(w io.Writer, seed byte, size int64) ([32]byte, error) {
	h := sha256.New()
	_, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rand.NewChaCha8([32]byte{seed}), size))
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, err
}

// readSum reads r to EOF and returns how much arrived and its SHA-256.
func readSum(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	m, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return m, sum, err
}

type halfConn interface {
	net.Conn
	CloseWrite() error
}

// transfer sends size bytes from src to dst, which are the two ends of
// one connection, and checks they arrive whole: the sender half-closes,
// the receiver reads to EOF and then closes, as tools/iotool's tcp-send
// and tcp-recv do.
func transfer(t *testing.T, src, dst halfConn, size int64) {
	t.Helper()
	deadline := time.Now().Add(transferTimeout)
	src.SetDeadline(deadline)
	dst.SetDeadline(deadline)
	type recv struct {
		m   int64
		sum [32]byte
		err error
	}
	rc := make(chan recv, 1)
	go func() {
		m, sum, err := readSum(dst)
		rc <- recv{m, sum, err}
	}()
	start := time.Now()
	want, err := streamSum(src, 7, size)
	if err != nil {
		t.Fatalf("sending %d bytes: %v", size, err)
	}
	if err := src.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-rc
	if r.err != nil || r.m != size || r.sum != want {
		t.Fatalf("received %d bytes (sha256 %x, err %v), want %d bytes (sha256 %x)", r.m, r.sum, r.err, size, want)
	}
	t.Logf("%d MiB in %.2fs", size>>20, time.Since(start).Seconds())
}

// slowLink is a guest link that takes slowBurst frames from the network,
// then pauses for slowPause: about 19 MB/s of full frames, a tenth of
// what the stack sends here, so frames wait in the network's queue.
func slowLink() func() {
	const (
		slowBurst = 128
		slowPause = 10 * time.Millisecond
	)
	frames := 0
	return func() {
		if frames++; frames%slowBurst == 0 {
			time.Sleep(slowPause)
		}
	}
}

// Bulk TCP through a hostfwd and out of the guest arrives whole both
// ways: each connection carries size bytes to the guest, then size bytes
// back, over a fast link and over a slow one with a large receive window
// in the guest, and with a guest that takes and makes offloads, which
// then receives 64 KiB segments with partial checksums, finishing them
// as a driver does, and sends such segments. (A single connection cannot fill the network's frame
// queue: the stack's 1 MiB send buffer bounds what it has in flight to
// about 720 frames of the queue's 2,048, or to 1 MiB of its 4, so none
// are dropped.)
func TestBulkTCP(t *testing.T) {
	sizes := []int64{4 << 20, 64 << 20}
	if testing.Short() {
		sizes = sizes[:1]
	}
	for _, size := range sizes {
		for _, c := range []struct {
			name string
			// conns returns the host's end and the guest's end of
			// one connection, the network and the guest.
			conns func(t *testing.T, link guestLink) (host, guest halfConn, n *Network, g *guest)
			link  guestLink
		}{
			{"hostfwd", hostfwdConns, guestLink{}},
			{"outbound", outboundConns, guestLink{}},
			{"hostfwd-slow-link", hostfwdConns, guestLink{pace: slowLink()}},
			{"hostfwd-offload", hostfwdConns, guestLink{offload: true}},
			{"outbound-offload", outboundConns, guestLink{offload: true}},
			{"hostfwd-offload-slow-link", hostfwdConns, guestLink{pace: slowLink(), offload: true}},
		} {
			t.Run(fmt.Sprintf("%s/%dMiB", c.name, size>>20), func(t *testing.T) {
				host, guest, n, g := c.conns(t, c.link)
				defer host.Close()
				defer guest.Close()
				// One direction after the other on the same
				// connection: the second starts once the first has
				// reached EOF, so each half-close is exercised.
				t.Run("to-guest", func(t *testing.T) { transfer(t, host, guest, size) })
				large := g.large.Load()
				t.Run("to-host", func(t *testing.T) { transfer(t, guest, host, size) })
				if c.link.offload && large == 0 {
					t.Errorf("%d MiB to a guest that takes TSO came in no segment larger than the MTU", size>>20)
				}
				if c.link.offload && g.sentTSO.Load() == 0 {
					t.Errorf("%d MiB from a guest that sends TSO went in no segment larger than the MTU", size>>20)
				}
				t.Logf("%+v, %d TSO segments to the guest, %d from it", n.Stats(), large, g.sentTSO.Load())
			})
		}
	}
}

// bigWindow gives the guest's TCP an 8 MiB receive buffer, so its window
// is larger than the network's frame queue.
func bigWindow(t *testing.T, g *guest) {
	opt := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 8 << 20, Max: 8 << 20}
	if err := g.s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); err != nil {
		t.Fatal(err)
	}
}

// hostfwdConns connects from the host to a guest listener through a
// hostfwd rule; a paced link (newLinkGuest) also widens the guest's
// receive window.
func hostfwdConns(t *testing.T, link guestLink) (halfConn, halfConn, *Network, *guest) {
	f, err := ParseForward("tcp:127.0.0.1:0-:8022")
	if err != nil {
		t.Fatal(err)
	}
	n := newNetwork(t, Config{Forwards: []Forward{f}})
	g := newLinkGuest(t, n, link)
	if link.pace != nil {
		bigWindow(t, g)
	}
	l, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(guestIP.As4()), Port: 8022}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type accepted struct {
		c   net.Conn
		err error
	}
	ac := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ac <- accepted{c, err}
	}()
	hc, err := net.DialTimeout("tcp", n.HostAddrs()[0].String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-ac:
		if a.err != nil {
			hc.Close()
			t.Fatal(a.err)
		}
		return hc.(*net.TCPConn), a.c.(*gonet.TCPConn), n, g
	case <-time.After(testTimeout):
		hc.Close()
		t.Fatal("the guest accepted nothing")
	}
	return nil, nil, nil, nil
}

// outboundConns connects from the guest to a host listener on the
// loopback through the gateway's address.
func outboundConns(t *testing.T, link guestLink) (halfConn, halfConn, *Network, *guest) {
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	n := newNetwork(t, Config{})
	g := newLinkGuest(t, n, link)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	gc, err := g.dialTCP(ctx, fmt.Sprintf("%s:%d", GatewayAddr, l.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	l.SetDeadline(time.Now().Add(testTimeout))
	hc, err := l.AcceptTCP()
	if err != nil {
		gc.Close()
		t.Fatal(err)
	}
	return hc, gc, n, g
}

// A hostfwd's host port accepts before the guest listens, as QEMU's
// slirp's does; the guest's refusal then closes the host's connection
// (the sender of a transfer sees a broken pipe or a reset, never a
// connection that hangs), and a connection made once the guest listens
// carries data.
func TestHostForwardBeforeListen(t *testing.T) {
	f, err := ParseForward("tcp:127.0.0.1:0-:8022")
	if err != nil {
		t.Fatal(err)
	}
	n := newNetwork(t, Config{Forwards: []Forward{f}})
	g := newGuest(t, n)
	c, err := net.DialTimeout("tcp", n.HostAddrs()[0].String(), testTimeout)
	if err != nil {
		t.Fatalf("host port not accepting while the guest does not listen: %v", err)
	}
	// Written as tools/iotool's tcp-send writes: 1 MiB at a time, never
	// reading. The socket buffers take the first writes; once the guest
	// has refused, a write fails.
	c.SetDeadline(time.Now().Add(testTimeout))
	chunk := make([]byte, 1<<20)
	var sent int64
	for err == nil && sent < 64<<20 {
		var m int
		m, err = c.Write(chunk)
		sent += int64(m)
	}
	c.Close()
	if err == nil || isTimeout(err) {
		t.Fatalf("sending to a guest that does not listen: %d bytes, %v; want the connection closed", sent, err)
	}
	t.Logf("sending to a guest that does not listen: %v after %d KiB", err, sent>>10)

	l, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(guestIP.As4()), Port: 8022}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, "listening")
		c.Close()
	}()
	c, err = net.DialTimeout("tcp", n.HostAddrs()[0].String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "listening" {
		t.Fatalf("once the guest listens: read %q, %v", b, err)
	}
}

// A connection made while the driver took offloads outlives them (a new
// driver that takes none): its small segments reach the guest with their
// checksums finished, and its large ones are dropped and counted, not
// handed to a driver that cannot take them.
func TestOffloadWithdrawn(t *testing.T) {
	host, guest, n, g := hostfwdConns(t, guestLink{offload: true})
	defer host.Close()
	defer guest.Close()
	deadline := time.Now().Add(testTimeout)
	host.SetDeadline(deadline)
	guest.SetDeadline(deadline)
	if err := n.SetOffload(0); err != nil {
		t.Fatal(err)
	}
	msg := []byte("small enough for one segment")
	if _, err := host.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(guest, got); err != nil || string(got) != string(msg) {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
	before := n.Stats().Dropped
	if _, err := host.Write(make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	for n.Stats().Dropped == before {
		if time.Now().After(deadline) {
			t.Fatalf("no large segment dropped; %d TSO segments reached the guest", g.large.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
