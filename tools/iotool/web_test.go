package iotool

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// A download from http-serve arrives whole, and the server stops after
// the responses it was asked for.
func TestHTTPServeGet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const n = 3<<20 + 17
	served := make(chan Result, 1)
	go func() {
		r, err := HTTPServe(ctx, ln, HTTPServeOptions{Bytes: n, Count: 2})
		if err != nil {
			t.Error(err)
		}
		served <- r
	}()
	for range 2 {
		r, err := HTTPGet(ctx, "http://"+ln.Addr().String()+"/x", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := r.Get("bytes"); b != "3145745" {
			t.Errorf("got %s", r)
		}
		if s, _ := r.Get("sha256"); s != StreamSHA256(DefaultSeed, n) {
			t.Errorf("got %s, want sha256=%s", r, StreamSHA256(DefaultSeed, n))
		}
	}
	if r := <-served; r.String() != "iotool: http-serve responses=2 bytes=3145745" {
		t.Errorf("server: %s", r)
	}
	if _, err := HTTPGet(ctx, "http://"+ln.Addr().String()+"/", 100*time.Millisecond); err == nil {
		t.Error("server still answering after its count")
	}
}

// dns-serve answers A for its name, nothing else for it, NXDOMAIN for
// other names, through Go's own resolver.
func TestDNSServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Result, 1)
	go func() {
		r, err := DNSServe(ctx, pc, "test.vmm", netip.MustParseAddr("192.0.2.7"))
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	defer lcancel()
	addrs, err := res.LookupNetIP(lctx, "ip4", "test.vmm.")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "192.0.2.7" {
		t.Fatalf("test.vmm: %v %v", addrs, err)
	}
	if addrs, err := res.LookupNetIP(lctx, "ip6", "test.vmm."); err == nil && len(addrs) > 0 {
		t.Errorf("AAAA: %v", addrs)
	}
	if _, err := res.LookupNetIP(lctx, "ip4", "other.vmm."); err == nil {
		t.Error("other.vmm resolved")
	}
	cancel()
	r := <-done
	if q, _ := r.Int("queries"); q < 3 {
		t.Errorf("result %s: fewer queries than lookups", r)
	}
	if a, _ := r.Get("answered"); a != "1" {
		t.Errorf("result %s, want answered=1", r)
	}
}

// FuzzDNSAnswer: any datagram gets a reply or an error, never a panic.
func FuzzDNSAnswer(f *testing.F) {
	f.Add([]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x03vmm\x00\x00\x01\x00\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, q []byte) {
		dnsAnswer(q, "test.vmm.", netip.MustParseAddr("192.0.2.7"))
	})
}
