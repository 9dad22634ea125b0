package usernet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/vmm-dev/vmm/usernet/vnethdr"
)

// testTimeout bounds every wait on the network in these tests.
const testTimeout = 20 * time.Second

// guestTxQueue is the guest link's outbound queue, in frames.
const guestTxQueue = 4096

var guestMAC = tcpip.LinkAddress([]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56})

func newNetwork(t *testing.T, cfg Config) *Network {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// udpFrame builds an Ethernet frame with an IPv4 UDP datagram, behind a
// zero virtio-net header, as a guest driver hands it to the device. The
// UDP checksum is 0, "none" in IPv4 (RFC 768).
func udpFrame(src, dst netip.AddrPort, dstMAC tcpip.LinkAddress, payload []byte) []byte {
	u := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(u).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	return ipv4Frame([HeaderSize]byte{}, dstMAC, header.UDPProtocolNumber, src.Addr(), dst.Addr(), u)
}

// readUDP reads frames until a UDP datagram from port sport arrives and
// returns its Ethernet destination and payload.
func readUDP(t *testing.T, n *Network, sport uint16) (tcpip.LinkAddress, []byte) {
	t.Helper()
	n.SetReadDeadline(time.Now().Add(testTimeout))
	defer n.SetReadDeadline(time.Time{})
	buf := make([]byte, 65536)
	for {
		m, err := n.Read(buf)
		if err != nil {
			t.Fatalf("waiting for a UDP datagram from port %d: %v", sport, err)
		}
		if !bytes.Equal(buf[:HeaderSize], make([]byte, HeaderSize)) {
			t.Fatalf("virtio-net header % x, want zeros", buf[:HeaderSize])
		}
		f := header.Ethernet(buf[HeaderSize:m])
		if f.Type() != header.IPv4ProtocolNumber {
			continue
		}
		ip := header.IPv4(f[header.EthernetMinimumSize:])
		if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber {
			continue
		}
		u := header.UDP(ip.Payload())
		if u.SourcePort() == sport {
			return f.DestinationAddress(), append([]byte(nil), u.Payload()...)
		}
	}
}

// The DHCP exchange of a guest with no address: discover, offer,
// request, acknowledgement, all broadcast, with slirp's addresses.
func TestDHCPExchange(t *testing.T) {
	n := newNetwork(t, Config{})
	client := netip.AddrPortFrom(netip.IPv4Unspecified(), dhcpClientPort)
	server := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpServerPort)
	bcast := tcpip.LinkAddress(header.EthernetBroadcastAddress)

	disc, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Write(udpFrame(client, server, bcast, disc.ToBytes())); err != nil {
		t.Fatal(err)
	}
	dst, b := readUDP(t, n, dhcpServerPort)
	offer, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if dst != bcast {
		t.Errorf("offer sent to %v, want broadcast", dst)
	}
	checkLease(t, offer, dhcpv4.MessageTypeOffer, disc.TransactionID)

	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Write(udpFrame(client, server, bcast, req.ToBytes())); err != nil {
		t.Fatal(err)
	}
	_, b = readUDP(t, n, dhcpServerPort)
	ack, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	checkLease(t, ack, dhcpv4.MessageTypeAck, req.TransactionID)
}

func checkLease(t *testing.T, m *dhcpv4.DHCPv4, typ dhcpv4.MessageType, xid dhcpv4.TransactionID) {
	t.Helper()
	if m.MessageType() != typ || m.TransactionID != xid {
		t.Fatalf("got %v xid %v, want %v xid %v", m.MessageType(), m.TransactionID, typ, xid)
	}
	mtu, _ := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, m.Options)
	for _, c := range []struct{ what, got, want string }{
		{"address", m.YourIPAddr.String(), GuestAddr},
		{"mask", net.IP(m.SubnetMask()).String(), "255.255.255.0"},
		{"router", fmt.Sprint(m.Router()), "[" + GatewayAddr + "]"},
		{"DNS", fmt.Sprint(m.DNS()), "[" + DNSAddr + "]"},
		{"server", m.ServerIdentifier().String(), GatewayAddr},
		{"lease", m.IPAddressLeaseTime(0).String(), leaseTime.String()},
		{"MTU", fmt.Sprint(mtu), fmt.Sprint(MTU)},
		{"client MAC", m.ClientHWAddr.String(), net.HardwareAddr(guestMAC).String()},
	} {
		if c.got != c.want {
			t.Errorf("%v: %s %s, want %s", typ, c.what, c.got, c.want)
		}
	}
}

