package usernet

import (
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DHCP ports (RFC 2131 §4.1).
const (
	dhcpServerPort = 67
	dhcpClientPort = 68
)

// leaseTime is what the server grants. The guest's address never
// changes, so a long lease only spares renewals (slirp grants a day).
const leaseTime = 24 * time.Hour

// serveDHCP answers DHCP on the gateway: every client gets GuestAddr,
// the gateway as router and DNSAddr as name server (RFC 2131, options of
// RFC 2132). One guest per network, so there is no pool to manage.
func (n *Network) serveDHCP() error {
	var wq waiter.Queue
	ep, terr := n.stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return errors.New("DHCP server: " + terr.String())
	}
	// The guest has no address yet: offers go to the broadcast
	// address, from an unspecified-address bind.
	ep.SocketOptions().SetBroadcast(true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: dhcpServerPort}); terr != nil {
		ep.Close()
		return errors.New("DHCP server: bind port 67: " + terr.String())
	}
	c := gonet.NewUDPConn(&wq, ep)
	if !n.track(c) {
		c.Close()
		return net.ErrClosed
	}
	n.spawn(func() {
		buf := make([]byte, 1500)
		for {
			m, _, err := c.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			req, err := dhcpv4.FromBytes(buf[:m])
			if err != nil {
				continue
			}
			reply, err := dhcpReply(req)
			if err != nil || reply == nil {
				continue
			}
			dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpClientPort}
			if !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr != nil {
				// A renewing client has its address (RFC 2131
				// §4.1: unicast to ciaddr).
				dst.IP = req.ClientIPAddr
			}
			c.WriteTo(reply.ToBytes(), dst)
		}
	})
	return nil
}

// dhcpReply is the server's answer to req: an offer for a discover, an
// acknowledgement for a request of GuestAddr, a negative one for a
// request of anything else, nothing for other messages (release, decline,
// inform) and for replies.
func dhcpReply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
		want := req.RequestedIPAddress()
		if want == nil {
			want = req.ClientIPAddr // renewing (RFC 2131 §4.3.2)
		}
		if want != nil && !want.Equal(net.IP(guestIP.AsSlice())) {
			typ = dhcpv4.MessageTypeNak
		}
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(gatewayIP.AsSlice())) {
			return nil, nil // the client chose another server
		}
	default:
		return nil, nil
	}
	gw := net.IP(gatewayIP.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(gw),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
	}
	if typ != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(net.IP(guestIP.AsSlice())),
			dhcpv4.WithNetmask(net.CIDRMask(prefix.Bits(), 32)),
			dhcpv4.WithRouter(gw),
			dhcpv4.WithDNS(net.IP(dnsIP.AsSlice())),
			dhcpv4.WithLeaseTime(uint32(leaseTime/time.Second)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{MTU >> 8, MTU & 0xff})),
		)
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}
