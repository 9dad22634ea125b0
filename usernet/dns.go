package usernet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The DNS server at DNSAddr is a stub that answers each question by
// asking the host's resolver, the way a program on the host would look
// the name up: through Go's resolver, which reads the host's
// /etc/resolv.conf and /etc/hosts (or asks Config.DNSUpstream). The
// message format and the server loop, UDP and TCP, are miekg/dns's, a
// maintained implementation of RFC 1035 that CoreDNS is built on, which
// this package does not write again. gvisor-tap-vsock's DNS service did
// this job before; it answered every failed lookup with NXDOMAIN (a
// timed-out host resolver told the guest the name does not exist, which
// the guest then caches), and it linked net/http and logrus into vmm for
// an HTTP API vmm never served.

// dnsTTL is the time to live of every answer, in seconds. The answers
// come from the host's resolver, which caches by the records' own TTLs
// that Go's resolver does not pass on; a minute lets the guest cache a
// lookup across the processes of a job without holding a changed record
// for long.
const dnsTTL = 60

// dnsLookupTimeout bounds one question's lookups, so a host resolver
// that does not answer costs the guest a SERVFAIL, not a hung query.
// Go's resolver gives each server 5 s and tries twice (resolv.conf(5)'s
// defaults), so this leaves it one full round.
const dnsLookupTimeout = 10 * time.Second

// dnsMaxLookups bounds the questions being looked up at once. miekg/dns
// serves each query on a goroutine of its own, and a lookup can take
// dnsLookupTimeout, so without a bound a guest sending queries fast
// would have vmm hold goroutines and upstream sockets without limit. A
// question beyond it is answered SERVFAIL at once, which a resolver
// retries; 64 is far more than a job's resolver keeps in flight.
const dnsMaxLookups = 64

// hostLookup is what the DNS server asks of the host's resolver:
// *net.Resolver, or a fake in tests.
type hostLookup interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	LookupCNAME(ctx context.Context, host string) (string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupNS(ctx context.Context, name string) ([]*net.NS, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// dnsHandler answers the guest's queries; ctx ends with the network, and
// with it every lookup in flight. slots holds a token per lookup in
// flight (dnsMaxLookups); nil means no bound.
type dnsHandler struct {
	ctx    context.Context
	lookup hostLookup
	slots  chan struct{}
}

// ServeDNS is miekg/dns's callback for one query.
func (h dnsHandler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	size := udpAnswerSize(req)
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	}
	_ = w.WriteMsg(h.answer(req, size))
}

// udpAnswerSize is the largest answer the querier takes over UDP: 512
// bytes (RFC 1035 §4.2.1), or what its EDNS0 OPT record offers (RFC 6891
// §6.2.5), up to dns.DefaultMsgSize.
func udpAnswerSize(req *dns.Msg) int {
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, min(int(opt.UDPSize()), dns.DefaultMsgSize))
	}
	return size
}

// answer is the reply to req, at most size bytes once packed (cut short
// with the TC bit set, RFC 1035 §4.1.1, when the answers do not fit).
func (h dnsHandler) answer(req *dns.Msg, size int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(uint16(max(size, dns.MinMsgSize)), false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(req.Question) != 1:
		// RFC 9619: a query holds one question.
		m.Rcode = dns.RcodeFormatError
		return m
	case req.Question[0].Qclass != dns.ClassINET:
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			m.Rcode = dns.RcodeServerFailure
			return m
		}
	}
	ctx, cancel := context.WithTimeout(h.ctx, dnsLookupTimeout)
	defer cancel()
	rrs, err := h.records(ctx, req.Question[0])
	var de *net.DNSError
	switch {
	case err == nil:
		m.Answer = rrs
	case errors.As(err, &de) && de.IsNotFound:
		m.Rcode = dns.RcodeNameError
	default:
		m.Rcode = dns.RcodeServerFailure
	}
	m.Truncate(size)
	return m
}

