package usernet

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The DNS server at DNSAddr is a stub that answers each question by
// asking the host's resolver, the way a program on the host would look
// the name up: through Go's resolver, which reads the host's
// /etc/resolv.conf and /etc/hosts (or asks Config.DNSUpstream).
//
// The message format is golang.org/x/net/dns/dnsmessage's: the Go team's
// maintained RFC 1035 parser and builder, the one Go's own resolver uses,
// which this package does not write again. The loops that read queries
// and send answers, over UDP and over TCP, are this file's. miekg/dns
// served here before, and its server brought crypto/tls, x509 and RSA
// into vmm for DNS over TLS, which vmm never serves: 1.5 of the binary's
// 13.8 MB, and 0.9 MiB of a booted VM's memory (RSS outside guest RAM,
// 7.8-7.9 against 8.8 MiB in one nested L1, 4 boots each). Before it,
// gvisor-tap-vsock's DNS service answered every failed lookup with
// NXDOMAIN (a timed-out host resolver told the guest the name does not
// exist, which the guest then caches) and linked net/http and logrus for
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

// dnsMaxLookups bounds the questions being looked up at once. Each query
// is answered on a goroutine of its own, and a lookup can take
// dnsLookupTimeout, so without a bound a guest sending queries fast
// would have vmm hold goroutines and upstream sockets without limit. A
// question beyond it is answered SERVFAIL at once, which a resolver
// retries; 64 is far more than a job's resolver keeps in flight.
const dnsMaxLookups = 64

// Message sizes.
const (
	// dnsMinUDPSize is the most a UDP answer may hold for a querier
	// that offers no more (RFC 1035 §4.2.1).
	dnsMinUDPSize = 512
	// dnsMaxUDPSize caps what an EDNS0 querier may offer (RFC 6891
	// §6.2.5 lets a responder send less than offered): 4096, the size
	// most resolvers offer, and miekg/dns's cap before.
	dnsMaxUDPSize = 4096
	// dnsMaxSize is the most a message over TCP holds: its two-byte
	// length (RFC 1035 §4.2.2). Over UDP, the most a datagram holds.
	dnsMaxSize = 65535
)

// dnsMaxConns bounds the TCP connections to the server open at once: a
// connection costs memory and a goroutine but no host descriptor, so
// nothing else would bound what a guest can open. One beyond it is
// closed at once, which RFC 7766 §6.2.2 allows; a resolver uses TCP
// only for an answer too large for UDP, one connection at a time.
const dnsMaxConns = 64

// dnsTCPIdle is how long a TCP connection may stay silent, between
// queries or within one, before the server closes it; RFC 7766 §6.2.3
// asks for an idle timeout of the order of seconds.
const dnsTCPIdle = 10 * time.Second

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
// flight (dnsMaxLookups); nil means no bound. idle replaces dnsTCPIdle
// when not 0 (tests).
type dnsHandler struct {
	ctx    context.Context
	lookup hostLookup
	slots  chan struct{}
	idle   time.Duration
}

// serveUDP answers each datagram c receives to its sender, on a
// goroutine of its own (spawn), since a lookup can take
// dnsLookupTimeout. It returns once c is closed, or spawn refuses.
func (h dnsHandler) serveUDP(c net.PacketConn, spawn func(func()) bool) {
	buf := make([]byte, dnsMaxSize)
	for {
		m, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		query := append([]byte(nil), buf[:m]...)
		if !spawn(func() {
			if r := h.reply(query, false); r != nil {
				// A lost answer is the querier's to retry.
				_, _ = c.WriteTo(r, from)
			}
		}) {
			return
		}
	}
}