func TestDHCPReply(t *testing.T) {
	mac := net.HardwareAddr(guestMAC)
	mk := func(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	reply := mk(dhcpv4.MessageTypeOffer)
	reply.OpCode = dhcpv4.OpcodeBootReply
	for _, c := range []struct {
		name string
		req  *dhcpv4.DHCPv4
		want dhcpv4.MessageType // MessageTypeNone: no answer
	}{
		{"discover", mk(dhcpv4.MessageTypeDiscover), dhcpv4.MessageTypeOffer},
		{"request", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(GuestAddr)))), dhcpv4.MessageTypeAck},
		{"request other address", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.2.16")))), dhcpv4.MessageTypeNak},
		{"renew", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.ParseIP(GuestAddr))), dhcpv4.MessageTypeAck},
		{"request to another server", mk(dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.2.9")))), dhcpv4.MessageTypeNone},
		{"release", mk(dhcpv4.MessageTypeRelease), dhcpv4.MessageTypeNone},
		{"decline", mk(dhcpv4.MessageTypeDecline), dhcpv4.MessageTypeNone},
		{"a reply", reply, dhcpv4.MessageTypeNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := dhcpReply(c.req)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.want == dhcpv4.MessageTypeNone && r != nil:
				t.Fatalf("answered %v, want no answer", r.MessageType())
			case c.want == dhcpv4.MessageTypeNone:
			case r == nil:
				t.Fatalf("no answer, want %v", c.want)
			case c.want == dhcpv4.MessageTypeNak:
				if r.MessageType() != c.want || !r.YourIPAddr.IsUnspecified() {
					t.Fatalf("%v offering %v, want a NAK offering nothing", r.MessageType(), r.YourIPAddr)
				}
			default:
				checkLease(t, r, c.want, c.req.TransactionID)
			}
		})
	}
}

// guest is a second netstack on the card's other side, playing the
// guest: 10.0.2.15 with the gateway as default route, as DHCP would set
// it up. Two goroutines move frames between it and the network.
type guest struct {
	s      *stack.Stack
	cancel context.CancelFunc
	done   chan struct{}

	large   atomic.Int64 // TSO segments received (guestLink.offload)
	sentTSO atomic.Int64 // and sent
	mu      sync.Mutex
	bad     error // the first virtio-net header the driver would reject
}

// guestLink says how the guest's side of the card behaves.
type guestLink struct {
	// pace, when not nil, is called before each frame the guest reads
	// from the network: a slow link.
	pace func()
	// offload has the guest take partial checksums and TSOv4, as
	// Linux's virtio-net driver does: the network is told so with
	// SetOffload, and the guest checks each frame's virtio-net header
	// and finishes partial checksums before its stack, which checks
	// every checksum, sees the frame. Its TCP also sends segments
	// larger than the MTU with partial checksums, as Linux's does with
	// HOST_TSO4 and CSUM.
	offload bool
}

func newGuest(t *testing.T, n *Network) *guest {
	t.Helper()
	return newLinkGuest(t, n, guestLink{})
}

// err returns the first bad header the guest saw.
func (g *guest) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.bad
}

