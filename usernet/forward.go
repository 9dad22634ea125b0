package usernet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

const (
	// maxDialing bounds the guest's TCP connections being dialed on
	// the host at once; SYNs beyond it are dropped (the guest resends).
	maxDialing = 64
	// dialTimeout bounds one dial, on either side. The guest's own
	// connect timeout is usually longer; this one frees the slot.
	dialTimeout = 30 * time.Second
	// udpIdle ends a UDP flow that carried nothing either way for this
	// long, as a NAT forgets it (RFC 4787 REQ-5: at least 2 minutes;
	// slirp uses 4).
	udpIdle = 2 * time.Minute
	// maxDatagram is the largest UDP payload (IPv4).
	maxDatagram = 65507
	// maxTCP bounds the TCP connections forwarded at once, either way,
	// and maxUDP the UDP flows: each holds a host descriptor, two
	// goroutines and their buffers, and each of the guest's UDP flows a
	// host port of its own, which a guest minting flows (a new source
	// port per datagram) would otherwise take from every process on
	// the host. Beyond them a TCP connection is refused (a reset) and a
	// flow's datagrams are dropped.
	maxTCP = 4096
	maxUDP = 1024
)

// metadataServices are cloud providers' instance metadata and control
// endpoints at global addresses, which the guest must not reach through
// the host (those at link-local addresses, 169.254.169.254 among them,
// are refused as link-local): Alibaba Cloud's metadata service and
// Azure's WireServer.
var metadataServices = [...]netip.Addr{
	netip.AddrFrom4([4]byte{100, 100, 100, 200}),
	netip.AddrFrom4([4]byte{168, 63, 129, 16}),
}

// slot takes one of max places that c counts, or says none is free.
func slot(c *atomic.Int32, max int32) bool {
	if c.Add(1) > max {
		c.Add(-1)
		return false
	}
	return true
}

// outside maps a destination the guest asked for to the host address to
// dial: the gateway stands for the host's loopback, and addresses that
// are no host's (broadcast, multicast, the virtual network's other
// addresses, link-local ones such as 169.254.169.254) and the cloud
// metadata services at global addresses (metadataServices) are refused.
// Everything else the host reaches, the guest reaches, as through
// QEMU's user network: the host's LAN and private networks included.
func outside(a tcpip.Address, port uint16) (netip.AddrPort, bool) {
	if a.Len() != 4 || port == 0 {
		return netip.AddrPort{}, false
	}
	ip := netip.AddrFrom4(a.As4())
	switch {
	case ip == gatewayIP:
		ip = hostLoopback
	case prefix.Contains(ip), !ip.IsGlobalUnicast(), slices.Contains(metadataServices[:], ip):
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, port), true
}

// forwardTCP serves a SYN from the guest that no endpoint of the stack
// wants: it dials the destination on the host and only then accepts the
// guest's connection, so a refused or unreachable destination is a reset
// to the guest, as it would be on a real network. Runs on a goroutine
// the stack starts.
func (n *Network) forwardTCP(r *tcp.ForwarderRequest) {
	if !n.enter() {
		r.Complete(true)
		return
	}
	defer n.wg.Done()
	id := r.ID()
	dst, ok := outside(id.LocalAddress, id.LocalPort)
	if !ok {
		r.Complete(true)
		return
	}
	if !slot(&n.tcpConns, n.maxTCP) {
		n.full("TCP connections", n.maxTCP)
		r.Complete(true)
		return
	}
	defer n.tcpConns.Add(-1)
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	conn, err := n.dial(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		r.Complete(true)
		return
	}
	c, ok := conn.(halfCloser)
	if !ok { // a dial that made no TCP connection: none of New's
		conn.Close()
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		c.Close()
		return
	}
	n.splice(gonet.NewTCPConn(&wq, ep), ep, c)
}

