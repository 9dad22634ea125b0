// Package usernet is a user-mode network for one virtio-net card: a
// userspace TCP/IP stack that gives the guest an address by
// DHCP, answers DNS from the host's resolver, carries the guest's TCP and
// UDP through ordinary host sockets and forwards host ports into the
// guest. It needs no privilege: no TAP, no CAP_NET_ADMIN, no root.
//
// The stack is gVisor's netstack, with a link endpoint (link.go) and a
// DNS server (dns.go, on golang.org/x/net/dns/dnsmessage) of this package's own. It assembles
// the stack itself, as gvisor-tap-vsock (the network of podman machine
// and lima) does, and owns every goroutine it starts; Close ends them
// all, since vmm builds and closes many machines in one process.
//
// Addresses are QEMU's slirp ones, which is what users of "-nic user"
// expect: the network is 10.0.2.0/24, the guest gets 10.0.2.15, the
// gateway is 10.0.2.2, which also stands for the host's loopback (a
// connection to 10.0.2.2:8080 reaches 127.0.0.1:8080 on the host), and
// the DNS server is 10.0.2.3.
//
// It runs in the vmm-net helper (HelperMain), not in vmm, which reaches
// it through package usernet/remote: see there for why.
//
// A Network is itself the card's backend (it satisfies virtio/net's
// Backend): Write takes a frame the guest sent and hands it to the stack
// on the caller's goroutine; frames the stack sends wait in a bounded
// queue until Read takes them, and are dropped when the queue is full, as
// a TAP drops when its queue is.
//
// The card offers the guest checksum and segmentation offloads both
// ways, as for a TAP. Once the driver accepts partial checksums and
// TSOv4 (SetOffload), TCP connections the stack opens or accepts from
// then on send the guest segments of up to 64 KiB with only the
// pseudo-header summed, as a host kernel sends them through a TAP
// (gVisor's "host GSO"), and Read describes them in the virtio-net
// header: one frame and one pass through the stack where 45 full-size
// frames were. The other way, the stack takes the guest's TSO frames
// and partial checksums as they come: it accepts a TCP segment larger
// than the MTU, and does not check checksums (the gateway endpoint
// declares them checked, see gateway.Capabilities), which matters
// nowhere since every connection ends in the stack and its payload goes
// on through a host socket.
package usernet

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vmm-dev/vmm/usernet/hostfwd"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The virtual network's addresses, as QEMU's slirp assigns them (QEMU's
// documentation, "Network emulation", user mode networking).
// They are package hostfwd's, which vmm reads without linking the stack.
const (
	// NetworkCIDR is the guest's network.
	NetworkCIDR = hostfwd.NetworkCIDR
	// GatewayAddr is the guest's router, and the host's loopback.
	GatewayAddr = hostfwd.GatewayAddr
	// DNSAddr answers DNS queries from the host's resolver.
	DNSAddr = hostfwd.DNSAddr
	// GuestAddr is the one address the DHCP server hands out.
	GuestAddr = hostfwd.GuestAddr
	// HostLoopbackAddr is where connections to GatewayAddr go on the
	// host.
	HostLoopbackAddr = "127.0.0.1"
)

// Parsed forms of the addresses above; never written.
var (
	prefix       = netip.MustParsePrefix(NetworkCIDR)
	gatewayIP    = netip.MustParseAddr(GatewayAddr)
	dnsIP        = netip.MustParseAddr(DNSAddr)
	guestIP      = netip.MustParseAddr(GuestAddr)
	hostLoopback = netip.MustParseAddr(HostLoopbackAddr)
)

// gatewayMAC is the gateway's (and the DNS server's) Ethernet address:
// slirp's, 52:55 followed by the gateway's IPv4 address.
func gatewayMAC() tcpip.LinkAddress {
	return tcpip.LinkAddress([]byte{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02})
}

// MTU is the link's MTU, also announced by DHCP (RFC 2132 §5.1, option
// 26): Ethernet's, as slirp's.
const MTU = 1500

// nicID is the stack's only NIC.
const nicID tcpip.NICID = 1

// queueLen and queueBytes bound the frames the stack has sent and the
// guest has not yet read: 2048 frames (about 3 MiB of full-size ones)
// and 4 MiB in all, whichever comes first, so that 64 KiB segments do
// not let the queue grow to 128 MiB. More are dropped, as by a TAP
// whose queue is full; the stack's TCP recovers them (with SACK).
const (
	queueLen   = 2048
	queueBytes = 4 << 20
)