// takeHeader checks a frame's virtio-net header as a driver that took
// link.offload would, and finishes a partial checksum in place.
func (g *guest) takeHeader(link guestLink, hdr, f []byte) error {
	if !link.offload {
		if !bytes.Equal(hdr, make([]byte, HeaderSize)) {
			return fmt.Errorf("virtio-net header % x without offloads", hdr)
		}
		return nil
	}
	flags, gsoType := hdr[vnethdr.OffFlags], hdr[vnethdr.OffGSOType]
	u16 := func(off int) int { return int(binary.LittleEndian.Uint16(hdr[off:])) }
	if flags == 0 && gsoType == 0 {
		return nil
	}
	eth := header.Ethernet(f)
	if flags != vnethdr.FNeedsCsum || eth.Type() != header.IPv4ProtocolNumber {
		return fmt.Errorf("header % x on a frame of type %#x", hdr, eth.Type())
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if ip.Protocol() != uint8(header.TCPProtocolNumber) {
		return fmt.Errorf("partial checksum on protocol %d", ip.Protocol())
	}
	l4 := header.EthernetMinimumSize + int(ip.HeaderLength())
	tcpLen := int(header.TCP(f[l4:]).DataOffset())
	if u16(vnethdr.OffCsumStart) != l4 || u16(vnethdr.OffCsumOffset) != header.TCPChecksumOffset || u16(vnethdr.OffHdrLen) != l4+tcpLen {
		return fmt.Errorf("header % x for a TCP header at %d of %d bytes", hdr, l4, tcpLen)
	}
	payload := len(f) - l4 - tcpLen
	switch gsoType {
	case 0:
		if len(f)-header.EthernetMinimumSize > MTU {
			return fmt.Errorf("%d-byte frame without GSO", len(f))
		}
	case vnethdr.GSOTCPv4:
		if mss := u16(vnethdr.OffGSOSize); mss == 0 || mss > MTU-40 || payload <= mss {
			return fmt.Errorf("gso_size %d for %d bytes of payload", mss, payload)
		}
		if int(ip.TotalLength()) != len(f)-header.EthernetMinimumSize {
			return fmt.Errorf("IPv4 length %d in a %d-byte frame", ip.TotalLength(), len(f))
		}
		g.large.Add(1)
	default:
		return fmt.Errorf("gso_type %d", gsoType)
	}
	binary.BigEndian.PutUint16(f[l4+header.TCPChecksumOffset:], ^checksum.Checksum(f[l4:], 0))
	return nil
}

// newLinkGuest is newGuest with the link link describes.
func newLinkGuest(t *testing.T, n *Network, link guestLink) *guest {
	t.Helper()
	pace := link.pace
	if link.offload {
		if err := n.SetOffload(vnethdr.TunCsum | vnethdr.TunTSO4); err != nil {
			t.Fatal(err)
		}
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	// The link's outbound queue drops what does not fit, where a
	// virtio-net driver's full TX ring makes the guest wait instead. It
	// is deep enough for a whole send window (gVisor's send buffer is
	// 1 MiB by default and at most 4 MiB, under 3,000 full frames), so
	// the guest's TCP does not run into losses and retransmission
	// timeouts a real guest never sees: with 256 frames, 4 MiB from the
	// guest took 15 s instead of 0.04 s.
	ch := channel.New(guestTxQueue, MTU, guestMAC)
	if link.offload {
		// The guest's TCP sends segments larger than the MTU with only
		// the pseudo-header summed, as Linux does with HOST_TSO4.
		ch.SupportedGSOKind = stack.HostGSOSupported
	}
	if err := s.CreateNIC(1, ethernet.New(ch)); err != nil {
		t.Fatal(err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4(guestIP.As4()).WithPrefix()}
	pa.AddressWithPrefix.PrefixLen = 24
	if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{10, 0, 2, 0}), tcpip.MaskFromBytes([]byte{255, 255, 255, 0}))
	s.SetRouteTable([]tcpip.Route{
		{Destination: sub, NIC: 1},
		{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(gatewayIP.As4()), NIC: 1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	g := &guest{s: s, cancel: cancel, done: make(chan struct{})}
	go func() { // guest to network
		for {
			pkt := ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			hdr := make([]byte, HeaderSize)
			if o := pkt.GSOOptions; o.Type != stack.GSONone && o.NeedsCsum {
				hdr[vnethdr.OffFlags] = vnethdr.FNeedsCsum
				binary.LittleEndian.PutUint16(hdr[vnethdr.OffCsumStart:], header.EthernetMinimumSize+o.L3HdrLen)
				binary.LittleEndian.PutUint16(hdr[vnethdr.OffCsumOffset:], o.CsumOffset)
				if pkt.Data().Size() > int(o.MSS) {
					hdr[vnethdr.OffGSOType] = vnethdr.GSOTCPv4
					binary.LittleEndian.PutUint16(hdr[vnethdr.OffGSOSize:], o.MSS)
					g.sentTSO.Add(1)
				}
			}
			v := pkt.ToView()
			pkt.DecRef()
			frame := append(hdr, v.AsSlice()...)
			v.Release()
			if _, err := n.Write(frame); err != nil {
				return
			}
		}
	}()
	go func() { // network to guest
		defer close(g.done)
		buf := make([]byte, 65536+HeaderSize)
		for {
			if pace != nil {
				pace()
			}
			m, err := n.Read(buf)
			if err != nil {
				return
			}
			if err := g.takeHeader(link, buf[:HeaderSize], buf[HeaderSize:m]); err != nil {
				g.mu.Lock()
				if g.bad == nil {
					g.bad = err
				}
				g.mu.Unlock()
				continue
			}
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(buf[HeaderSize:m])})
			ch.InjectInbound(0, pkt)
			pkt.DecRef()
		}
	}()
	t.Cleanup(func() {
		g.cancel()
		n.Close()
		<-g.done
		s.Destroy()
		if err := g.err(); err != nil {
			t.Errorf("the guest's driver would reject a frame: %v", err)
		}
	})
	return g
}

func (g *guest) dialTCP(ctx context.Context, addr string) (*gonet.TCPConn, error) {
	ap := netip.MustParseAddrPort(addr)
	return gonet.DialContextTCP(ctx, g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

func (g *guest) udp(t *testing.T, local, remote string) *gonet.UDPConn {
	t.Helper()
	full := func(s string) *tcpip.FullAddress {
		if s == "" {
			return nil
		}
		ap := netip.MustParseAddrPort(s)
		return &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
	}
	c, err := gonet.DialUDP(g.s, full(local), full(remote), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A guest reaches a server on the host's loopback through the gateway's
// address, and an HTTP download arrives whole.
func TestGuestToHostLoopback(t *testing.T) {
	body := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(body)
	want := sha256.Sum256(body)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
	go srv.Serve(l)
	defer srv.Close()

	n := newNetwork(t, Config{})
	g := newGuest(t, n)
	port := l.Addr().(*net.TCPAddr).Port
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return g.dialTCP(ctx, addr) },
	}, Timeout: testTimeout}
	resp, err := client.Get(fmt.Sprintf("http://%s:%d/", GatewayAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got != int64(len(body)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("downloaded %d bytes, sha256 %x; want %d bytes, %x", got, h.Sum(nil), len(body), want)
	}
	if s := n.Stats(); s.ToGuest == 0 || s.FromGuest == 0 {
		t.Errorf("stats %+v: no frames counted", s)
	}
}

// A port nobody listens on refuses the guest's connection at once.
func TestGuestConnectRefused(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("%s:%d", GatewayAddr, l.Addr().(*net.TCPAddr).Port)
	l.Close()
	n := newNetwork(t, Config{})
	g := newGuest(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := g.dialTCP(ctx, addr)
	if err == nil {
		c.Close()
		t.Fatal("connected to a closed port")
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// Beyond maxTCP connections forwarded at once the guest's next is
// refused (a reset), and a closed one frees its place; beyond maxUDP
// flows a new flow's datagrams are dropped.
func TestForwardLimits(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	pc := udpEcho(t, "")
	n := newNetwork(t, Config{})
	n.maxTCP, n.maxUDP = 1, 1
	g := newGuest(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	addr := fmt.Sprintf("%s:%d", GatewayAddr, l.Addr().(*net.TCPAddr).Port)
	first, err := g.dialTCP(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := g.dialTCP(ctx, addr); err == nil || !strings.Contains(err.Error(), "refused") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a second TCP connection with maxTCP 1: %v, want refused", err)
	}
	first.Close()
	for {
		c, err := g.dialTCP(ctx, addr)
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no TCP connection after the first closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	udpAddr := fmt.Sprintf("%s:%d", GatewayAddr, pc.LocalAddr().(*net.UDPAddr).Port)
	echo := func(c *gonet.UDPConn, wait time.Duration) error {
		c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := c.Read(make([]byte, 100))
		return err
	}
	if err := echo(g.udp(t, "", udpAddr), testTimeout); err != nil {
		t.Fatalf("the first UDP flow: %v", err)
	}
	if err := echo(g.udp(t, "", udpAddr), 300*time.Millisecond); err == nil {
		t.Fatal("a second UDP flow with maxUDP 1 was answered")
	}
	if got := n.udpFlows.Load(); got != 1 {
		t.Errorf("%d UDP flows counted, want 1", got)
	}
}

// udpEcho is a UDP server on the host's loopback that answers each
// datagram with prefix and the datagram, until the test ends.
func udpEcho(t *testing.T, prefix string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:m]...), from)
		}
	}()
	return pc
}

// UDP from the guest reaches a host socket and the answer comes back.
func TestGuestUDP(t *testing.T) {
	pc := udpEcho(t, "echo:")
	n := newNetwork(t, Config{})
	g := newGuest(t, n)
	c := g.udp(t, "", fmt.Sprintf("%s:%d", GatewayAddr, pc.LocalAddr().(*net.UDPAddr).Port))
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	m, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:m]); got != "echo:ping" {
		t.Fatalf("got %q, want echo:ping", got)
	}
}

// The DNS server at 10.0.2.3 answers from the resolver it was given.
func TestDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc("test.vmm.", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "test.vmm.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	n := newNetwork(t, Config{DNSUpstream: unmap(pc.LocalAddr().(*net.UDPAddr).AddrPort())})
	g := newGuest(t, n)
	c := g.udp(t, "", DNSAddr+":53")
	c.SetDeadline(time.Now().Add(testTimeout))
	q := new(dns.Msg)
	q.SetQuestion("test.vmm.", dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	m, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var a dns.Msg
	if err := a.Unpack(buf[:m]); err != nil {
		t.Fatal(err)
	}
	if len(a.Answer) != 1 || a.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answer %v, want test.vmm. A 192.0.2.7", a.Answer)
	}

	// The same over TCP: a two-byte length before each message (RFC
	// 1035 §4.2.2).
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tc, err := g.dialTCP(ctx, DNSAddr+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(testTimeout))
	dc := &dns.Conn{Conn: tc}
	if err := dc.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	ta, err := dc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if len(ta.Answer) != 1 || ta.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answer over TCP %v, want test.vmm. A 192.0.2.7", ta.Answer)
	}
}

// The DNS server keeps at most dnsMaxConns TCP connections: one more is
// closed at once, and those open still get answers. Which one is closed
// is the server's order of accepting, not the order of dialing: gVisor's
// listener completes handshakes with SYN cookies when its accept queue
// is full, and a connection whose last ACK it dropped reaches Accept only
// with its first data, later than ones dialed after it. So every
// connection sends a query, and exactly one must be closed.
func TestDNSTCPConnLimit(t *testing.T) {
	n := newNetwork(t, Config{})
	g := newGuest(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var conns []*gonet.TCPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range dnsMaxConns + 1 {
		c, err := g.dialTCP(ctx, DNSAddr+":53")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testTimeout))
		conns = append(conns, c)
	}
	// A query that needs no lookup: opcode STATUS gets NOTIMP.
	q := new(dns.Msg)
	q.SetQuestion("test.vmm.", dns.TypeA)
	q.Opcode = dns.OpcodeStatus
	dcs := make([]*dns.Conn, len(conns))
	for i, c := range conns {
		dcs[i] = &dns.Conn{Conn: c}
		// A write to the closed one may fail already: that is its
		// answer, read below.
		_ = dcs[i].WriteMsg(q)
	}
	answered, closed := 0, 0
	for i, dc := range dcs {
		// Closed at once: well before the server's idle time would
		// close it.
		conns[i].SetReadDeadline(time.Now().Add(dnsTCPIdle / 2))
		a, err := dc.ReadMsg()
		switch {
		case err == nil && a.Rcode == dns.RcodeNotImplemented:
			answered++
		case err != nil && !os.IsTimeout(err):
			closed++
		default:
			t.Fatalf("connection %d: answer %v, %v; want NOTIMP or the connection closed", i+1, a, err)
		}
	}
	if answered != dnsMaxConns || closed != 1 {
		t.Fatalf("%d connections answered, %d closed; want %d and 1", answered, closed, dnsMaxConns)
	}
}

// A hostfwd that asks for any free host port (0) is told which one it
// got, once; one that names its port is not repeated back.
func TestHostForwardAnyPortSaid(t *testing.T) {
	var mu sync.Mutex
	var said []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		said = append(said, fmt.Sprintf(format, args...))
	}
	var rules []Forward
	for _, s := range []string{"tcp:127.0.0.1:0-:22", "udp:127.0.0.1:0-:53"} {
		f, err := ParseForward(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, f)
	}
	n := newNetwork(t, Config{Forwards: rules, Logf: logf})
	addrs := n.HostAddrs()
	if len(addrs) != 2 || addrs[0].Port() == 0 || addrs[1].Port() == 0 {
		t.Fatalf("host addresses %v", addrs)
	}
	want := []string{
		"user network: hostfwd tcp:127.0.0.1:0-10.0.2.15:22: listening on " + addrs[0].String(),
		"user network: hostfwd udp:127.0.0.1:0-10.0.2.15:53: listening on " + addrs[1].String(),
	}
	mu.Lock()
	if !slices.Equal(said, want) {
		t.Errorf("said %q\nwant %q", said, want)
	}
	said = nil
	mu.Unlock()

	// A named port (bound here directly: binding a real one could
	// collide with another process's) is recorded and not said.
	fixed, err := ParseForward("tcp:127.0.0.1:2222-:22")
	if err != nil {
		t.Fatal(err)
	}
	quiet := &Network{logf: logf}
	quiet.bound(fixed, netip.MustParseAddrPort("127.0.0.1:2222"))
	if len(said) != 0 || !slices.Equal(quiet.HostAddrs(), []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:2222")}) {
		t.Errorf("a named port: said %q, recorded %v", said, quiet.HostAddrs())
	}
}

