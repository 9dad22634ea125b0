package iotool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// HTTPServeOptions configures HTTPServe.
type HTTPServeOptions struct {
	Bytes int64  // of the Stream every GET returns
	Seed  uint64 // of that Stream; 0 means DefaultSeed
	Count int    // complete responses after which the server stops
}

// HTTPServe answers every GET on ln with o.Bytes of the Stream until it
// has sent o.Count complete responses or ctx ends, and reports how many
// it sent. It is the far end of a guest's download (http-get) over a
// user-mode network.
func HTTPServe(ctx context.Context, ln net.Listener, o HTTPServeOptions) (Result, error) {
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	var served atomic.Int64
	done := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(o.Bytes, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := io.CopyBuffer(w, io.LimitReader(NewStream(o.Seed), o.Bytes), make([]byte, tcpBuffer)); err != nil {
			return
		}
		if served.Add(1) >= int64(o.Count) {
			select {
			case done <- struct{}{}:
			default:
			}
		}
	})}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-done:
		// Let the last response's bytes leave before closing.
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	case <-ctx.Done():
		srv.Close()
		err = fmt.Errorf("http-serve: %d of %d responses sent: %w", served.Load(), o.Count, ctx.Err())
	case err = <-errc:
		err = fmt.Errorf("http-serve: %w", err)
	}
	r := Result{Op: "http-serve"}
	r.add("responses", "%d", served.Load())
	r.add("bytes", "%d", o.Bytes)
	return r, err
}

// HTTPGet downloads url, retrying refused connections for connectTimeout
// (the server may still be starting), and reports the body's length,
// SHA-256 and rate. A status other than 200 is a failure.
func HTTPGet(ctx context.Context, url string, connectTimeout time.Duration) (Result, error) {
	client := &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialRetry(ctx, addr, connectTimeout)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Result{}, usageError("http-get: " + err.Error())
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("http-get: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("http-get: %s: %s", url, resp.Status)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, tcpBuffer))
	secs := time.Since(start).Seconds()
	if err != nil {
		return Result{}, fmt.Errorf("http-get: %s after %d bytes: %w", url, n, err)
	}
	r := Result{Op: "http-get"}
	r.add("bytes", "%d", n)
	r.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	addRate(&r, n, secs)
	return r, nil
}

// DNSServe answers DNS queries over UDP on pc until ctx ends: an A
// record of ip for name (its TTL 0), an empty answer for other types of
// name, NXDOMAIN for other names. It is the resolver a test gives the
// machine a user-mode network forwards to. The result counts queries and
// answers with an address.
func DNSServe(ctx context.Context, pc net.PacketConn, name string, ip netip.Addr) (Result, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	var queries, answered int
	buf := make([]byte, 1500)
	for {
		m, from, err := pc.ReadFrom(buf)
		if err != nil {
			r := Result{Op: "dns-serve"}
			r.add("queries", "%d", queries)
			r.add("answered", "%d", answered)
			if ctx.Err() != nil {
				return r, nil // the run's end, as asked
			}
			return r, fmt.Errorf("dns-serve: %w", err)
		}
		queries++
		reply, hit, err := dnsAnswer(buf[:m], name, ip)
		if err != nil {
			continue
		}
		if hit {
			answered++
		}
		pc.WriteTo(reply, from)
	}
}

// dnsAnswer builds the reply to one query (RFC 1035 §4.1).
func dnsAnswer(q []byte, name string, ip netip.Addr) ([]byte, bool, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, false, err
	}
	question, err := p.Question()
	if err != nil {
		return nil, false, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	match := strings.EqualFold(question.Name.String(), name)
	if !match {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false, err
	}
	if err := b.Question(question); err != nil {
		return nil, false, err
	}
	hit := match && question.Type == dnsmessage.TypeA && question.Class == dnsmessage.ClassINET
	if hit {
		if err := b.StartAnswers(); err != nil {
			return nil, false, err
		}
		err := b.AResource(dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET}, dnsmessage.AResource{A: ip.As4()})
		if err != nil {
			return nil, false, err
		}
	}
	out, err := b.Finish()
	return out, hit, err
}

// Resolve looks name's IPv4 addresses up through the system's resolver
// (/etc/resolv.conf) and reports them, comma-separated.
func Resolve(ctx context.Context, name string) (Result, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return Result{}, fmt.Errorf("resolve: %w", err)
	}
	if len(addrs) == 0 {
		return Result{}, errors.New("resolve: " + name + ": no IPv4 address")
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	r := Result{Op: "resolve"}
	r.add("name", "%s", name)
	r.add("addrs", "%s", strings.Join(s, ","))
	return r, nil
}
