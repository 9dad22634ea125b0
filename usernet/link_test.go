package usernet

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// arpPacket is an outgoing ARP packet from sender, as the stack hands it
// to the link endpoint.
func arpPacket(op header.ARPOp, sender netip.Addr) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: header.ARPSize})
	h := header.ARP(pkt.NetworkHeader().Push(header.ARPSize))
	h.SetIPv4OverEthernet()
	h.SetOp(op)
	s := sender.As4()
	copy(h.ProtocolAddressSender(), s[:])
	pkt.NetworkProtocolNumber = header.ARPProtocolNumber
	return pkt
}

// Only the gateway and the DNS server answer ARP towards the guest: a
// reply for any other address (the stack's spoofing answers for all) is
// dropped, and everything that is not an ARP reply passes.
func TestSpoofedARPReply(t *testing.T) {
	for _, tt := range []struct {
		name string
		pkt  func() *stack.PacketBuffer
		drop bool
	}{
		{"reply from the gateway", func() *stack.PacketBuffer { return arpPacket(header.ARPReply, gatewayIP) }, false},
		{"reply from DNS", func() *stack.PacketBuffer { return arpPacket(header.ARPReply, dnsIP) }, false},
		{"reply for the guest's own address", func() *stack.PacketBuffer { return arpPacket(header.ARPReply, guestIP) }, true},
		{"reply for another address", func() *stack.PacketBuffer { return arpPacket(header.ARPReply, netip.MustParseAddr("10.0.2.77")) }, true},
		{"request from another address", func() *stack.PacketBuffer { return arpPacket(header.ARPRequest, netip.MustParseAddr("10.0.2.77")) }, false},
		{"not ARP", func() *stack.PacketBuffer {
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: header.IPv4MinimumSize})
			pkt.NetworkHeader().Push(header.IPv4MinimumSize)
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
			return pkt
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt()
			defer pkt.DecRef()
			if got := spoofedARPReply(pkt); got != tt.drop {
				t.Errorf("spoofedARPReply = %v, want %v", got, tt.drop)
			}
		})
	}
}
