package iotool

import (
	"strings"
	"testing"
)

// ParseLast reads whatever a guest printed on its console.
func FuzzParseLast(f *testing.F) {
	f.Add("iotool: tcp-recv bytes=1 sha256=ab seconds=0.1 mibps=2\r\n$ ", "tcp-recv")
	f.Add("$ vmm-iotool tcp-send -addr x\r\niotool: tcp-send\r\n", "tcp-send")
	f.Add("iotool: ping replies=0 sent=3 rtt_ms=\niotool: ping", "ping")
	f.Fuzz(func(t *testing.T, out, op string) {
		r, err := ParseLast(out, op)
		if err != nil {
			return
		}
		if r.Op != op {
			t.Fatalf("asked for %q, got %q", op, r.Op)
		}
		// A parsed result prints as a line that parses to itself.
		line := r.String()
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("result line %q spans lines", line)
		}
		r2, err := ParseLast(line, op)
		if err != nil || r2.String() != line {
			t.Fatalf("reparse of %q: %q, %v", line, r2.String(), err)
		}
	})
}

// isEchoReply reads whatever arrives on the raw ICMP socket.
func FuzzIsEchoReply(f *testing.F) {
	token := []byte("0123456789abcdef")
	ok := make([]byte, icmpHeaderSize+len(token))
	encodeEcho(ok, 1, 2, token)
	ok[0] = icmpEchoReply
	ok[2], ok[3] = 0, 0
	c := inetChecksum(ok)
	ok[2], ok[3] = byte(c>>8), byte(c)
	f.Add(ok)
	f.Add([]byte{0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !isEchoReply(msg, 1, 2, token) {
			return
		}
		if msg[0] != icmpEchoReply || msg[5] != 1 || msg[7] != 2 || string(msg[8:24]) != string(token) || inetChecksum(msg) != 0 {
			t.Fatalf("accepted %x", msg)
		}
	})
}
