package usernet

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vmm-dev/vmm/usernet/vnethdr"
)

// gateway is the stack's one link endpoint: the Ethernet port of the
// gateway and the DNS server, with the guest at the other end of the
// wire. Frames the stack sends get their Ethernet header here and wait in
// the network's queue for Read; frames from the guest come in through
// Write, which strips their Ethernet header and calls deliver.
//
// It is this package's own rather than gvisor-tap-vsock's LinkEndpoint,
// which does the same but imports gopacket for a debug dump: gopacket's
// package initialisation fills some 7 MiB of lookup tables in every vmm
// process, whether or not it has a user network (issue 12).
type gateway struct {
	n   *Network
	mac tcpip.LinkAddress

	mu         sync.Mutex // guards dispatcher: Attach runs on the stack's side
	dispatcher stack.NetworkDispatcher
}

// deliver hands a frame from the guest, its Ethernet header already
// removed, to the stack.
func (g *gateway) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	g.mu.Lock()
	d := g.dispatcher
	g.mu.Unlock()
	if d != nil {
		d.DeliverNetworkPacket(proto, pkt)
	}
}

// MTU is Ethernet's, as DHCP announces it.
func (g *gateway) MTU() uint32 { return MTU }

// SetMTU changes nothing: the MTU is the one DHCP told the guest, and
// this package never asks the stack to change it.
func (g *gateway) SetMTU(uint32) {}

// MaxHeaderLength is the Ethernet header WritePackets pushes.
func (g *gateway) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress is the gateway's MAC address.
func (g *gateway) LinkAddress() tcpip.LinkAddress { return g.mac }

// SetLinkAddress changes nothing: the gateway's address is fixed (it is
// slirp's), and this package never asks the stack to change it.
func (g *gateway) SetLinkAddress(tcpip.LinkAddress) {}

var _ stack.GSOEndpoint = (*gateway)(nil)

// Capabilities: the stack resolves the guest's address by ARP; received
// checksums are not checked. The guest's driver may leave them partial
// (VIRTIO_NET_F_CSUM and TSO), and every packet from the guest ends in
// this stack, whose payload leaves through a host socket with the host's
// own checksums: a corrupted frame is as likely on this in-memory wire
// as in the guest's own memory.
func (g *gateway) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
}

// SupportedGSO is host GSO while the guest's driver takes partial
// checksums and TSOv4 (Network.SetOffload): TCP then hands WritePackets
// segments of up to gsoMaxSize with only the pseudo-header summed, and
// toGuest describes them to the driver. A connection looks this up once,
// when it is made.
func (g *gateway) SupportedGSO() stack.SupportedGSO {
	if f := g.n.offload.Load(); f&vnethdr.TunCsum != 0 && f&vnethdr.TunTSO4 != 0 {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// GSOMaxSize is gsoMaxSize.
func (g *gateway) GSOMaxSize() uint32 { return gsoMaxSize }

// Attach is called by the stack with the NIC that takes delivered frames,
// and with nil when the NIC is removed.
func (g *gateway) Attach(d stack.NetworkDispatcher) {
	g.mu.Lock()
	g.dispatcher = d
	g.mu.Unlock()
}

// IsAttached reports whether a NIC takes delivered frames.
func (g *gateway) IsAttached() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dispatcher != nil
}

// Wait returns at once: the endpoint has no goroutines of its own.
func (g *gateway) Wait() {}

// ARPHardwareType is Ethernet's.
func (g *gateway) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader does nothing: WritePackets adds the Ethernet header.
func (g *gateway) AddHeader(*stack.PacketBuffer) {}

// ParseHeader has nothing to do: Write strips the Ethernet header before
// delivering a frame.
func (g *gateway) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close does nothing: Network.Close ends the queue's reader.
func (g *gateway) Close() {}

// SetOnCloseAction is not needed: there is no device to destroy.
func (g *gateway) SetOnCloseAction(func()) {}

// WritePackets puts an Ethernet header on each packet and queues it for
// the guest (toGuest). It never fails: a full queue drops, as a TAP's
// does.
func (g *gateway) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		g.write(pkt)
		n++
	}
	return n, nil
}

// WriteRawPacket is not supported: the stack has no packet sockets here.
func (g *gateway) WriteRawPacket(*stack.PacketBuffer) tcpip.Error {
	return &tcpip.ErrNotSupported{}
}

func (g *gateway) write(pkt *stack.PacketBuffer) {
	src := g.mac
	if r := pkt.EgressRoute; r.LocalLinkAddress != "" {
		src = r.LocalLinkAddress // the stack forwarding for another host
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		Type:    pkt.NetworkProtocolNumber,
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
	})
	if spoofedARPReply(pkt) {
		return
	}
	g.n.toGuest(pkt)
}

// spoofedARPReply reports an ARP reply for an address that is neither
// the gateway's nor the DNS server's. Spoofing and promiscuous mode make
// the stack answer ARP for any address, the guest's own included, and a
// guest probing its new address (a DHCP client's conflict check) would
// then find it taken; only the two service addresses are really on this
// side of the wire.
func spoofedARPReply(pkt *stack.PacketBuffer) bool {
	if pkt.NetworkProtocolNumber != header.ARPProtocolNumber {
		return false
	}
	h := header.ARP(pkt.NetworkHeader().Slice())
	if !h.IsValid() || h.Op() != header.ARPReply {
		return false
	}
	sender := tcpip.AddrFromSlice(h.ProtocolAddressSender())
	return sender != tcpip.AddrFrom4(gatewayIP.As4()) && sender != tcpip.AddrFrom4(dnsIP.As4())
}
