package iotool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// ICMP for IPv4, RFC 792.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	icmpHeaderSize  = 8 // type, code, checksum, identifier, sequence
)

// pingPayload is what our requests carry after the header: a random
// token, so that replies to another pinger that happens to use our
// identifier (there are only 65536) are not counted.
const pingPayload = 16

// PingOptions configures Ping.
type PingOptions struct {
	Addr  string // IPv4 address
	Count int    // requests to send; 0 means 3
	// Timeout is how long to wait for each reply; 0 means 2 s.
	Timeout time.Duration
	// Interval is the least time between requests; 0 means 200 ms.
	Interval time.Duration
}

// Ping sends ICMP echo requests one at a time through a raw socket (which
// needs CAP_NET_RAW) and waits for each reply. Its error is nil only if at
// least one reply came; the Result is filled either way.
func Ping(ctx context.Context, o PingOptions) (Result, error) {
	if o.Count == 0 {
		o.Count = 3
	}
	if o.Count < 0 || o.Count > 1<<16 {
		return Result{}, fmt.Errorf("ping: count %d out of range", o.Count)
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Interval == 0 {
		o.Interval = 200 * time.Millisecond
	}
	ip, err := netip.ParseAddr(o.Addr)
	if err != nil || !ip.Is4() {
		return Result{}, fmt.Errorf("ping: %q is not an IPv4 address", o.Addr)
	}
	pc, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return Result{}, fmt.Errorf("ping: raw ICMP socket (needs CAP_NET_RAW): %w", err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()

	id := uint16(os.Getpid())
	var token [pingPayload]byte
	if _, err := rand.Read(token[:]); err != nil {
		return Result{}, fmt.Errorf("ping: random token: %w", err)
	}
	dst := &net.IPAddr{IP: ip.AsSlice()}
	req := make([]byte, icmpHeaderSize+pingPayload)
	buf := make([]byte, 1500)
	var replies int
	var rttSum, rttMax time.Duration
	var lastErr error
	for seq := 1; seq <= o.Count; seq++ {
		if ctx.Err() != nil {
			lastErr = ctx.Err()
			break
		}
		start := time.Now()
		encodeEcho(req, id, uint16(seq), token[:])
		if _, err := pc.WriteTo(req, dst); err != nil {
			// Typically "no route" while an interface comes up: keep
			// trying until the count runs out.
			lastErr = fmt.Errorf("ping: send to %s: %w", o.Addr, err)
		} else if rtt, err := awaitEcho(pc, buf, ip, id, uint16(seq), token[:], start, o.Timeout); err != nil {
			lastErr = err
		} else {
			replies++
			rttSum += rtt
			rttMax = max(rttMax, rtt)
		}
		if seq < o.Count {
			select {
			case <-time.After(time.Until(start.Add(o.Interval))):
			case <-ctx.Done():
			}
		}
	}
	r := Result{Op: "ping"}
	r.add("replies", "%d", replies)
	r.add("sent", "%d", o.Count)
	if replies > 0 {
		r.add("rtt_ms", "%.3f", float64(rttSum.Microseconds())/1000/float64(replies))
		r.add("rtt_max_ms", "%.3f", float64(rttMax.Microseconds())/1000)
		return r, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no replies")
	}
	return r, fmt.Errorf("ping %s: no replies to %d requests; last problem: %w", o.Addr, o.Count, lastErr)
}

// awaitEcho reads until the reply to (id, seq) arrives or the timeout
// passes. The raw socket sees every ICMP message for this host, including
// our own requests when pinging a local address.
func awaitEcho(pc net.PacketConn, buf []byte, from netip.Addr, id, seq uint16, token []byte, start time.Time, timeout time.Duration) (time.Duration, error) {
	if err := pc.SetReadDeadline(start.Add(timeout)); err != nil {
		return 0, fmt.Errorf("ping: %w", err)
	}
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("ping: waiting for reply %d from %s: %w", seq, from, err)
		}
		ipa, ok := addr.(*net.IPAddr)
		if !ok {
			continue
		}
		src, ok := netip.AddrFromSlice(ipa.IP)
		if !ok || src.Unmap() != from {
			continue
		}
		if isEchoReply(buf[:n], id, seq, token) {
			return time.Since(start), nil
		}
	}
}

// encodeEcho writes an echo request into b (header plus token).
func encodeEcho(b []byte, id, seq uint16, token []byte) {
	b[0], b[1] = icmpEchoRequest, 0
	binary.BigEndian.PutUint16(b[2:], 0)
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[icmpHeaderSize:], token)
	binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
}

// isEchoReply reports whether msg (an ICMP message without IP header) is
// the reply to our request (id, seq) with its token intact.
func isEchoReply(msg []byte, id, seq uint16, token []byte) bool {
	if len(msg) < icmpHeaderSize+len(token) {
		return false
	}
	if msg[0] != icmpEchoReply || msg[1] != 0 {
		return false
	}
	if inetChecksum(msg) != 0 {
		return false
	}
	if binary.BigEndian.Uint16(msg[4:]) != id || binary.BigEndian.Uint16(msg[6:]) != seq {
		return false
	}
	return string(msg[icmpHeaderSize:icmpHeaderSize+len(token)]) == string(token)
}

// inetChecksum is the Internet checksum (RFC 1071): the ones' complement
// of the ones' complement sum of 16-bit words. Over a message that
// includes its own checksum it is 0.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