// A TCP and a UDP hostfwd reach servers in the guest; a second network
// cannot bind a port already taken.
func TestHostForward(t *testing.T) {
	tf, err := ParseForward("tcp:127.0.0.1:0-:8080")
	if err != nil {
		t.Fatal(err)
	}
	uf, err := ParseForward("udp:127.0.0.1:0-:5353")
	if err != nil {
		t.Fatal(err)
	}
	n := newNetwork(t, Config{Forwards: []Forward{tf, uf}})
	g := newGuest(t, n)
	addrs := n.HostAddrs()
	if len(addrs) != 2 || addrs[0].Port() == 0 || addrs[1].Port() == 0 || addrs[0].Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("host addresses %v", addrs)
	}

	l, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(guestIP.As4()), Port: 8080}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "hello from %s", c.RemoteAddr())
		c.Close()
	}()
	c, err := net.DialTimeout("tcp", addrs[0].String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	// slirp's hostfwd connections come from the gateway too.
	if got := string(b); !strings.HasPrefix(got, "hello from "+GatewayAddr+":") {
		t.Fatalf("tcp hostfwd: got %q", got)
	}

	gu := g.udp(t, GuestAddr+":5353", "")
	go func() {
		buf := make([]byte, 1500)
		m, from, err := gu.ReadFrom(buf)
		if err != nil {
			return
		}
		gu.WriteTo(append([]byte("guest:"), buf[:m]...), from)
	}()
	uc, err := net.Dial("udp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(testTimeout))
	if _, err := uc.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	m, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:m]) != "guest:hi" {
		t.Fatalf("udp hostfwd: got %q", buf[:m])
	}

	taken := tf
	taken.Host = addrs[0]
	if _, err := New(Config{Forwards: []Forward{taken}}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second network on port %v: %v, want address already in use", addrs[0], err)
	}
}