// serveTCP answers the queries on one TCP connection in turn until the
// querier closes it, sends what is not a query, or stays silent for
// dnsTCPIdle: each message is a two-byte length and that many bytes
// (RFC 1035 §4.2.2), and RFC 7766 §6.2.1.1 lets a server answer them in
// the order they came. A message's buffer is allocated once its length
// has come, so a connection that sends nothing holds none.
func (h dnsHandler) serveTCP(c net.Conn) {
	idle := h.idle
	if idle == 0 {
		idle = dnsTCPIdle
	}
	var length [2]byte
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(c, length[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(length[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		r := h.reply(msg, true)
		if r == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(r)), uint16(len(r)))
		_ = c.SetWriteDeadline(time.Now().Add(idle))
		if _, err := c.Write(append(out, r...)); err != nil {
			return
		}
	}
}

// reply is the answer to the query msg, or nil for a message that gets
// none: one too short for a header, or a response (answering those
// would let two servers bounce messages between them forever). An
// answer over UDP holds at most what the querier's EDNS0 record offers,
// or 512 bytes; one that does not fit keeps the records that do and
// sets TC (RFC 1035 §4.1.1), so the querier asks again over TCP.
func (h dnsHandler) reply(msg []byte, tcp bool) []byte {
	var p dnsmessage.Parser
	hdr, err := p.Start(msg)
	if err != nil || hdr.Response {
		return nil
	}
	out := dnsmessage.Message{Header: dnsmessage.Header{
		ID: hdr.ID, Response: true, OpCode: hdr.OpCode,
		RecursionDesired: hdr.RecursionDesired, RecursionAvailable: true,
		CheckingDisabled: hdr.CheckingDisabled, // RFC 4035 §3.1.6
	}}
	// The question count, from the header (RFC 1035 §4.1.1): a query
	// holds one question (RFC 9619), and only that one is parsed, since
	// parsing the ten thousand a 64 KiB message can hold would cost
	// megabytes for an answer of FORMERR.
	qdcount := binary.BigEndian.Uint16(msg[4:6])
	q, err := p.Question()
	switch {
	case err == nil:
		out.Questions = []dnsmessage.Question{q} // the first, as a reply to one
	case errors.Is(err, dnsmessage.ErrSectionDone):
		err = nil // no question: FORMERR below, for a query
	}
	var opt *dnsmessage.ResourceHeader
	if err == nil && qdcount == 1 {
		opt, err = findOPT(&p)
	}
	size := dnsMinUDPSize
	switch {
	case tcp:
		size = dnsMaxSize
	case opt != nil:
		size = min(max(int(opt.Class), dnsMinUDPSize), dnsMaxUDPSize)
	}
	if opt != nil {
		// What this server takes over UDP, which is what the OPT
		// record advertises (RFC 6891 §6.2.3), whatever the transport.
		var rh dnsmessage.ResourceHeader
		if rh.SetEDNS0(min(size, dnsMaxUDPSize), dnsmessage.RCodeSuccess, false) == nil {
			out.Additionals = []dnsmessage.Resource{{Header: rh, Body: &dnsmessage.OPTResource{}}}
		}
	}
	switch {
	case err != nil:
		out.RCode = dnsmessage.RCodeFormatError
	case hdr.OpCode != 0: // QUERY (RFC 1035 §4.1.1)
		out.RCode = dnsmessage.RCodeNotImplemented
	case qdcount != 1:
		out.RCode = dnsmessage.RCodeFormatError
	case q.Class != dnsmessage.ClassINET:
		out.RCode = dnsmessage.RCodeNotImplemented
	default:
		out.RCode, out.Answers = h.answer(q)
	}
	return pack(out, size)
}

// findOPT is the EDNS0 OPT record among the message's additional
// records (RFC 6891 §6.1.1), or nil; p has read the header.
func findOPT(p *dnsmessage.Parser) (*dnsmessage.ResourceHeader, error) {
	if err := p.SkipAllQuestions(); err != nil {
		return nil, err
	}
	if err := p.SkipAllAnswers(); err != nil {
		return nil, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return nil, err
	}
	for {
		rh, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if rh.Type == dnsmessage.TypeOPT {
			return &rh, nil
		}
		if err := p.SkipAdditional(); err != nil {
			return nil, err
		}
	}
}

// pack is m packed into at most size bytes: all of it, or as many of its
// answers as fit with TC set.
func pack(m dnsmessage.Message, size int) []byte {
	b, err := m.Pack()
	if err != nil {
		// Not expected: the question came from a parsed query and
		// each answer packed alone (records). Say so rather than fall
		// silent.
		m.RCode, m.Answers = dnsmessage.RCodeServerFailure, nil
		b, _ = m.Pack()
		return b
	}
	if len(b) <= size {
		return b
	}
	all := m.Answers
	m.Header.Truncated = true
	// The most answers that fit, by bisection: lo of them fit, hi do
	// not.
	lo, hi := 0, len(all)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		m.Answers = all[:mid]
		if b, err := m.Pack(); err == nil && len(b) <= size {
			lo = mid
		} else {
			hi = mid
		}
	}
	m.Answers = all[:lo]
	b, _ = m.Pack()
	return b
}