// records looks q up on the host. A name that exists without records of
// q's type gets none and no error (NODATA), so that a guest asking for
// AAAA is not told the name does not exist (musl's resolver then drops
// the A answer too); so does a type the host's resolver cannot look up.
func (h dnsHandler) records(ctx context.Context, q dns.Question) ([]dns.RR, error) {
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: dnsTTL}
	var rrs []dns.RR
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		// Both families, so that a name with IPv6 addresses only is
		// NODATA rather than NXDOMAIN. AAAA questions get no answers:
		// the network carries no IPv6 (the guest has no IPv6 address
		// or route through it), and an AAAA answer would send the
		// guest's connections to addresses it cannot reach first.
		ips, err := h.lookup.LookupNetIP(ctx, "ip", q.Name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			if ip = ip.Unmap(); q.Qtype == dns.TypeA && ip.Is4() {
				rrs = append(rrs, &dns.A{Hdr: hdr, A: ip.AsSlice()})
			}
		}
	case dns.TypeCNAME:
		cname, err := h.lookup.LookupCNAME(ctx, q.Name)
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(dns.Fqdn(cname), q.Name) { // the name itself: no CNAME
			rrs = append(rrs, &dns.CNAME{Hdr: hdr, Target: dns.Fqdn(cname)})
		}
	case dns.TypeMX:
		mxs, err := h.lookup.LookupMX(ctx, q.Name)
		if err != nil {
			return nil, err
		}
		for _, mx := range mxs {
			rrs = append(rrs, &dns.MX{Hdr: hdr, Preference: mx.Pref, Mx: dns.Fqdn(mx.Host)})
		}
	case dns.TypeNS:
		nss, err := h.lookup.LookupNS(ctx, q.Name)
		if err != nil {
			return nil, err
		}
		for _, ns := range nss {
			rrs = append(rrs, &dns.NS{Hdr: hdr, Ns: dns.Fqdn(ns.Host)})
		}
	case dns.TypeSRV:
		_, srvs, err := h.lookup.LookupSRV(ctx, "", "", q.Name)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			rrs = append(rrs, &dns.SRV{Hdr: hdr, Priority: s.Priority, Weight: s.Weight, Port: s.Port, Target: dns.Fqdn(s.Target)})
		}
	case dns.TypeTXT:
		txts, err := h.lookup.LookupTXT(ctx, q.Name)
		if err != nil {
			return nil, err
		}
		for _, t := range txts {
			rrs = append(rrs, &dns.TXT{Hdr: hdr, Txt: splitTXT(t)})
		}
	case dns.TypePTR:
		ip, ok := reverseAddr(q.Name)
		if !ok {
			return nil, nil
		}
		names, err := h.lookup.LookupAddr(ctx, ip.String())
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			rrs = append(rrs, &dns.PTR{Hdr: hdr, Ptr: dns.Fqdn(n)})
		}
	}
	return rrs, nil
}

// splitTXT cuts a TXT record's text, which Go's resolver joins, into the
// character-strings of at most 255 bytes its wire form holds (RFC 1035
// §3.3.14).
func splitTXT(s string) []string {
	parts := []string{}
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}

// reverseAddr is the address a PTR question's name stands for: d.c.b.a.
// in-addr.arpa. for a.b.c.d (RFC 1035 §3.5), or the 32 reversed nibbles
// under ip6.arpa. (RFC 3596 §2.5).
func reverseAddr(name string) (netip.Addr, bool) {
	name = strings.ToLower(dns.Fqdn(name))
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
			labels[i], labels[j] = labels[j], labels[i]
		}
		ip, err := netip.ParseAddr(strings.Join(labels, "."))
		return ip, err == nil && ip.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		nibbles := strings.Split(rest, ".")
		if len(nibbles) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, n := range nibbles {
			if len(n) != 1 {
				return netip.Addr{}, false
			}
			v := strings.IndexByte("0123456789abcdef", n[0])
			if v < 0 {
				return netip.Addr{}, false
			}
			// nibbles[0] is the address's last, low nibble.
			k := 31 - i
			if k%2 == 0 {
				b[k/2] |= byte(v) << 4
			} else {
				b[k/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
