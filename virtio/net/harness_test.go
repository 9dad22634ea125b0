package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const (
	testBase = 0x10_0000
	testRAM  = 4 << 20
	// testData is each driver's data area: room for a dozen maximum-size
	// frames.
	testData   = 1<<20 + 512<<10
	testQSize  = 256
	baseFeat   = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureIndirectDesc
	eventIdx   = 1 << virtio.FeatureEventIdx
	mergeable  = 1 << FeatureMrgRxbuf
	waitLimit  = 5 * time.Second
	quietLimit = 50 * time.Millisecond
)

// harness is a device with its two queues driven by virtiotest drivers.
type harness struct {
	t        testing.TB
	features uint64
	mem      *virtiotest.Mem
	rx, tx   *virtiotest.Driver
	queues   []*virtio.Queue
	rxn, txn *virtiotest.Notifier
	irq      *virtiotest.Interrupt
	dev      *Device
	be       *seqBackend
	vec      *vecBackend // be with WriteVectors, when the device was given that
	peer     *os.File
	fails    chan error

	mu   sync.Mutex
	logs []string
}

// newHarness builds a device on a socketpair backend with its queues set
// up for features, not yet activated.
func newHarness(t testing.TB, features uint64, o Options) *harness {
	t.Helper()
	return newHarnessOn(t, features, o, 0)
}

// newVecHarness is newHarness with a backend that has WriteVectors for
// up to maxVec buffers.
func newVecHarness(t testing.TB, features uint64, o Options, maxVec int) *harness {
	t.Helper()
	return newHarnessOn(t, features, o, maxVec)
}

func newHarnessOn(t testing.TB, features uint64, o Options, maxVec int) *harness {
	t.Helper()
	be, peer := newSeqBackend(t)
	h := &harness{t: t, features: features, be: be, peer: peer, fails: make(chan error, 16)}
	var b Backend = be
	if maxVec > 0 {
		h.vec = &vecBackend{seqBackend: be, max: maxVec}
		b = h.vec
	}
	o.Logf = func(format string, args ...any) {
		h.mu.Lock()
		h.logs = append(h.logs, format)
		h.mu.Unlock()
	}
	h.dev = New(b, o)
	h.mem = virtiotest.NewMem(testBase, testRAM)
	var err error
	if h.rx, err = virtiotest.NewDriver(h.mem, testQSize, testBase, testData); err != nil {
		t.Fatal(err)
	}
	if h.tx, err = virtiotest.NewDriver(h.mem, testQSize, h.rx.End(), testData); err != nil {
		t.Fatal(err)
	}
	for _, m := range h.dev.QueueMax() {
		h.queues = append(h.queues, virtio.NewQueue(m))
	}
	h.setupQueues()
	h.rxn, h.txn = virtiotest.NewNotifier(), virtiotest.NewNotifier()
	h.irq = virtiotest.NewInterrupt()
	t.Cleanup(func() {
		h.dev.Reset()
		if err := h.mem.CheckGuards(); err != nil {
			t.Error(err)
		}
	})
	return h
}

// setupQueues does what the transport does when the driver enables the
// queues.
func (h *harness) setupQueues() {
	h.t.Helper()
	for i, drv := range []*virtiotest.Driver{h.rx, h.tx} {
		err := h.queues[i].Setup(h.mem, drv.Config(), h.features&eventIdx != 0, h.features&(1<<virtio.FeatureIndirectDesc) != 0)
		if err != nil {
			h.t.Fatalf("queue %d: %v", i, err)
		}
	}
}

func (h *harness) env() virtio.Env {
	return virtio.Env{
		Features:  h.features,
		Mem:       h.mem,
		Queues:    h.queues,
		Notifiers: []virtio.Notifier{h.rxn, h.txn},
		Interrupt: h.irq.Trigger,
		Fail: func(err error) {
			select {
			case h.fails <- err:
			default:
			}
		},
	}
}

// activate starts the device and waits for both workers to settle: TX
// asleep on its notifier, RX parked in its first Read.
func (h *harness) activate() {
	h.t.Helper()
	reads := h.be.readCalls()
	if err := h.dev.Activate(h.env()); err != nil {
		h.t.Fatalf("Activate: %v", err)
	}
	h.txIdle()
	h.be.waitReads(h.t, reads+1)
}

// resetLikeTransport resets the device and then the queues and drivers,
// as a driver writing status 0 makes the transport do.
func (h *harness) resetLikeTransport() {
	h.dev.Reset()
	for _, q := range h.queues {
		q.Reset()
	}
	h.rx.Reset()
	h.tx.Reset()
}

func (h *harness) txIdle() {
	h.t.Helper()
	if !h.txn.Idle(waitLimit) {
		h.t.Fatal("TX worker did not go idle")
	}
}

func (h *harness) rxIdle() {
	h.t.Helper()
	if !h.rxn.Idle(waitLimit) {
		h.t.Fatal("RX worker did not start waiting for buffers")
	}
}

// send puts one frame (header included) on the backend for RX.
func (h *harness) send(frame []byte) {
	h.t.Helper()
	if _, err := h.peer.Write(frame); err != nil {
		h.t.Fatalf("peer write: %v", err)
	}
}

// recv reads the next frame the device wrote, or fails the test.
func (h *harness) recv() []byte {
	h.t.Helper()
	buf := make([]byte, bufSize+100)
	h.peer.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := h.peer.Read(buf)
	if err != nil {
		h.t.Fatalf("peer read: %v", err)
	}
	return buf[:n]
}

// quiet checks that the device wrote no frame.
func (h *harness) quiet() {
	h.t.Helper()
	buf := make([]byte, bufSize+100)
	h.peer.SetReadDeadline(time.Now().Add(quietLimit))
	if n, err := h.peer.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		h.t.Fatalf("device wrote %d bytes (err %v), want nothing", n, err)
	}
}

type used struct {
	head uint16
	n    uint32
}

// drainUsed consumes every used element.
func drainUsed(d *virtiotest.Driver) []used {
	var out []used
	for {
		head, n, ok := d.Used()
		if !ok {
			return out
		}
		out = append(out, used{head, n})
	}
}

// frameOf returns a frame of n bytes, header included: a recognisable
// header whose num_buffers holds 0xeeee (the device must overwrite it on
// RX), then a pattern depending on seed.
func frameOf(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i*7) + seed
	}
	if n >= HeaderSize {
		// flags 0: a driver without GUEST_CSUM, as most tests
		// negotiate, gets 0 whatever the backend says (TestRXFlags).
		copy(f, []byte{0, 0, 0x36, 0, 0x40, 0x05, 0x22, 0, 0x10, 0})
		f[hdrNumBuffers], f[hdrNumBuffers+1] = 0xee, 0xee
	}
	return f
}

// withNumBuffers is frame with num_buffers set to k, as the driver should
// see it.
func withNumBuffers(frame []byte, k uint16) []byte {
	f := bytes.Clone(frame)
	binary.LittleEndian.PutUint16(f[hdrNumBuffers:], k)
	return f
}

func r(data []byte) virtiotest.Buf { return virtiotest.R(data) }
func w(n int) virtiotest.Buf       { return virtiotest.W(n) }

// deliver sends frames for RX and waits until the worker has read them
// all and parked in its next Read, so every one was placed or dropped.
func (h *harness) deliver(frames ...[]byte) {
	h.t.Helper()
	n := h.be.readCalls()
	for _, f := range frames {
		h.send(f)
	}
	h.be.waitReads(h.t, n+len(frames))
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func timeout() <-chan time.Time { return time.After(waitLimit) }
