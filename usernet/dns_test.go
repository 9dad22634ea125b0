package usernet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// fakeLookup is a host resolver that knows a few names.
type fakeLookup struct{}

var (
	errNotFound = &net.DNSError{Err: "no such host", IsNotFound: true}
	errTimeout  = &net.DNSError{Err: "i/o timeout", IsTimeout: true}
)

func (fakeLookup) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if network != "ip" {
		return nil, errors.New("want both families")
	}
	switch host {
	case "both.test.":
		return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:192.0.2.2")}, nil
	case "v4only.test.":
		return []netip.Addr{netip.MustParseAddr("192.0.2.3")}, nil
	case "v6only.test.":
		return []netip.Addr{netip.MustParseAddr("2001:db8::6")}, nil
	case "many.test.":
		var ips []netip.Addr
		for i := range 100 {
			ips = append(ips, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
		}
		return ips, nil
	case "slow.test.":
		return nil, errTimeout
	}
	return nil, errNotFound
}

func (fakeLookup) LookupCNAME(_ context.Context, host string) (string, error) {
	switch host {
	case "alias.test.":
		return "both.test.", nil
	case "both.test.":
		return "both.test", nil
	}
	return "", errNotFound
}

func (fakeLookup) LookupMX(context.Context, string) ([]*net.MX, error) {
	return []*net.MX{{Host: "mail.test", Pref: 10}}, nil
}

func (fakeLookup) LookupNS(context.Context, string) ([]*net.NS, error) {
	return []*net.NS{{Host: "ns1.test."}}, nil
}

func (fakeLookup) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	if service != "" || proto != "" {
		return "", nil, errors.New("want the name as given")
	}
	return name, []*net.SRV{{Target: "srv.test.", Port: 8080, Priority: 1, Weight: 5}}, nil
}

func (fakeLookup) LookupTXT(context.Context, string) ([]string, error) {
	return []string{"short", strings.Repeat("x", 300)}, nil
}

func (fakeLookup) LookupAddr(_ context.Context, addr string) ([]string, error) {
	switch addr {
	case "192.0.2.1", "2001:db8::1":
		return []string{"both.test."}, nil
	}
	return nil, errNotFound
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func TestDNSAnswer(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	notQuery := query("both.test.", dns.TypeA)
	notQuery.Opcode = dns.OpcodeUpdate
	twoQuestions := query("both.test.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	chaos := query("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	for _, tc := range []struct {
		name  string
		req   *dns.Msg
		size  int
		rcode int
		want  []string // the answers' data, in order
		tc    bool
	}{
		{"A", query("both.test.", dns.TypeA), 512, dns.RcodeSuccess, []string{"192.0.2.1", "192.0.2.2"}, false},
		// No IPv6 on this network: AAAA is NODATA, but NXDOMAIN for
		// a name that does not exist.
		{"AAAA", query("both.test.", dns.TypeAAAA), 512, dns.RcodeSuccess, nil, false},
		{"AAAA of an IPv4-only name", query("v4only.test.", dns.TypeAAAA), 512, dns.RcodeSuccess, nil, false},
		{"AAAA of an unknown name", query("nowhere.test.", dns.TypeAAAA), 512, dns.RcodeNameError, nil, false},
		{"A of an IPv6-only name", query("v6only.test.", dns.TypeA), 512, dns.RcodeSuccess, nil, false},
		{"unknown name", query("nowhere.test.", dns.TypeA), 512, dns.RcodeNameError, nil, false},
		{"upstream timeout", query("slow.test.", dns.TypeA), 512, dns.RcodeServerFailure, nil, false},
		{"CNAME", query("alias.test.", dns.TypeCNAME), 512, dns.RcodeSuccess, []string{"both.test."}, false},
		{"no CNAME", query("both.test.", dns.TypeCNAME), 512, dns.RcodeSuccess, nil, false},
		{"MX", query("both.test.", dns.TypeMX), 512, dns.RcodeSuccess, []string{"10 mail.test."}, false},
		{"NS", query("test.", dns.TypeNS), 512, dns.RcodeSuccess, []string{"ns1.test."}, false},
		{"SRV", query("_http._tcp.test.", dns.TypeSRV), 512, dns.RcodeSuccess, []string{"1 5 8080 srv.test."}, false},
		{"TXT split at 255", query("both.test.", dns.TypeTXT), 1232, dns.RcodeSuccess, []string{`"short"`, `"` + strings.Repeat("x", 255) + `" "` + strings.Repeat("x", 45) + `"`}, false},
		{"PTR v4", query("1.2.0.192.in-addr.arpa.", dns.TypePTR), 512, dns.RcodeSuccess, []string{"both.test."}, false},
		{"PTR v6", query("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", dns.TypePTR), 512, dns.RcodeSuccess, []string{"both.test."}, false},
		{"PTR of a bad name", query("1.2.in-addr.arpa.", dns.TypePTR), 512, dns.RcodeSuccess, nil, false},
		{"type the host cannot look up", query("both.test.", dns.TypeHTTPS), 512, dns.RcodeSuccess, nil, false},
		{"100 addresses over 512-byte UDP", query("many.test.", dns.TypeA), 512, dns.RcodeSuccess, nil, true},
		{"not a query", notQuery, 512, dns.RcodeNotImplemented, nil, false},
		{"two questions", twoQuestions, 512, dns.RcodeFormatError, nil, false},
		{"class CH", chaos, 512, dns.RcodeNotImplemented, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := h.answer(tc.req, tc.size)
			if m.Rcode != tc.rcode || m.Id != tc.req.Id || !m.Response || !m.RecursionAvailable {
				t.Fatalf("rcode %s id %d response %v ra %v, want %s id %d", dns.RcodeToString[m.Rcode], m.Id, m.Response, m.RecursionAvailable, dns.RcodeToString[tc.rcode], tc.req.Id)
			}
			b, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tc.size {
				t.Errorf("answer of %d bytes, want at most %d", len(b), tc.size)
			}
			if m.Truncated != tc.tc {
				t.Errorf("TC %v, want %v", m.Truncated, tc.tc)
			}
			if tc.tc {
				return
			}
			var got []string
			for _, rr := range m.Answer {
				if rr.Header().Ttl != dnsTTL || rr.Header().Name != tc.req.Question[0].Name {
					t.Errorf("header %v", rr.Header())
				}
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("answers %q, want %q", got, tc.want)
			}
		})
	}
}

// An EDNS0 query gets an OPT record back and up to the size it offers.
func TestDNSEDNS0(t *testing.T) {
	req := query("many.test.", dns.TypeA)
	req.SetEdns0(4096, false)
	if got := udpAnswerSize(req); got != dns.DefaultMsgSize {
		t.Fatalf("UDP size %d for a 4096-byte EDNS0 buffer, want %d", got, dns.DefaultMsgSize)
	}
	if got := udpAnswerSize(query("x.", dns.TypeA)); got != dns.MinMsgSize {
		t.Fatalf("UDP size %d without EDNS0, want %d", got, dns.MinMsgSize)
	}
	m := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}.answer(req, udpAnswerSize(req))
	if m.IsEdns0() == nil || m.Truncated || len(m.Answer) != 100 {
		t.Fatalf("OPT %v TC %v, %d answers, want OPT, no TC and 100", m.IsEdns0(), m.Truncated, len(m.Answer))
	}
}