// halfCloser is a TCP connection on either side.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// splice copies a, the guest's side of a connection (ep its endpoint),
// to b, the host's, and b to a until both directions end, and closes
// both. It passes a clean end on as a half-close and a broken one (a
// reset, a failed write) as a reset both ways, as a NAT does, so that a
// download cut short by a reset is not taken for a whole one ended by
// the server's FIN. It runs on the caller's goroutine plus one; Close
// ends it by closing both connections.
func (n *Network) splice(a halfCloser, ep tcpip.Endpoint, b halfCloser) {
	if !n.track(a) {
		a.Close()
		b.Close()
		return
	}
	if !n.track(b) {
		n.untrack(a)
		b.Close()
		return
	}
	defer n.untrack(a)
	defer n.untrack(b)
	half := func(dst, src halfCloser) {
		if err := copyConn(dst, src, &n.largeBufs); err != nil {
			// A reset or a failed write: the other direction
			// cannot go on either. Linger 0 makes each close a
			// reset (RFC 9293 §3.10.7.1's abort). What the stack
			// still held for the guest goes with it: a server's
			// last bytes before its reset reach a guest that keeps
			// up, not one far behind (the stack does not say how
			// much it holds), where a FIN would have passed a cut
			// transfer off as whole.
			ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true})
			if tc, ok := b.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			a.Close()
			b.Close()
			return
		}
		dst.CloseWrite()
	}
	var other sync.WaitGroup
	other.Add(1)
	if !n.spawn(func() { defer other.Done(); half(a, b) }) {
		return
	}
	half(b, a)
	other.Wait()
}

// copyConn copies src to dst until src ends (nil) or either fails. The
// host side's reads and writes are raw system calls (package rawsys):
// the stack's side is all in this process, so the copy then makes no
// call through Go's scheduler, which would wake the runtime's monitor
// thread for every burst of a transfer. large lends the copy its larger
// buffer.
func copyConn(dst, src halfCloser, large *largeBuffers) error {
	var r io.Reader = src
	var w io.Writer = dst
	if c, ok := src.(*net.TCPConn); ok {
		if f, err := rawsys.NewConn(c, "host connection"); err == nil {
			r = f
		}
	}
	if c, ok := dst.(*net.TCPConn); ok {
		if f, err := rawsys.NewConn(c, "host connection"); err == nil {
			w = f
		}
	}
	return copyLoop(w, r, large)
}

// The copy's buffer: copySmall, and copyLarge from the first read that
// fills copySmall, for the rest of the connection. A source with more
// ready than the small buffer holds is a bulk transfer, and larger
// writes into the stack let its TCP sender build larger segments for the
// guest (it also merges writes that queue up, but less often): in
// TestBulkTCP's port forward with offloads, 64 MiB to the guest, pinned
// to one CPU, the stack sent the guest 2,550-2,610 frames with 32 KiB
// reads and 1,560-1,850 with 256 KiB (three runs each of two builds),
// a third fewer frames, each a wake-up of vmm-net, of vmm and of the
// guest. At most maxLarge copies hold a large buffer at once (4 MiB in
// all); the rest keep the small one, so however many connections once
// moved bulk data and now idle, their buffers stay bounded. (Going back to the small
// buffer after each short read instead caps the read after it at 32 KiB
// again; in the one make bench run of that version the port forward's
// guest halted as often as with 32 KiB reads.)
const (
	copySmall = 32 << 10
	copyLarge = 256 << 10
	maxLarge  = 16
)

// largeBuffers lends copyLarge buffers to at most maxLarge copies at a
// time, reusing returned ones.
type largeBuffers struct {
	pool sync.Pool // of *[]byte
	held atomic.Int32
}

// get lends a buffer, or returns nil when maxLarge are out.
func (l *largeBuffers) get() *[]byte {
	if l.held.Add(1) > maxLarge {
		l.held.Add(-1)
		return nil
	}
	if b, _ := l.pool.Get().(*[]byte); b != nil {
		return b
	}
	b := make([]byte, copyLarge)
	return &b
}

// put takes back a buffer get lent.
func (l *largeBuffers) put(b *[]byte) {
	l.pool.Put(b)
	l.held.Add(-1)
}

