package usernet

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vmm-dev/vmm/usernet/vnethdr"
)

// ipv4Frame builds an Ethernet frame from the guest to the gateway's MAC
// with an IPv4 packet of protocol proto around l4, behind hdr as the
// virtio-net header.
func ipv4Frame(hdr [HeaderSize]byte, dstMAC tcpip.LinkAddress, proto tcpip.TransportProtocolNumber, src, dst netip.Addr, l4 []byte) []byte {
	b := make([]byte, HeaderSize+header.EthernetMinimumSize+header.IPv4MinimumSize+len(l4))
	copy(b, hdr[:])
	f := b[HeaderSize:]
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: dstMAC, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(ip)),
		TTL:         64,
		Protocol:    uint8(proto),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(ip[header.IPv4MinimumSize:], l4)
	return b
}

// tcpSeg is a TCP header with flags from the guest's port 40000 to
// port, before payload; its checksum is left for the stack to ignore
// (it takes the guest's checksums as checked, see Write).
func tcpSeg(port uint16, flags header.TCPFlags, payload int) []byte {
	t := make([]byte, header.TCPMinimumSize+payload)
	header.TCP(t).Encode(&header.TCPFields{SrcPort: 40000, DstPort: port, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	return t
}

// fuzzSeed is a frame a guest sends, behind its virtio-net header, and
// what the network does with it: the host connection it asks for ("" for
// none) and whether it answers the guest.
type fuzzSeed struct {
	name  string
	frame []byte
	dial  string
	reply bool
}

// fuzzSeeds are what a driver starts with (ARP, DHCP, DNS), connections
// the network must dial or refuse, a TSO segment, and frames cut short.
func fuzzSeeds(t testing.TB) []fuzzSeed {
	var zero [HeaderSize]byte
	gwMAC := gatewayMAC()
	any4 := netip.IPv4Unspecified()
	arp := make([]byte, HeaderSize+header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(arp[HeaderSize:]).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: header.EthernetBroadcastAddress, Type: header.ARPProtocolNumber})
	a := header.ARP(arp[HeaderSize+header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), guestMAC)
	copy(a.ProtocolAddressSender(), guestIP.AsSlice())
	copy(a.ProtocolAddressTarget(), gatewayIP.AsSlice())

	discover, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC))
	if err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("example.com.", dns.TypeA)
	query, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}

	var tso [HeaderSize]byte
	tso[vnethdr.OffFlags] = vnethdr.FNeedsCsum
	tso[vnethdr.OffGSOType] = vnethdr.GSOTCPv4
	binary.LittleEndian.PutUint16(tso[vnethdr.OffCsumStart:], header.EthernetMinimumSize+header.IPv4MinimumSize)
	binary.LittleEndian.PutUint16(tso[vnethdr.OffCsumOffset:], header.TCPChecksumOffset)
	binary.LittleEndian.PutUint16(tso[vnethdr.OffGSOSize:], MTU-40)

	icmp := make([]byte, header.ICMPv4MinimumSize+8)
	header.ICMPv4(icmp).SetType(header.ICMPv4Echo)
	header.ICMPv4(icmp).SetChecksum(header.ICMPv4Checksum(icmp, 0))

	syn := func(dst string, port uint16) []byte {
		return ipv4Frame(zero, gwMAC, header.TCPProtocolNumber, guestIP, netip.MustParseAddr(dst), tcpSeg(port, header.TCPFlagSyn, 0))
	}
	ack := ipv4Frame(zero, gwMAC, header.TCPProtocolNumber, guestIP, gatewayIP, tcpSeg(8080, header.TCPFlagAck, 16))
	tsoSize := 3 * (MTU - 40)
	return []fuzzSeed{
		{"arp", arp, "", true},
		{"dhcp", udpFrame(netip.AddrPortFrom(any4, 68), netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), 67), header.EthernetBroadcastAddress, discover.ToBytes()), "", true},
		{"dns", udpFrame(netip.AddrPortFrom(guestIP, 5353), netip.AddrPortFrom(dnsIP, 53), gwMAC, query), "udp " + fuzzDNS.String(), true},
		{"syn to the host", syn(GatewayAddr, 8080), "tcp 127.0.0.1:8080", true},
		{"syn outside", syn("192.0.2.1", 80), "tcp 192.0.2.1:80", true},
		{"syn to link-local", syn("169.254.169.254", 80), "", true},
		{"syn on the network", syn("10.0.2.77", 22), "", true}, // a reset
		{"ack of TSO's size", ipv4Frame(zero, gwMAC, header.TCPProtocolNumber, guestIP, gatewayIP, tcpSeg(8080, header.TCPFlagAck, tsoSize)), "", true},
		{"TSO", ipv4Frame(tso, gwMAC, header.TCPProtocolNumber, guestIP, gatewayIP, tcpSeg(8080, header.TCPFlagAck|header.TCPFlagPsh, tsoSize)), "", true},
		{"udp outside", udpFrame(netip.AddrPortFrom(guestIP, 40001), netip.MustParseAddrPort("192.0.2.1:9"), gwMAC, []byte("x")), "udp 192.0.2.1:9", false},
		{"icmp echo", ipv4Frame(zero, gwMAC, header.ICMPv4ProtocolNumber, guestIP, gatewayIP, icmp), "", true},
		// The stack would answer for any address: ping must not pass
		// where nothing was reached.
		{"icmp echo outside", ipv4Frame(zero, gwMAC, header.ICMPv4ProtocolNumber, guestIP, netip.MustParseAddr("192.0.2.77"), icmp), "", false},
		{"syn to a metadata service", syn("100.100.100.200", 80), "", true}, // a reset
		{"another MAC", ipv4Frame(zero, tcpip.LinkAddress("\x52\x54\x00\x00\x00\x09"), header.ICMPv4ProtocolNumber, guestIP, gatewayIP, icmp), "", false},
		{"IPv4 length beyond the frame", ack[:len(ack)-20], "", false},
		{"short ARP", arp[:HeaderSize+header.EthernetMinimumSize+4], "", false},
		{"header only", zero[:], "", false},
		{"empty", nil, "", false},
	}
}