// FuzzDNSAnswer: whatever the guest sends the DNS server, once miekg/dns
// has parsed it, the answer packs and fits.
func FuzzDNSAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{query("both.test.", dns.TypeA), query("many.test.", dns.TypeA), query("1.2.0.192.in-addr.arpa.", dns.TypePTR), query("x.ip6.arpa.", dns.TypePTR)} {
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req dns.Msg
		if req.Unpack(b) != nil {
			return
		}
		size := udpAnswerSize(&req)
		m := h.answer(&req, size)
		out, err := m.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
		if len(out) > size {
			t.Fatalf("answer of %d bytes, want at most %d", len(out), size)
		}
	})
}

func TestReverseAddr(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "" for not an address
	}{
		{"4.3.2.1.in-addr.arpa.", "1.2.3.4"},
		{"4.3.2.1.IN-ADDR.ARPA", "1.2.3.4"},
		{"3.2.1.in-addr.arpa.", ""},
		{"256.3.2.1.in-addr.arpa.", ""},
		{"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", "4321:0:1:2:3:4:567:89ab"},
		{"x.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa.", ""},
		{"a.ip6.arpa.", ""},
		{"example.com.", ""},
	} {
		ip, ok := reverseAddr(tc.name)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tc.want {
			t.Errorf("reverseAddr(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// blockingLookup holds every address lookup until release is closed.
type blockingLookup struct {
	fakeLookup
	started chan struct{}
	release chan struct{}
}

func (b blockingLookup) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	b.started <- struct{}{}
	<-b.release
	return b.fakeLookup.LookupNetIP(ctx, network, host)
}

// A guest flooding the server gets SERVFAIL beyond dnsMaxLookups lookups
// in flight, at once, and answers again once they finish.
func TestDNSLookupBound(t *testing.T) {
	b := blockingLookup{started: make(chan struct{}, dnsMaxLookups), release: make(chan struct{})}
	h := dnsHandler{ctx: context.Background(), lookup: b, slots: make(chan struct{}, dnsMaxLookups)}
	done := make(chan int, dnsMaxLookups)
	for range dnsMaxLookups {
		go func() { done <- h.answer(query("both.test.", dns.TypeA), 512).Rcode }()
	}
	for range dnsMaxLookups {
		<-b.started
	}
	if rc := h.answer(query("both.test.", dns.TypeA), 512).Rcode; rc != dns.RcodeServerFailure {
		t.Fatalf("lookup %d: rcode %s, want SERVFAIL", dnsMaxLookups+1, dns.RcodeToString[rc])
	}
	close(b.release)
	for range dnsMaxLookups {
		if rc := <-done; rc != dns.RcodeSuccess {
			t.Fatalf("held lookup: rcode %s", dns.RcodeToString[rc])
		}
	}
	if m := h.answer(query("both.test.", dns.TypeA), 512); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 2 {
		t.Fatalf("after the flood: rcode %s, %d answers", dns.RcodeToString[m.Rcode], len(m.Answer))
	}
}