func TestReadWriteDeadlinesAndClose(t *testing.T) {
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := n.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	// A deadline in the past wakes a blocked Read, as Reset needs.
	n.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := n.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	n.SetReadDeadline(time.Unix(1, 0))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read woken by a past deadline: %v", err)
	}
	n.SetWriteDeadline(time.Unix(1, 0))
	frame := udpFrame(netip.MustParseAddrPort("10.0.2.15:1"), netip.MustParseAddrPort("10.0.2.2:1"), gatewayMAC(), nil)
	if _, err := n.Write(frame); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v", err)
	}
	n.SetWriteDeadline(time.Time{})
	if _, err := n.Write(frame[:HeaderSize+10]); err == nil {
		t.Fatal("a 10-byte frame was taken")
	}
	// Close wakes a blocked Read and fails later calls.
	n.SetReadDeadline(time.Time{})
	go func() { _, err := n.Read(buf); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	n.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read across Close: %v", err)
	}
	if _, err := n.Write(frame); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// A guest that never reads loses frames, and the stack is not held up.
func TestFullQueueDrops(t *testing.T) {
	n := newNetwork(t, Config{})
	client := netip.AddrPortFrom(netip.IPv4Unspecified(), dhcpClientPort)
	server := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpServerPort)
	disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC))
	frame := udpFrame(client, server, tcpip.LinkAddress(header.EthernetBroadcastAddress), disc.ToBytes())
	deadline := time.Now().Add(testTimeout)
	for n.Stats().Dropped == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no drop after %v: %+v", testTimeout, n.Stats())
		}
		if _, err := n.Write(frame); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	if s := n.Stats(); s.ToGuest < queueLen {
		t.Fatalf("%+v: dropped before the queue was full", s)
	}
}