// Config is one network's setup.
type Config struct {
	// Forwards are the host ports forwarded into the guest (QEMU's
	// hostfwd). Their host sockets are bound by New, so a port in use
	// is New's error.
	Forwards []Forward
	// DNSUpstream, if valid, is the one name server the guest's DNS
	// queries are resolved through; the zero value means the host's
	// resolver configuration (/etc/resolv.conf, /etc/hosts), read as Go's
	// resolver reads it.
	DNSUpstream netip.AddrPort
	// Logf reports trouble that does not stop the network (a forward
	// that failed to dial the guest); nil means log.Printf.
	Logf func(format string, args ...any)
}

// Stats count frames since New.
type Stats struct {
	// ToGuest counts frames the stack sent; Dropped those of them that
	// found the queue full.
	ToGuest, Dropped uint64
	// FromGuest counts frames the guest sent.
	FromGuest uint64
}

// Network is one user-mode network with one guest on it. Create it with
// New; it is the guest's card backend until Close.
type Network struct {
	cfg    Config
	logf   func(format string, args ...any)
	stack  *stack.Stack
	gw     *gateway
	ctx    context.Context // canceled by Close: aborts dials and lookups
	cancel context.CancelFunc

	frames chan frame    // the stack's frames for Read (toGuest)
	queued atomic.Int64  // bytes in frames
	done   chan struct{} // closed by Close: wakes Read
	rdl    deadline
	wdl    deadline

	// wmu is held shared by Write while it feeds the stack and
	// exclusively by Close, so no frame enters a stack being torn down.
	wmu sync.RWMutex

	mu      sync.Mutex // guards closed, closers and wg.Add
	closed  bool
	closers map[io.Closer]struct{}
	wg      sync.WaitGroup

	sent, dropped, received atomic.Uint64

	// offload is the TUN_F_* flags SetOffload last accepted: what the
	// driver takes in frames Read returns.
	offload atomic.Uint32

	hostAddrs []netip.AddrPort // bound host side of each forward

	// largeBufs lends the copies between guest and host connections
	// their larger buffers (copyLoop).
	largeBufs largeBuffers

	// tcpConns and udpFlows count what is forwarded, up to maxTCP and
	// maxUDP (fields, which tests lower); fullSaid is whether a limit
	// was logged.
	tcpConns, udpFlows atomic.Int32
	maxTCP, maxUDP     int32
	fullSaid           atomic.Bool

	// dial makes every host connection the guest asks for (TCP and
	// UDP to outside addresses, DNS upstream): a net.Dialer's, except
	// in the fuzz test, which must not reach the host's ports.
	dial dialFunc
}

// dialFunc is net.Dialer's DialContext.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// New builds the network and binds the host ports of cfg.Forwards.
func New(cfg Config) (*Network, error) {
	var d net.Dialer
	return newWithDial(cfg, d.DialContext)
}

// newWithDial is New with the dial for the guest's host connections.
func newWithDial(cfg Config, dial dialFunc) (*Network, error) {
	n := &Network{
		maxTCP:  maxTCP,
		maxUDP:  maxUDP,
		dial:    dial,
		cfg:     cfg,
		logf:    cfg.Logf,
		frames:  make(chan frame, queueLen),
		done:    make(chan struct{}),
		closers: make(map[io.Closer]struct{}),
	}
	if n.logf == nil {
		n.logf = log.Printf
	}
	n.rdl.init()
	n.wdl.init()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.build(); err != nil {
		n.Close()
		return nil, fmt.Errorf("user network: %w", err)
	}
	for _, f := range cfg.Forwards {
		if err := n.listen(f); err != nil {
			n.Close()
			return nil, fmt.Errorf("user network: hostfwd %s: %w", f, err)
		}
	}
	return n, nil
}

// build creates the stack with the gateway's addresses, the services on
// them and the forwarders for everything else.
func (n *Network) build() error {
	n.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	// SACK lets TCP to the guest recover quickly from frames dropped
	// on a full queue.
	sack := tcpip.TCPSACKEnabled(true)
	if err := n.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("enable SACK: %s", err)
	}
	n.gw = &gateway{n: n, mac: gatewayMAC()}
	if err := n.stack.CreateNIC(nicID, n.gw); err != nil {
		return fmt.Errorf("create NIC: %s", err)
	}
	// The gateway's address first: it is the NIC's primary one, the
	// source of connections the stack opens to the guest (hostfwd).
	for _, a := range []netip.Addr{gatewayIP, dnsIP} {
		pa := tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddrFrom4(a.As4()).WithPrefix(),
		}
		pa.AddressWithPrefix.PrefixLen = prefix.Bits()
		if err := n.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("add address %s: %s", a, err)
		}
	}
	// Spoofing and promiscuous mode let the stack take packets for any
	// address (the guest's connections to the world) and answer from
	// it.
	if err := n.stack.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("spoofing: %s", err)
	}
	if err := n.stack.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("promiscuous mode: %s", err)
	}
	sub, err := tcpip.NewSubnet(tcpip.AddrFrom4(prefix.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(prefix.Bits(), 32)))
	if err != nil {
		return fmt.Errorf("subnet: %w", err)
	}
	n.stack.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nicID}})

	// Packets no endpoint of the stack wants are new connections or
	// flows to the outside.
	n.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(n.stack, 0, maxDialing, n.forwardTCP).HandlePacket)
	n.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(n.stack, n.forwardUDP).HandlePacket)

	if err := n.serveDHCP(); err != nil {
		return err
	}
	return n.serveDNS()
}

