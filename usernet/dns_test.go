package usernet

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
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

func (fakeLookup) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if name != "both.test." {
		// As Go's resolver says it for a name without MX records,
		// whether the name exists or not.
		return nil, errNotFound
	}
	return []*net.MX{{Host: "mail.test", Pref: 10}}, nil
}

func (fakeLookup) LookupNS(context.Context, string) ([]*net.NS, error) {
	// The second cannot be written in a message: a label over 63 bytes.
	return []*net.NS{{Host: "ns1.test."}, {Host: strings.Repeat("n", 64) + ".test."}}, nil
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

// ask is h's reply to req over UDP (or TCP), unpacked by miekg/dns, an
// implementation apart from the server's. It fails the test if the reply
// does not unpack or is larger than the querier allows.
func ask(t *testing.T, h dnsHandler, req *dns.Msg, tcp bool) *dns.Msg {
	t.Helper()
	b, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := h.reply(b, tcp)
	if r == nil {
		t.Fatal("no reply")
	}
	limit := dns.MaxMsgSize
	if !tcp {
		limit = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			limit = max(limit, min(int(opt.UDPSize()), dnsMaxUDPSize))
		}
	}
	if len(r) > limit {
		t.Errorf("reply of %d bytes, want at most %d", len(r), limit)
	}
	var m dns.Msg
	if err := m.Unpack(r); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return &m
}