// Close ends every goroutine the network started, with connections open
// both ways and a DNS lookup that never gets an answer in flight.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		// A host server that accepts and then never says anything.
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		// A resolver whose server never answers.
		silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		fwd, _ := ParseForward("tcp:127.0.0.1:0-:80")
		ufwd, _ := ParseForward("udp:127.0.0.1:0-:53")
		n, err := New(Config{Forwards: []Forward{fwd, ufwd}, DNSUpstream: unmap(silent.LocalAddr().(*net.UDPAddr).AddrPort()), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, n)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, err := g.dialTCP(ctx, fmt.Sprintf("%s:%d", GatewayAddr, l.Addr().(*net.TCPAddr).Port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, <-accepted)
		q := new(dns.Msg)
		q.SetQuestion("never.vmm.", dns.TypeA)
		b, _ := q.Pack()
		u := g.udp(t, "", DNSAddr+":53")
		u.Write(b)
		uc, err := net.Dial("udp", n.HostAddrs()[1].String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, uc)
		uc.Write([]byte("x"))
		time.Sleep(100 * time.Millisecond) // let the query and datagram arrive
		t0 := time.Now()
		n.Close()
		t.Logf("Close took %v", time.Since(t0))
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("Close took %v", d)
		}
		g.cancel()
		<-g.done
		g.s.Destroy()
	}()
	deadline := time.Now().Add(testTimeout)
	for {
		runtime.GC()
		now := runtime.NumGoroutine()
		if now <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, now, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOutside(t *testing.T) {
	for _, c := range []struct {
		addr string
		want string // "" refused
	}{
		{"10.0.2.2", "127.0.0.1:80"},
		{"93.184.216.34", "93.184.216.34:80"},
		{"192.168.1.1", "192.168.1.1:80"},
		{"10.0.2.3", ""},
		{"10.0.2.15", ""},
		{"10.0.2.255", ""},
		{"10.0.3.1", "10.0.3.1:80"},
		{"255.255.255.255", ""},
		{"224.0.0.251", ""},
		{"169.254.169.254", ""},
		{"100.100.100.200", ""},
		{"168.63.129.16", ""},
		{"100.64.0.1", "100.64.0.1:80"},
		{"127.0.0.1", ""},
		{"0.0.0.0", ""},
	} {
		a := netip.MustParseAddr(c.addr)
		got, ok := outside(tcpip.AddrFrom4(a.As4()), 80)
		if s := got.String(); (ok && s != c.want) || (!ok && c.want != "") {
			t.Errorf("outside(%s) = %v %v, want %q", c.addr, got, ok, c.want)
		}
	}
	if _, ok := outside(tcpip.AddrFrom4([4]byte{1, 2, 3, 4}), 0); ok {
		t.Error("port 0 allowed")
	}
}

// TryRead returns at once: nothing while no frame is queued, the queued
// frame (after a zero header) once the stack has answered, and the
// deadline's and Close's errors as Read does.
func TestTryRead(t *testing.T) {
	n := newNetwork(t, Config{})
	buf := make([]byte, 65536)
	if m, ok, err := n.TryRead(buf); m != 0 || ok || err != nil {
		t.Fatalf("TryRead with nothing queued = %d, %v, %v; want 0, false, nil", m, ok, err)
	}
	if _, _, err := n.TryRead(buf[:HeaderSize-1]); err == nil {
		t.Fatal("TryRead took a buffer shorter than the header")
	}
	client := netip.AddrPortFrom(netip.IPv4Unspecified(), dhcpClientPort)
	server := netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), dhcpServerPort)
	disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC))
	if _, err := n.Write(udpFrame(client, server, tcpip.LinkAddress(header.EthernetBroadcastAddress), disc.ToBytes())); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(time.Millisecond) {
		m, ok, err := n.TryRead(buf)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if m <= HeaderSize+header.EthernetMinimumSize || !bytes.Equal(buf[:HeaderSize], make([]byte, HeaderSize)) {
				t.Fatalf("TryRead = %d bytes, header % x", m, buf[:HeaderSize])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer to the DHCP discovery came through TryRead")
		}
	}
	n.SetReadDeadline(time.Unix(1, 0))
	if _, ok, err := n.TryRead(buf); ok || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TryRead past the deadline = %v, %v", ok, err)
	}
	n.SetReadDeadline(time.Time{})
	n.Close()
	if _, ok, err := n.TryRead(buf); ok || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryRead after Close = %v, %v", ok, err)
	}
}

