// Package hostfwd is the user network's address plan and its host-port
// forwarding rules (-nic user,hostfwd=...): their syntax, parsed the way
// QEMU parses them. It is a package of its own, importing no network
// code, because two processes need it: vmm, which checks a command line
// before it starts anything, and the vmm-net helper, where the user
// network (package usernet, gVisor's netstack) runs and listens.
package hostfwd

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The virtual network's addresses, as QEMU's slirp assigns them (QEMU's
// documentation, "Network emulation", user mode networking).
const (
	// NetworkCIDR is the guest's network.
	NetworkCIDR = "10.0.2.0/24"
	// GatewayAddr is the guest's router, and the host's loopback.
	GatewayAddr = "10.0.2.2"
	// DNSAddr answers DNS queries from the host's resolver.
	DNSAddr = "10.0.2.3"
	// GuestAddr is the one address the DHCP server hands out.
	GuestAddr = "10.0.2.15"
)

// Forward is one host port forwarded into the guest: QEMU's hostfwd.
type Forward struct {
	// UDP forwards datagrams; false forwards TCP connections.
	UDP bool
	// Host is the host address and port to listen on. An unspecified
	// address (0.0.0.0) listens on every host interface, as QEMU does
	// when hostfwd names none; port 0 takes any free port.
	Host netip.AddrPort
	// Guest is where connections go: GuestAddr unless the rule says
	// otherwise.
	Guest netip.AddrPort
}

// String is the rule in QEMU's spelling.
func (f Forward) String() string {
	proto := "tcp"
	if f.UDP {
		proto = "udp"
	}
	return fmt.Sprintf("%s:%s:%d-%s:%d", proto, f.Host.Addr(), f.Host.Port(), f.Guest.Addr(), f.Guest.Port())
}

// Parse reads QEMU's hostfwd value,
// [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, with QEMU's
// defaults: tcp, every host interface, the guest's DHCP address. Both
// addresses are IPv4 (QEMU's inet_aton); the guest's must be a host of
// the virtual network other than the gateway and DNS server.
func Parse(s string) (Forward, error) {
	var f Forward
	bad := func(format string, args ...any) (Forward, error) {
		return Forward{}, fmt.Errorf("hostfwd %q: %s (want [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp::2222-:22)", s, fmt.Sprintf(format, args...))
	}
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return bad("no protocol field")
	}
	switch proto {
	case "", "tcp":
	case "udp":
		f.UDP = true
	default:
		return bad("protocol %q is neither tcp nor udp", proto)
	}
	host, guest, ok := strings.Cut(rest, "-")
	if !ok {
		return bad("no '-' between the host and guest sides")
	}
	if strings.HasPrefix(host, "[") || strings.HasPrefix(guest, "[") {
		return bad("an IPv6 address ([...]): -nic user's network is IPv4 only")
	}
	haddr, hport, ok := strings.Cut(host, ":")
	if !ok {
		return bad("host side %q is not [ADDR]:PORT", host)
	}
	gaddr, gport, ok := strings.Cut(guest, ":")
	if !ok {
		return bad("guest side %q is not [ADDR]:PORT", guest)
	}
	ha := netip.IPv4Unspecified()
	if haddr != "" {
		a, err := netip.ParseAddr(haddr)
		if err != nil || !a.Is4() {
			return bad("host address %q is not an IPv4 address (-nic user's network is IPv4 only)", haddr)
		}
		ha = a
	}
	hp, err := parsePort(hport, 0)
	if err != nil {
		return bad("host port: %v", err)
	}
	ga := netip.MustParseAddr(GuestAddr)
	if gaddr != "" {
		a, err := netip.ParseAddr(gaddr)
		if err != nil || !a.Is4() {
			return bad("guest address %q is not an IPv4 address", gaddr)
		}
		p := netip.MustParsePrefix(NetworkCIDR)
		if !p.Contains(a) || a == netip.MustParseAddr(GatewayAddr) || a == netip.MustParseAddr(DNSAddr) || a == p.Addr() || a == broadcast(p) {
			return bad("guest address %s is not a guest's address in %s", a, NetworkCIDR)
		}
		ga = a
	}
	gp, err := parsePort(gport, 1)
	if err != nil {
		return bad("guest port: %v", err)
	}
	f.Host = netip.AddrPortFrom(ha, hp)
	f.Guest = netip.AddrPortFrom(ga, gp)
	return f, nil
}

// parsePort reads a decimal port of at least min.
func parsePort(s string, min uint64) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v < min {
		return 0, fmt.Errorf("%q is not a port number from %d to 65535", s, min)
	}
	return uint16(v), nil
}

// broadcast is network p's broadcast address.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(a)
}