// serveDNS starts the DNS server (dns.go) on DNSIP:53, UDP and TCP. It
// answers from the host's resolver, through lookups that Close cancels.
func (n *Network) serveDNS() error {
	addr := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(dnsIP.As4()), Port: 53}
	uc, err := gonet.DialUDP(n.stack, &addr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("DNS server: %w", err)
	}
	if !n.track(uc) {
		return net.ErrClosed
	}
	tl, err := gonet.ListenTCP(n.stack, addr, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("DNS server: %w", err)
	}
	if !n.track(tl) {
		return net.ErrClosed
	}
	h := dnsHandler{ctx: n.ctx, lookup: &net.Resolver{PreferGo: true, Dial: n.dialDNS}, slots: make(chan struct{}, dnsMaxLookups)}
	// Both loops return once Close has closed their socket.
	n.spawn(func() { h.serveUDP(uc, n.spawn) })
	n.spawn(func() { n.acceptDNS(tl, h) })
	return nil
}

// acceptDNS serves each TCP connection l accepts on a goroutine of its
// own, at most dnsMaxConns at once: one more is closed at once. It
// returns once Close has closed l.
func (n *Network) acceptDNS(l net.Listener, h dnsHandler) {
	conns := make(chan struct{}, dnsMaxConns)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		select {
		case conns <- struct{}{}:
		default:
			c.Close()
			continue
		}
		if !n.track(c) {
			c.Close()
			return
		}
		if !n.spawn(func() {
			defer func() { <-conns }()
			defer n.untrack(c)
			h.serveTCP(c)
		}) {
			n.untrack(c)
			return
		}
	}
}

// HostAddrs are the host addresses the forwards listen on, in
// Config.Forwards order: a port 0 there is the port the kernel chose.
func (n *Network) HostAddrs() []netip.AddrPort { return n.hostAddrs }

// Stats returns the frame counters.
func (n *Network) Stats() Stats {
	return Stats{ToGuest: n.sent.Load(), Dropped: n.dropped.Load(), FromGuest: n.received.Load()}
}

// spawn runs f on a goroutine Close waits for, unless the network is
// closed.
func (n *Network) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// enter counts a goroutine the stack started (a forwarder's) as one
// Close waits for; false means the network is closing and the goroutine
// must return at once. A true enter is paired with n.wg.Done.
func (n *Network) enter() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

// track registers c to be closed by Close; false means the network is
// closing, and the caller closes c itself.
func (n *Network) track(c io.Closer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.closers[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (n *Network) untrack(c io.Closer) {
	n.mu.Lock()
	delete(n.closers, c)
	n.mu.Unlock()
	c.Close()
}

// Close stops the network: host sockets (forwards and connections) are
// closed, pending dials and DNS lookups canceled, and every goroutine of
// the network has returned when Close does. Read and Write fail after
// it. Calling Close again does nothing.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()

	n.cancel()
	close(n.done)
	n.wmu.Lock() // no Write is in the stack past this point
	for c := range closers {
		c.Close()
	}
	if n.stack != nil {
		// Aborting every endpoint wakes the goroutines blocked on the
		// stack's side of a connection.
		n.stack.Close()
	}
	n.wg.Wait()
	if n.stack != nil {
		n.stack.Wait()
	}
	n.wmu.Unlock()
	for {
		select {
		case f := <-n.frames:
			n.queued.Add(-int64(f.v.Size()))
			f.v.Release()
		default:
			return nil
		}
	}
}

// dialDNS is the upstream resolver's dial: to Config.DNSUpstream when
// set, else to the name server Go's resolver picked from the host's
// configuration. The connection is closed when ctx ends, so a lookup
// that Close cancels does not wait out its timeout on a read.
func (n *Network) dialDNS(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.cfg.DNSUpstream.IsValid() {
		addr = n.cfg.DNSUpstream.String()
	}
	c, err := n.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { c.Close() })
	return c, nil
}