// SetOffload takes partial checksums, and TSO only with them; the
// gateway offers the stack host GSO exactly when both checksums and
// TSOv4 are taken.
func TestSetOffload(t *testing.T) {
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, tc := range []struct {
		flags uint32
		ok    bool
		gso   bool
	}{
		{0, true, false},
		{vnethdr.TunCsum, true, false},
		{vnethdr.TunCsum | vnethdr.TunTSO6, true, false},
		{vnethdr.TunCsum | vnethdr.TunTSO4, true, true},
		{vnethdr.TunCsum | vnethdr.TunTSO4 | vnethdr.TunTSO6, true, true},
		{vnethdr.TunCsum | vnethdr.TunTSO4 | vnethdr.TunTSO6 | vnethdr.TunTSOECN, true, true},
		{vnethdr.TunTSO4, false, false},
		{vnethdr.TunTSOECN, false, false},
		{vnethdr.TunCsum | 0x10, false, false}, // TUN_F_UFO
		{vnethdr.TunCsum | 0x20, false, false}, // TUN_F_USO4
	} {
		n.SetOffload(0)
		err := n.SetOffload(tc.flags)
		if (err == nil) != tc.ok {
			t.Errorf("SetOffload(%#x) = %v, want ok %v", tc.flags, err, tc.ok)
		}
		if got := n.gw.SupportedGSO() == stack.HostGSOSupported; got != tc.gso {
			t.Errorf("after SetOffload(%#x): host GSO %v, want %v", tc.flags, got, tc.gso)
		}
	}
}

// tcpSegment builds a TCPv4 segment with payload bytes of data as the
// stack hands it to the gateway: Ethernet, IPv4 and TCP headers pushed,
// GSO options for a driver that takes offloads and only the
// pseudo-header summed.
func tcpSegment(t *testing.T, payload int) *stack.PacketBuffer {
	t.Helper()
	const hdrs = header.EthernetMinimumSize + header.IPv4MinimumSize + header.TCPMinimumSize
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i * 7)
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: hdrs, Payload: buffer.MakeWithData(data)})
	src, dst := tcpip.AddrFrom4(gatewayIP.As4()), tcpip.AddrFrom4(guestIP.As4())
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: 4000, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 1000})
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(header.TCPMinimumSize+payload)))
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(header.IPv4MinimumSize + header.TCPMinimumSize + payload), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{Type: header.IPv4ProtocolNumber, SrcAddr: gatewayMAC(), DstAddr: guestMAC})
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1000, L3HdrLen: header.IPv4MinimumSize}
	t.Cleanup(pkt.DecRef)
	return pkt
}