// copyLoop is io.Copy with the buffers above: neither side's ReadFrom or
// WriteTo, which would go round the raw calls.
func copyLoop(w io.Writer, r io.Reader, large *largeBuffers) error {
	buf := make([]byte, copySmall)
	var held *[]byte // the lent buffer, once buf is it
	defer func() {
		if held != nil {
			large.put(held)
		}
	}()
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if m != n {
				return io.ErrShortWrite
			}
			if held == nil && n == len(buf) {
				if held = large.get(); held != nil {
					buf = *held
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// forwardUDP serves the first datagram of a flow from the guest that no
// endpoint of the stack wants: it connects a host socket to the
// destination and relays both ways until the flow idles. It runs on the
// stack's receive path (the card's transmit worker), so it must not
// block: a UDP connect sends nothing.
func (n *Network) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst, ok := outside(id.LocalAddress, id.LocalPort)
	if !ok {
		return
	}
	if !slot(&n.udpFlows, n.maxUDP) {
		n.full("UDP flows", n.maxUDP)
		return
	}
	// The flow's slot is free again when both relays have ended.
	var ended atomic.Int32
	end := func() {
		if ended.Add(1) == 2 {
			n.udpFlows.Add(-1)
		}
	}
	// A UDP connect sends nothing, so this returns at once; n.ctx
	// only ends it when Close races it.
	out, err := n.dial(n.ctx, "udp", dst.String())
	if err != nil {
		n.udpFlows.Add(-1)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		out.Close()
		n.udpFlows.Add(-1)
		return
	}
	in := gonet.NewUDPConn(&wq, ep)
	if !n.track(in) {
		in.Close()
		out.Close()
		n.udpFlows.Add(-1)
		return
	}
	if !n.track(out) {
		n.untrack(in)
		out.Close()
		n.udpFlows.Add(-1)
		return
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	relay := func(dst io.Writer, src deadlineReader) {
		// The first direction to end ends the other.
		defer end()
		defer n.untrack(in)
		defer n.untrack(out)
		relayUDP(dst, src, &last)
	}
	if !n.spawn(func() { relay(out, in) }) {
		n.untrack(in)
		n.untrack(out)
		n.udpFlows.Add(-1)
		return
	}
	if !n.spawn(func() { relay(in, out) }) {
		end()
	}
}

// deadlineReader is the receiving end of a UDP relay.
type deadlineReader interface {
	Read(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// relayUDP copies datagrams from src to dst until src fails or the flow,
// whose last datagram either way was at *last, has idled for udpIdle.
func relayUDP(dst io.Writer, src deadlineReader, last *atomic.Int64) {
	buf := make([]byte, maxDatagram)
	for {
		idle := time.Unix(0, last.Load()).Add(udpIdle)
		src.SetReadDeadline(idle)
		m, err := src.Read(buf)
		if isTimeout(err) {
			if time.Unix(0, last.Load()).Add(udpIdle).After(time.Now()) {
				continue // the other direction kept the flow alive
			}
			return
		}
		if isRefused(err) {
			continue
		}
		if err != nil {
			return
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:m]); err != nil && !isRefused(err) {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isRefused is a host's ICMP port unreachable for an earlier datagram,
// reported on a later read or write of a connected UDP socket; it says
// nothing about the next datagram.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// bound records the host address f's socket got, and says which port
// it is when f asked for any free one (host port 0): the port is of no
// use until someone knows it, and a CI runner starting many guests at
// once picks port 0 so that no two collide. QEMU's slirp takes such a
// port too but tells only its monitor.
func (n *Network) bound(f Forward, at netip.AddrPort) {
	n.hostAddrs = append(n.hostAddrs, at)
	if f.Host.Port() == 0 {
		n.logf("user network: hostfwd %s: listening on %s", f, at)
	}
}

// listen binds f's host socket and serves it until Close.
func (n *Network) listen(f Forward) error {
	guest := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(f.Guest.Addr().As4()), Port: f.Guest.Port()}
	if f.UDP {
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(f.Host))
		if err != nil {
			return err
		}
		if !n.track(pc) {
			pc.Close()
			return net.ErrClosed
		}
		n.bound(f, unmap(pc.LocalAddr().(*net.UDPAddr).AddrPort()))
		n.spawn(func() { n.serveUDPForward(pc, guest) })
		return nil
	}
	l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(f.Host))
	if err != nil {
		return err
	}
	if !n.track(l) {
		l.Close()
		return net.ErrClosed
	}
	n.bound(f, unmap(l.Addr().(*net.TCPAddr).AddrPort()))
	n.spawn(func() {
		var pause time.Duration
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if !acceptAgain(err) {
					n.logf("user network: hostfwd %s: %v", f, err)
					return
				}
				// Out of descriptors or memory for now: the
				// forward stays, and takes connections again once
				// some are closed.
				if pause == 0 {
					n.logf("user network: hostfwd %s: %v; retrying", f, err)
				}
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(pause):
				case <-n.ctx.Done():
					return
				}
				continue
			}
			pause = 0
			if !n.spawn(func() { n.forwardIn(c, guest) }) {
				c.Close()
				return
			}
		}
	})
	return nil
}

// acceptAgain says whether accept's err passes, as net/http's server
// takes it: the process or the system out of descriptors or memory, or
// a connection reset before it was accepted.
func acceptAgain(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// full says once per network that a limit refused a connection or flow.
func (n *Network) full(what string, limit int32) {
	if n.fullSaid.CompareAndSwap(false, true) {
		n.logf("user network: %d %s open, the most vmm forwards at once; refusing more", limit, what)
	}
}

// forwardIn connects a host connection accepted by a TCP hostfwd to the
// guest. A guest that does not listen refuses it: the host side is
// closed at once.
func (n *Network) forwardIn(c *net.TCPConn, guest tcpip.FullAddress) {
	if !slot(&n.tcpConns, n.maxTCP) {
		n.full("TCP connections", n.maxTCP)
		c.Close()
		return
	}
	defer n.tcpConns.Add(-1)
	// Close cancels the dial.
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	g, ep, err := dialGuest(ctx, n.stack, guest)
	cancel()
	if err != nil {
		c.Close()
		return
	}
	n.splice(g, ep, c)
}

// dialGuest connects to the guest's addr, as gonet.DialContextTCP does,
// and returns the endpoint too, which splice resets through.
func dialGuest(ctx context.Context, s *stack.Stack, addr tcpip.FullAddress) (*gonet.TCPConn, tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, nil, errors.New(terr.String())
	}
	// Connect only starts: the endpoint says when it is done.
	entry, connected := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(addr)
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, nil, ctx.Err()
		case <-connected:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, nil, errors.New(terr.String())
	}
	return gonet.NewTCPConn(&wq, ep), ep, nil
}