// fuzzDNS is the DNS upstream of refusingNetwork, in TEST-NET-1 (RFC
// 5737).
var fuzzDNS = netip.MustParseAddrPort("192.0.2.53:53")

// refusingNetwork is a network whose host dials all fail with
// ECONNREFUSED, each one named on dialed first ("tcp 127.0.0.1:8080").
func refusingNetwork(t testing.TB, dialed chan<- string) *Network {
	n, err := newWithDial(Config{DNSUpstream: fuzzDNS, Logf: func(string, ...any) {}}, func(_ context.Context, network, addr string) (net.Conn, error) {
		dialed <- network + " " + addr
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// The fuzz target's seeds reach what they are for: each asks for the
// host connection it should and is answered as it should, so the fuzzer
// starts from frames that go deep into the stack and the forwarders.
//
// Replies and dials come on the stack's goroutines, some after Write
// returns (a DNS answer, a forwarder's dial), so each seed waits up to
// seedWait for what it expects, and silence is judged after a quiet
// spell; the queue is drained before each seed. The resolver may dial
// its upstream again after it answered: those dials are no other seed's.
func TestFuzzSeeds(t *testing.T) {
	const (
		seedWait = 5 * time.Second
		quiet    = 250 * time.Millisecond
	)
	dialed := make(chan string, 64)
	n := refusingNetwork(t, dialed)
	buf := make([]byte, HeaderSize+gsoMaxSize+header.EthernetMinimumSize)
	dnsDial := "udp " + fuzzDNS.String()
	// reply reads frames until one that answers the guest (not one of
	// the gateway's own ARP requests, which check now and then that
	// the guest is still there) or until the deadline.
	reply := func(wait time.Duration) bool {
		n.SetReadDeadline(time.Now().Add(wait))
		defer n.SetReadDeadline(time.Time{})
		for {
			m, err := n.Read(buf)
			if err != nil {
				return false
			}
			f := header.Ethernet(buf[HeaderSize:m])
			if f.Type() != header.ARPProtocolNumber || header.ARP(f[header.EthernetMinimumSize:]).Op() != header.ARPRequest {
				return true
			}
		}
	}
	for _, s := range fuzzSeeds(t) {
		for reply(quiet) { // what earlier seeds left
		}
		n.Write(s.frame)
		wait := quiet
		if s.reply {
			wait = seedWait
		}
		replied := reply(wait)
		var got []string
		// The reply's wait gave a dial that is not expected its time.
		var timeout <-chan time.Time
		if s.dial != "" {
			timeout = time.After(seedWait)
		}
	collect:
		for {
			var d string
			if timeout == nil {
				select {
				case d = <-dialed:
				default:
					break collect
				}
			} else {
				select {
				case d = <-dialed:
				case <-timeout:
					break collect
				}
			}
			if d == dnsDial && s.dial != dnsDial {
				continue // the resolver again
			}
			if !slices.Contains(got, d) {
				got = append(got, d)
			}
			if d == s.dial {
				break
			}
		}
		var wantDial []string
		if s.dial != "" {
			wantDial = []string{s.dial}
		}
		if !slices.Equal(got, wantDial) || replied != s.reply {
			t.Errorf("%s: dialed %q and replied %v, want %q and %v", s.name, got, replied, wantDial, s.reply)
		}
	}
}

// FuzzWrite: whatever frames a guest sends, Write takes every one at
// least as long as a virtio-net and an Ethernet header (and refuses
// shorter ones), never panics, asks the host only for connections to
// addresses outside the virtual network that are the host's loopback or
// global unicast, and every frame it sends back is one the driver may
// see: from the gateway's MAC, no longer than the MTU unless it is a TSO
// segment the driver took, with a virtio-net header only for the
// offloads the driver took, whose offsets lie within the frame. The
// second input selects the offloads the driver takes (SetOffload) before
// the frame, as a guest's driver may change them at any reset.
//
// One network serves every input of a fuzzing process, as one serves a
// guest for its life, so what earlier frames set up (connections half
// open, DNS queries) is there for later ones; the host dials all fail.
// A dial made on the stack's goroutines after Write returned is checked
// with a later input; its failure names the address, which is what a
// frame would have to ask for to reproduce it.
func FuzzWrite(f *testing.F) {
	for i, s := range fuzzSeeds(f) {
		f.Add(s.frame, uint8(i%3))
	}
	dialed := make(chan string, 1024)
	n := refusingNetwork(f, dialed)
	offloads := []uint32{0, vnethdr.TunCsum, vnethdr.TunCsum | vnethdr.TunTSO4}
	buf := make([]byte, HeaderSize+gsoMaxSize+header.EthernetMinimumSize)
	f.Fuzz(func(t *testing.T, frame []byte, sel uint8) {
		flags := offloads[int(sel)%len(offloads)]
		if err := n.SetOffload(flags); err != nil {
			t.Fatal(err)
		}
		_, err := n.Write(frame)
		if short := len(frame) < HeaderSize+header.EthernetMinimumSize; short != (err != nil) {
			t.Fatalf("Write of %d bytes: %v", len(frame), err)
		}
		for {
			m, ok, err := n.TryRead(buf)
			if err != nil {
				t.Fatalf("TryRead: %v", err)
			}
			if !ok {
				break
			}
			if err := checkToGuest(buf[:m], flags); err != nil {
				t.Fatalf("%v: % x", err, buf[:min(m, 80)])
			}
		}
		for {
			select {
			case d := <-dialed:
				if err := checkDial(d); err != nil {
					t.Fatal(err)
				}
				continue
			default:
			}
			break
		}
	})
}

// checkToGuest checks a frame Read returned, header first, for a driver
// that took the offloads flags.
func checkToGuest(p []byte, flags uint32) error {
	if len(p) < HeaderSize+header.EthernetMinimumSize {
		return fmt.Errorf("%d-byte frame to the guest", len(p))
	}
	hdr, f := p[:HeaderSize], p[HeaderSize:]
	if src := header.Ethernet(f).SourceAddress(); src != gatewayMAC() {
		return fmt.Errorf("frame to the guest from %v, not the gateway", src)
	}
	u16 := func(off int) int { return int(binary.LittleEndian.Uint16(hdr[off:])) }
	switch {
	case hdr[vnethdr.OffFlags] == 0 && hdr[vnethdr.OffGSOType] == 0:
		if len(f) > header.EthernetMinimumSize+MTU {
			return fmt.Errorf("%d-byte frame without GSO", len(f))
		}
		return nil
	case flags&vnethdr.TunCsum == 0:
		return fmt.Errorf("virtio-net header for a driver that took no offloads")
	case hdr[vnethdr.OffFlags] != vnethdr.FNeedsCsum:
		return fmt.Errorf("virtio-net flags %#x", hdr[vnethdr.OffFlags])
	case u16(vnethdr.OffCsumStart)+u16(vnethdr.OffCsumOffset)+2 > len(f):
		return fmt.Errorf("checksum at %d+%d in a %d-byte frame", u16(vnethdr.OffCsumStart), u16(vnethdr.OffCsumOffset), len(f))
	case hdr[vnethdr.OffGSOType] == 0:
		return nil
	case hdr[vnethdr.OffGSOType] != vnethdr.GSOTCPv4 || flags&vnethdr.TunTSO4 == 0:
		return fmt.Errorf("gso_type %d for offloads %#x", hdr[vnethdr.OffGSOType], flags)
	case u16(vnethdr.OffGSOSize) == 0 || u16(vnethdr.OffHdrLen) > len(f):
		return fmt.Errorf("gso_size %d, hdr_len %d in a %d-byte frame", u16(vnethdr.OffGSOSize), u16(vnethdr.OffHdrLen), len(f))
	}
	return nil
}

// checkDial checks a host connection the network asked for ("tcp
// 127.0.0.1:8080"): the host's loopback (the gateway's stand-in) or a
// global unicast address outside the virtual network.
func checkDial(d string) error {
	var network, addr string
	if _, err := fmt.Sscan(d, &network, &addr); err != nil {
		return fmt.Errorf("dial %q: %v", d, err)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("dial %q: %v", d, err)
	}
	ip := ap.Addr()
	if ap.Port() == 0 || (ip != hostLoopback && (!ip.IsGlobalUnicast() || prefix.Contains(ip))) {
		return fmt.Errorf("the guest made the network dial %s", d)
	}
	return nil
}