// answer looks q up on the host: the reply's RCODE and answers.
func (h dnsHandler) answer(q dnsmessage.Question) (dnsmessage.RCode, []dnsmessage.Resource) {
	if h.slots != nil {
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			return dnsmessage.RCodeServerFailure, nil
		}
	}
	ctx, cancel := context.WithTimeout(h.ctx, dnsLookupTimeout)
	defer cancel()
	rrs, err := h.records(ctx, q)
	var de *net.DNSError
	switch {
	case err == nil:
		return dnsmessage.RCodeSuccess, rrs
	case errors.As(err, &de) && de.IsNotFound:
		// Go's resolver says "not found" also for a name that exists
		// without records of the type asked (its own NODATA). A name
		// with addresses exists: NODATA, not NXDOMAIN, which a guest's
		// cache would apply to every type of the name and, by RFC
		// 8020, to every name under it.
		if q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeAAAA && q.Type != dnsmessage.TypePTR {
			if _, err := h.lookup.LookupNetIP(ctx, "ip", q.Name.String()); err == nil {
				return dnsmessage.RCodeSuccess, nil
			}
		}
		return dnsmessage.RCodeNameError, nil
	default:
		return dnsmessage.RCodeServerFailure, nil
	}
}

// records looks q up on the host. A name that exists without records of
// q's type gets none and no error (NODATA), so that a guest asking for
// AAAA is not told the name does not exist (musl's resolver then drops
// the A answer too); so does a type the host's resolver cannot look up.
// A record the message cannot hold (a name of a label over 63 bytes,
// which the host's resolver may pass on) is left out.
func (h dnsHandler) records(ctx context.Context, q dnsmessage.Question) ([]dnsmessage.Resource, error) {
	name := q.Name.String()
	var rrs []dnsmessage.Resource
	add := func(body dnsmessage.ResourceBody) {
		r := dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}, Body: body}
		if _, err := (&dnsmessage.Message{Answers: []dnsmessage.Resource{r}}).Pack(); err == nil {
			rrs = append(rrs, r)
		}
	}
	switch q.Type {
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		// Both families, so that a name with IPv6 addresses only is
		// NODATA rather than NXDOMAIN. AAAA questions get no answers:
		// the network carries no IPv6 (the guest has no IPv6 address
		// or route through it), and an AAAA answer would send the
		// guest's connections to addresses it cannot reach first.
		ips, err := h.lookup.LookupNetIP(ctx, "ip", name)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			if ip = ip.Unmap(); q.Type == dnsmessage.TypeA && ip.Is4() {
				add(&dnsmessage.AResource{A: ip.As4()})
			}
		}
	case dnsmessage.TypeCNAME:
		cname, err := h.lookup.LookupCNAME(ctx, name)
		if err != nil {
			return nil, err
		}
		if n, ok := dnsName(cname); ok && !strings.EqualFold(n.String(), name) { // the name itself: no CNAME
			add(&dnsmessage.CNAMEResource{CNAME: n})
		}
	case dnsmessage.TypeMX:
		mxs, err := h.lookup.LookupMX(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, mx := range mxs {
			if n, ok := dnsName(mx.Host); ok {
				add(&dnsmessage.MXResource{Pref: mx.Pref, MX: n})
			}
		}
	case dnsmessage.TypeNS:
		nss, err := h.lookup.LookupNS(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, ns := range nss {
			if n, ok := dnsName(ns.Host); ok {
				add(&dnsmessage.NSResource{NS: n})
			}
		}
	case dnsmessage.TypeSRV:
		_, srvs, err := h.lookup.LookupSRV(ctx, "", "", name)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			if n, ok := dnsName(s.Target); ok {
				add(&dnsmessage.SRVResource{Priority: s.Priority, Weight: s.Weight, Port: s.Port, Target: n})
			}
		}
	case dnsmessage.TypeTXT:
		txts, err := h.lookup.LookupTXT(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, t := range txts {
			add(&dnsmessage.TXTResource{TXT: splitTXT(t)})
		}
	case dnsmessage.TypePTR:
		ip, ok := reverseAddr(name)
		if !ok {
			return nil, nil
		}
		names, err := h.lookup.LookupAddr(ctx, ip.String())
		if err != nil {
			return nil, err
		}
		for _, s := range names {
			if n, ok := dnsName(s); ok {
				add(&dnsmessage.PTRResource{PTR: n})
			}
		}
	}
	return rrs, nil
}

// fqdn is name with the root's dot at its end, as names are written in
// messages; Go's resolver gives them so, /etc/hosts may not.
func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// dnsName is s as a name in a message; false for one too long to be.
func dnsName(s string) (dnsmessage.Name, bool) {
	n, err := dnsmessage.NewName(fqdn(s))
	return n, err == nil
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
	name = strings.ToLower(fqdn(name))
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