func TestDNSAnswer(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	notQuery := query("both.test.", dns.TypeA)
	notQuery.Opcode = dns.OpcodeUpdate
	twoQuestions := query("both.test.", dns.TypeA)
	twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
	chaos := query("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	noRD := query("both.test.", dns.TypeA)
	noRD.RecursionDesired = false
	cd := query("both.test.", dns.TypeA)
	cd.CheckingDisabled = true
	edns := func(m *dns.Msg, size uint16) *dns.Msg {
		m.SetEdns0(size, false)
		return m
	}
	for _, tc := range []struct {
		name  string
		req   *dns.Msg
		tcp   bool
		rcode int
		want  []string // the answers' data, in order
		tc    bool
	}{
		{"A", query("both.test.", dns.TypeA), false, dns.RcodeSuccess, []string{"192.0.2.1", "192.0.2.2"}, false},
		// No IPv6 on this network: AAAA is NODATA, but NXDOMAIN for
		// a name that does not exist.
		{"AAAA", query("both.test.", dns.TypeAAAA), false, dns.RcodeSuccess, nil, false},
		{"AAAA of an IPv4-only name", query("v4only.test.", dns.TypeAAAA), false, dns.RcodeSuccess, nil, false},
		{"AAAA of an unknown name", query("nowhere.test.", dns.TypeAAAA), false, dns.RcodeNameError, nil, false},
		{"A of an IPv6-only name", query("v6only.test.", dns.TypeA), false, dns.RcodeSuccess, nil, false},
		{"unknown name", query("nowhere.test.", dns.TypeA), false, dns.RcodeNameError, nil, false},
		{"upstream timeout", query("slow.test.", dns.TypeA), false, dns.RcodeServerFailure, nil, false},
		{"CNAME", query("alias.test.", dns.TypeCNAME), false, dns.RcodeSuccess, []string{"both.test."}, false},
		{"no CNAME", query("both.test.", dns.TypeCNAME), false, dns.RcodeSuccess, nil, false},
		{"MX", query("both.test.", dns.TypeMX), false, dns.RcodeSuccess, []string{"10 mail.test."}, false},
		{"MX of a name with addresses only", query("v4only.test.", dns.TypeMX), false, dns.RcodeSuccess, nil, false},
		{"MX of an unknown name", query("nowhere.test.", dns.TypeMX), false, dns.RcodeNameError, nil, false},
		{"recursion not desired", noRD, false, dns.RcodeSuccess, []string{"192.0.2.1", "192.0.2.2"}, false},
		{"checking disabled", cd, false, dns.RcodeSuccess, []string{"192.0.2.1", "192.0.2.2"}, false},
		{"NS, without the one no message holds", query("test.", dns.TypeNS), false, dns.RcodeSuccess, []string{"ns1.test."}, false},
		{"SRV", query("_http._tcp.test.", dns.TypeSRV), false, dns.RcodeSuccess, []string{"1 5 8080 srv.test."}, false},
		{"TXT split at 255", edns(query("both.test.", dns.TypeTXT), 1232), false, dns.RcodeSuccess, []string{`"short"`, `"` + strings.Repeat("x", 255) + `" "` + strings.Repeat("x", 45) + `"`}, false},
		{"PTR v4", query("1.2.0.192.in-addr.arpa.", dns.TypePTR), false, dns.RcodeSuccess, []string{"both.test."}, false},
		{"PTR v6", query("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", dns.TypePTR), false, dns.RcodeSuccess, []string{"both.test."}, false},
		{"PTR of a bad name", query("1.2.in-addr.arpa.", dns.TypePTR), false, dns.RcodeSuccess, nil, false},
		{"type the host cannot look up", query("both.test.", dns.TypeHTTPS), false, dns.RcodeSuccess, nil, false},
		{"100 addresses over 512-byte UDP", query("many.test.", dns.TypeA), false, dns.RcodeSuccess, nil, true},
		{"100 addresses over TCP", query("many.test.", dns.TypeA), true, dns.RcodeSuccess, nil, false},
		{"not a query", notQuery, false, dns.RcodeNotImplemented, nil, false},
		{"two questions", twoQuestions, false, dns.RcodeFormatError, nil, false},
		{"class CH", chaos, false, dns.RcodeNotImplemented, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Id = 0xbeef
			m := ask(t, h, tc.req, tc.tcp)
			if m.Rcode != tc.rcode || m.Id != tc.req.Id || !m.Response || !m.RecursionAvailable || m.RecursionDesired != tc.req.RecursionDesired || m.CheckingDisabled != tc.req.CheckingDisabled {
				t.Fatalf("rcode %s id %d response %v ra %v rd %v cd %v, want %s id %d rd %v cd %v", dns.RcodeToString[m.Rcode], m.Id, m.Response, m.RecursionAvailable, m.RecursionDesired, m.CheckingDisabled,
					dns.RcodeToString[tc.rcode], tc.req.Id, tc.req.RecursionDesired, tc.req.CheckingDisabled)
			}
			if len(m.Question) != 1 || m.Question[0] != tc.req.Question[0] {
				t.Errorf("question %v, want %v", m.Question, tc.req.Question[0])
			}
			if m.Truncated != tc.tc {
				t.Errorf("TC %v, want %v", m.Truncated, tc.tc)
			}
			if tc.tc {
				// Cut short: the answers that fit, all of them whole.
				if len(m.Answer) == 0 || len(m.Answer) >= 100 {
					t.Errorf("%d answers in a truncated reply, want some but not all", len(m.Answer))
				}
				return
			}
			if tc.want == nil && strings.HasPrefix(tc.req.Question[0].Name, "many.") {
				if len(m.Answer) != 100 {
					t.Errorf("%d answers, want 100", len(m.Answer))
				}
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

// An EDNS0 query gets an OPT record back, and up to the size it offers,
// at most dnsMaxUDPSize; one without gets none and 512 bytes.
func TestDNSEDNS0(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	for _, tc := range []struct {
		offer   uint16 // 0: no OPT record
		opt     uint16 // the size the reply's OPT record gives; 0: none
		answers int
		tc      bool
	}{
		{0, 0, 30, true},
		// 27 bytes of header and question, 11 of OPT, 16 per address.
		{256, 512, 29, true},
		{1232, 1232, 74, true},
		{4096, 4096, 100, false},
		{65535, 4096, 100, false},
	} {
		req := query("many.test.", dns.TypeA)
		if tc.offer > 0 {
			req.SetEdns0(tc.offer, false)
		}
		m := ask(t, h, req, false)
		var opt uint16
		if o := m.IsEdns0(); o != nil {
			opt = o.UDPSize()
		}
		if opt != tc.opt || m.Truncated != tc.tc || len(m.Answer) != tc.answers {
			t.Errorf("offer %d: OPT %d TC %v, %d answers; want OPT %d TC %v, %d answers", tc.offer, opt, m.Truncated, len(m.Answer), tc.opt, tc.tc, tc.answers)
		}
	}
}

// What is not a query gets no reply; a query the parser cannot read past
// its header gets FORMERR.
func TestDNSMalformed(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	good, err := query("both.test.", dns.TypeA).Pack()
	if err != nil {
		t.Fatal(err)
	}
	response := query("both.test.", dns.TypeA)
	response.Response = true
	resp, err := response.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		msg   []byte
		rcode int // -1: no reply
	}{
		{"empty", nil, -1},
		{"short of a header", good[:11], -1},
		{"a response", resp, -1},
		{"question cut short", good[:len(good)-2], dns.RcodeFormatError},
		{"header only, one question counted", good[:12], dns.RcodeFormatError},
		{"no question", append(append([]byte{}, good[:4]...), make([]byte, 8)...), dns.RcodeFormatError},
		{"ten thousand questions", manyQuestions(10000), dns.RcodeFormatError},
	} {
		r := h.reply(tc.msg, false)
		if tc.rcode < 0 {
			if r != nil {
				t.Errorf("%s: reply %x, want none", tc.name, r)
			}
			continue
		}
		var m dns.Msg
		if err := m.Unpack(r); err != nil {
			t.Fatalf("%s: reply does not unpack: %v", tc.name, err)
		}
		if m.Rcode != tc.rcode || !m.Response {
			t.Errorf("%s: rcode %s, want %s", tc.name, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
		}
	}
}

// manyQuestions is a query of n questions for the same name, each after
// the first a compression pointer to it: six bytes a question.
func manyQuestions(n int) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00, byte(n >> 8), byte(n), 0, 0, 0, 0, 0, 0}
	b = append(b, 1, 'x', 0, 0, 1, 0, 1) // x. A IN, at offset 12
	for range n - 1 {
		b = append(b, 0xc0, 12, 0, 1, 0, 1)
	}
	return b
}

// A query of many questions is answered FORMERR without parsing them all
// (RFC 9619): parsed, ten thousand would cost some 2.6 MB.
func TestDNSManyQuestionsCheap(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	msg := manyQuestions(10000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := h.reply(msg, true)
	runtime.ReadMemStats(&after)
	if r == nil {
		t.Fatal("no reply")
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
		t.Fatalf("answering a query of 10000 questions allocated %d bytes, want under 64 KiB", d)
	}
}

// Over TCP each message has its length before it, and one connection
// carries queries one after another until the querier closes it.
func TestDNSServeTCP(t *testing.T) {
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	client, served := pipeTCP(h)
	c := &dns.Conn{Conn: client}
	for _, name := range []string{"both.test.", "many.test."} {
		if err := c.WriteMsg(query(name, dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		m, err := c.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if m.Truncated || len(m.Answer) == 0 {
			t.Fatalf("%s over TCP: TC %v, %d answers", name, m.Truncated, len(m.Answer))
		}
	}
	client.Close()
	if !served() {
		t.Fatal("serveTCP did not return when the querier closed the connection")
	}

	// A connection that stays silent is closed after the idle time, as
	// is one that sends a response.
	h.idle = 50 * time.Millisecond
	response := query("both.test.", dns.TypeA)
	response.Response = true
	for _, send := range []*dns.Msg{nil, response} {
		client, served := pipeTCP(h)
		if send != nil {
			if err := (&dns.Conn{Conn: client}).WriteMsg(send); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.Read(make([]byte, 1)); err == nil {
			t.Fatalf("sent %v: the server replied", send != nil)
		}
		if !served() {
			t.Fatalf("sent %v: serveTCP did not return", send != nil)
		}
		client.Close()
	}
}

// FuzzDNSAnswer: whatever the guest sends the DNS server, over UDP or
// TCP, the reply is none or a message that miekg/dns unpacks, fits what
// the querier allows and answers the query's ID.
func FuzzDNSAnswer(f *testing.F) {
	for _, q := range []*dns.Msg{query("both.test.", dns.TypeA), query("many.test.", dns.TypeA), query("1.2.0.192.in-addr.arpa.", dns.TypePTR), query("x.ip6.arpa.", dns.TypePTR), query("both.test.", dns.TypeTXT)} {
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		q.SetEdns0(1232, false)
		if b, err = q.Pack(); err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}}
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		r := h.reply(b, tcp)
		if r == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(r); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		// Over UDP, 512 bytes unless the query offered more; the
		// reply's OPT record, there only if the query had one, says
		// what the server took the offer to be.
		limit := dnsMaxSize
		if !tcp {
			limit = dnsMinUDPSize
			if opt := m.IsEdns0(); opt != nil {
				limit = int(opt.UDPSize())
				if limit < dnsMinUDPSize || limit > dnsMaxUDPSize {
					t.Fatalf("reply's OPT offers %d bytes", limit)
				}
			}
		}
		if len(r) > limit {
			t.Fatalf("reply of %d bytes, want at most %d", len(r), limit)
		}
		if m.Id != uint16(b[0])<<8|uint16(b[1]) || !m.Response {
			t.Fatalf("reply id %d response %v to a query of id %d", m.Id, m.Response, uint16(b[0])<<8|uint16(b[1]))
		}
	})
}

// FuzzDNSServeTCP: whatever bytes the guest sends down a TCP connection
// to the DNS server, the server answers each message with a framed one
// and ends the connection once the bytes stop, without hanging.
func FuzzDNSServeTCP(f *testing.F) {
	frame := func(msgs ...*dns.Msg) []byte {
		var out []byte
		for _, m := range msgs {
			b, err := m.Pack()
			if err != nil {
				f.Fatal(err)
			}
			out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
			out = append(out, b...)
		}
		return out
	}
	f.Add(frame(query("both.test.", dns.TypeA)))
	f.Add(frame(query("both.test.", dns.TypeA), query("many.test.", dns.TypeA), query("both.test.", dns.TypeTXT)))
	f.Add([]byte{0, 40, 1, 2})
	f.Add([]byte{0})
	h := dnsHandler{ctx: context.Background(), lookup: fakeLookup{}, idle: 20 * time.Millisecond}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, served := pipeTCP(h)
		defer client.Close()
		go client.Write(in) // fails once the server closes; the reader below sees that
		c := &dns.Conn{Conn: client}
		for {
			if _, err := c.ReadMsg(); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("the server neither answered nor closed the connection")
				}
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
					t.Fatalf("reply: %v", err)
				}
				break
			}
		}
		if !served() {
			t.Fatal("serveTCP did not return")
		}
	})
}

