package iotool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// tcpBuffer is the size of each read and write: large enough that system
// calls are not what limits a transfer, small enough for a tiny guest.
const tcpBuffer = 1 << 20

// TCPRecv accepts one connection on ln, reads it to EOF, closes it and ln,
// and reports what arrived. The clock runs from the accept to EOF. ctx
// bounds the whole run, the wait for the sender included.
func TCPRecv(ctx context.Context, ln net.Listener) (Result, error) {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Result{}, fmt.Errorf("tcp-recv: accept on %s: %w", ln.Addr(), err)
	}
	defer c.Close()
	stopConn := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stopConn()

	start := time.Now()
	h := sha256.New()
	n, err := io.CopyBuffer(h, c, make([]byte, tcpBuffer))
	secs := time.Since(start).Seconds()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return Result{}, fmt.Errorf("tcp-recv: from %s after %d bytes: %w", c.RemoteAddr(), n, err)
	}
	// Closing tells the sender, who waits for it, that everything
	// arrived.
	if err := c.Close(); err != nil {
		return Result{}, fmt.Errorf("tcp-recv: close: %w", err)
	}
	r := Result{Op: "tcp-recv"}
	r.add("bytes", "%d", n)
	r.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	addRate(&r, n, secs)
	return r, nil
}

// TCPSendOptions configures TCPSend.
type TCPSendOptions struct {
	Addr  string // host:port
	Bytes int64
	Seed  uint64 // of the Stream sent; 0 means DefaultSeed
	// ConnectTimeout bounds the retries of refused or unreachable
	// connections: under nesting the receiver can take a while to
	// listen. 0 means 30 s.
	ConnectTimeout time.Duration
}

// TCPSend connects to o.Addr, sends o.Bytes of the Stream, half-closes and
// waits for the receiver to close in turn, so that a success means the
// receiver read everything. The clock runs from the connection to that
// close; ctx bounds the whole run.
func TCPSend(ctx context.Context, o TCPSendOptions) (Result, error) {
	if o.Bytes < 0 {
		return Result{}, fmt.Errorf("tcp-send: negative byte count %d", o.Bytes)
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	c, err := dialRetry(ctx, o.Addr, o.ConnectTimeout)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	start := time.Now()
	s := NewStream(o.Seed)
	h := sha256.New()
	buf := make([]byte, tcpBuffer)
	var sent int64
	for sent < o.Bytes {
		chunk := buf[:min(o.Bytes-sent, int64(len(buf)))]
		s.Read(chunk)
		h.Write(chunk)
		n, err := c.Write(chunk)
		sent += int64(n)
		if err != nil {
			return Result{}, fmt.Errorf("tcp-send: to %s after %d bytes: %w", o.Addr, sent, ctxErr(ctx, err))
		}
	}
	if err := c.CloseWrite(); err != nil {
		return Result{}, fmt.Errorf("tcp-send: to %s: shut down writing: %w", o.Addr, ctxErr(ctx, err))
	}
	// The receiver sends nothing; EOF is its close.
	extra, err := io.Copy(io.Discard, c)
	if err != nil {
		return Result{}, fmt.Errorf("tcp-send: to %s: waiting for the receiver to close: %w", o.Addr, ctxErr(ctx, err))
	}
	if extra != 0 {
		return Result{}, fmt.Errorf("tcp-send: to %s: the receiver sent %d bytes back", o.Addr, extra)
	}
	secs := time.Since(start).Seconds()
	r := Result{Op: "tcp-send"}
	r.add("bytes", "%d", sent)
	r.add("sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	addRate(&r, sent, secs)
	return r, nil
}

// dialRetry connects, retrying for up to timeout: a refused connection
// (receiver not listening yet) or a missing route (interface not up yet)
// is expected at first under nesting.
func dialRetry(ctx context.Context, addr string, timeout time.Duration) (*net.TCPConn, error) {
	deadline := time.Now().Add(timeout)
	var d net.Dialer
	for {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tcp-send: connect %s: %w", addr, ctx.Err())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tcp-send: connect %s: still failing after %v: %w", addr, timeout, err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("tcp-send: connect %s: %w", addr, ctx.Err())
		}
	}
}

// ctxErr prefers the context's reason: a deadline set to stop a transfer
// shows up as an i/o timeout otherwise.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && err != nil {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

// addRate appends seconds= and mibps= (MiB per second).
func addRate(r *Result, bytes int64, secs float64) {
	r.add("seconds", "%.3f", secs)
	mibps := 0.0
	if secs > 0 {
		mibps = float64(bytes) / (1 << 20) / secs
	}
	r.add("mibps", "%.2f", mibps)
}