// Frames queued for one driver and read by another (a reset in between)
// are fitted to the reader: its offloads decide, not those at queueing.
func TestOffloadFittedAtRead(t *testing.T) {
	const all = vnethdr.TunCsum | vnethdr.TunTSO4
	for _, tc := range []struct {
		name         string
		payload      int
		queued, read uint32
		wantHdr      bool // the header describes the offload
		wantFrame    bool // false: dropped
		wantChecksum bool // the TCP checksum is whole
	}{
		{"small, offloads kept", 100, all, all, true, true, false},
		{"small, offloads withdrawn", 100, all, 0, false, true, true},
		{"large, offloads kept", 3000, all, all, true, true, false},
		{"large, TSO withdrawn", 3000, all, vnethdr.TunCsum, false, false, false},
		{"large, offloads withdrawn", 3000, all, 0, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNetwork(t, Config{})
			n.SetOffload(tc.queued)
			n.toGuest(tcpSegment(t, tc.payload))
			n.SetOffload(tc.read)
			buf := make([]byte, 65536)
			m, ok, err := n.TryRead(buf)
			if err != nil || ok != tc.wantFrame {
				t.Fatalf("TryRead = %d, %v, %v; want a frame %v", m, ok, err, tc.wantFrame)
			}
			if !ok {
				if s := n.Stats(); s.Dropped != 1 {
					t.Errorf("stats %+v, want one dropped", s)
				}
				return
			}
			hdr, f := buf[:HeaderSize], buf[HeaderSize:m]
			if got := hdr[vnethdr.OffFlags] == vnethdr.FNeedsCsum; got != tc.wantHdr {
				t.Errorf("header % x: NEEDS_CSUM %v, want %v", hdr, got, tc.wantHdr)
			}
			if !tc.wantHdr && !bytes.Equal(hdr, make([]byte, HeaderSize)) {
				t.Errorf("header % x, want zeros", hdr)
			}
			if tc.wantHdr && (tc.payload > 1000) != (hdr[vnethdr.OffGSOType] == vnethdr.GSOTCPv4) {
				t.Errorf("header % x: gso_type for a %d-byte payload", hdr, tc.payload)
			}
			ip := header.IPv4(f[header.EthernetMinimumSize:])
			tcp := header.TCP(ip.Payload())
			whole := tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(tcp.Payload(), 0), uint16(len(tcp.Payload())))
			if whole != tc.wantChecksum {
				t.Errorf("TCP checksum whole %v, want %v", whole, tc.wantChecksum)
			}
		})
	}
}

// A hostfwd's accept loop goes on after running out of descriptors or
// memory, and ends on anything else.
func TestAcceptAgain(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EINVAL)}, false},
		{net.ErrClosed, false},
	} {
		if got := acceptAgain(tc.err); got != tc.want {
			t.Errorf("acceptAgain(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// A reset on one side of a forwarded connection is a reset on the
// other, not a clean end: a download the server aborted must not look
// whole to the guest, nor an upload the guest aborted to the server.
func TestResetPassedOn(t *testing.T) {
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := newNetwork(t, Config{})
	g := newGuest(t, n)
	addr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(gatewayIP.As4()), Port: uint16(l.Addr().(*net.TCPAddr).Port)}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	// The host aborts after a few bytes, once the guest has them.
	abort := make(chan struct{})
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			return
		}
		c.Write([]byte("partial"))
		select {
		case <-abort:
		case <-ctx.Done():
		}
		c.SetLinger(0)
		c.Close()
	}()
	c, _, err := dialGuest(ctx, g.s, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len("partial"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "partial" {
		t.Fatalf("guest read %q, %v", got, err)
	}
	close(abort)
	rest, err := io.ReadAll(c)
	c.Close()
	if len(rest) != 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("guest read %q, %v after the host's reset; want a reset", rest, err)
	}

	// The guest aborts an upload the host has begun to read.
	done, begun := make(chan error, 1), make(chan struct{})
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.ReadFull(c, make([]byte, len("upload"))); err != nil {
			done <- err
			return
		}
		close(begun)
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	c, ep, err := dialGuest(ctx, g.s, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("upload")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-begun:
	case err := <-done:
		t.Fatalf("host read of the upload: %v", err)
	}
	ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
	c.Close()
	if err := <-done; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("host read after the guest's reset: %v, want ECONNRESET", err)
	}
}

// The helper caps its own heap: a guest's buffers cannot grow it into
// the host's memory.
func TestLimitMemory(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_DATA, &old); err != nil {
		t.Fatal(err)
	}
	oldGC := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		unix.Setrlimit(unix.RLIMIT_DATA, &old)
		debug.SetMemoryLimit(oldGC)
	})
	if err := limitMemory(); err != nil {
		t.Fatal(err)
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_DATA, &now); err != nil {
		t.Fatal(err)
	}
	if want := min(uint64(helperMemory), old.Max); now.Cur != want || now.Max != old.Max {
		t.Errorf("RLIMIT_DATA %d/%d, want %d/%d", now.Cur, now.Max, want, old.Max)
	}
	if got := debug.SetMemoryLimit(-1); got != helperGC {
		t.Errorf("memory limit %d, want %d", got, helperGC)
	}
}