// pipeTCP runs h.serveTCP on one end of a pipe and returns the other,
// with a deadline of testTimeout, and served, which reports whether
// serveTCP returned within testTimeout.
func pipeTCP(h dnsHandler) (client net.Conn, served func() bool) {
	server, client := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.serveTCP(server)
		server.Close()
	}()
	client.SetDeadline(time.Now().Add(testTimeout))
	return client, func() bool {
		select {
		case <-done:
			return true
		case <-time.After(testTimeout):
			return false
		}
	}
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
		go func() {
			rc, _ := h.answer(dnsmessage.Question{Name: dnsmessage.MustNewName("both.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
			done <- int(rc)
		}()
	}
	for range dnsMaxLookups {
		<-b.started
	}
	if m := ask(t, h, query("both.test.", dns.TypeA), false); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("lookup %d: rcode %s, want SERVFAIL", dnsMaxLookups+1, dns.RcodeToString[m.Rcode])
	}
	close(b.release)
	for range dnsMaxLookups {
		if rc := <-done; rc != dns.RcodeSuccess {
			t.Fatalf("held lookup: rcode %s", dns.RcodeToString[rc])
		}
	}
	if m := ask(t, h, query("both.test.", dns.TypeA), false); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 2 {
		t.Fatalf("after the flood: rcode %s, %d answers", dns.RcodeToString[m.Rcode], len(m.Answer))
	}
}