// serveUDPForward relays a UDP hostfwd: each host peer gets its own flow
// to the guest (its own source port in the guest's view), which ends
// after udpIdle without traffic.
func (n *Network) serveUDPForward(pc *net.UDPConn, guest tcpip.FullAddress) {
	type flow struct {
		c    *gonet.UDPConn
		last atomic.Int64
	}
	var mu sync.Mutex
	flows := make(map[netip.AddrPort]*flow)
	buf := make([]byte, maxDatagram)
	for {
		m, peer, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				n.logf("user network: udp hostfwd on %s: %v", pc.LocalAddr(), err)
			}
			return
		}
		mu.Lock()
		f := flows[peer]
		mu.Unlock()
		if f == nil {
			if !slot(&n.udpFlows, n.maxUDP) {
				n.full("UDP flows", n.maxUDP)
				continue
			}
			c, err := gonet.DialUDP(n.stack, nil, &guest, ipv4.ProtocolNumber)
			if err != nil {
				n.udpFlows.Add(-1)
				continue
			}
			if !n.track(c) {
				c.Close()
				n.udpFlows.Add(-1)
				return
			}
			f = &flow{c: c}
			f.last.Store(time.Now().UnixNano())
			mu.Lock()
			flows[peer] = f
			mu.Unlock()
			back := func() {
				defer func() {
					mu.Lock()
					delete(flows, peer)
					mu.Unlock()
					n.untrack(c)
					n.udpFlows.Add(-1)
				}()
				relayUDP(peerWriter{pc, peer}, c, &f.last)
			}
			if !n.spawn(back) {
				n.untrack(c)
				n.udpFlows.Add(-1)
				return
			}
		}
		f.last.Store(time.Now().UnixNano())
		f.c.Write(buf[:m])
	}
}

// peerWriter is a host UDP socket's Write to one peer, for relayUDP.
type peerWriter struct {
	pc   *net.UDPConn
	peer netip.AddrPort
}

func (w peerWriter) Write(p []byte) (int, error) { return w.pc.WriteToUDPAddrPort(p, w.peer) }

// unmap turns the IPv4-mapped IPv6 form package net reports into IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
