package console

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const (
	ramBase = 0x100000
	ramSize = 8 << 20
	wait    = 10 * time.Second
)

// rig is an activated device with a driver on each of its queues.
type rig struct {
	d      *Device
	mem    *virtiotest.Mem
	drv    [numQueues]*virtiotest.Driver
	q      [numQueues]*virtio.Queue
	n      [numQueues]*virtiotest.Notifier
	irq    *virtiotest.Interrupt
	failed chan error
}

// newRig activates d with all four queues set up, event index as asked.
func newRig(t testing.TB, d *Device, eventIdx bool) *rig {
	t.Helper()
	r := &rig{d: d, mem: virtiotest.NewMem(ramBase, ramSize), irq: virtiotest.NewInterrupt(), failed: make(chan error, 1)}
	features := d.Features()
	if !eventIdx {
		features &^= 1 << virtio.FeatureEventIdx
	}
	env := virtio.Env{
		Features:  features,
		Mem:       r.mem,
		Interrupt: r.irq.Trigger,
		Fail: func(err error) {
			select {
			case r.failed <- err:
			default:
			}
		},
	}
	for i, max := range d.QueueMax() {
		var err error
		at := uint64(ramBase + i*(2<<20))
		if r.drv[i], err = virtiotest.NewDriver(r.mem, max, at, 2<<20-64<<10); err != nil {
			t.Fatal(err)
		}
		r.q[i] = virtio.NewQueue(max)
		if err := r.q[i].Setup(r.mem, r.drv[i].Config(), eventIdx, true); err != nil {
			t.Fatal(err)
		}
		r.n[i] = virtiotest.NewNotifier()
		env.Queues = append(env.Queues, r.q[i])
		env.Notifiers = append(env.Notifiers, r.n[i])
	}
	if err := d.Activate(env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Reset)
	return r
}

// settle waits until every worker is idle in its Wait, which also orders
// what they did before the test's next look at the rings.
func (r *rig) settle(t testing.TB) {
	t.Helper()
	for _, q := range []int{queuePortTx, queueCtrlRx, queueCtrlTx} {
		if !r.n[q].Idle(wait) {
			t.Fatalf("queue %d's worker never went idle", q)
		}
	}
}

// send queues a control message from the driver and kicks.
func (r *rig) send(t testing.TB, c control) {
	t.Helper()
	if _, err := r.drv[queueCtrlTx].Add(virtiotest.R(appendControl(nil, c, ""))); err != nil {
		t.Fatal(err)
	}
	r.n[queueCtrlTx].Signal()
	r.settle(t)
}

// post offers n control receive buffers of 4 KiB and kicks.
func (r *rig) post(t testing.TB, n int) {
	t.Helper()
	for range n {
		if _, err := r.drv[queueCtrlRx].Add(virtiotest.W(4096)); err != nil {
			t.Fatal(err)
		}
	}
	r.n[queueCtrlRx].Signal()
	r.settle(t)
}

// received consumes the control messages the device sent.
func (r *rig) received(t testing.TB) []string {
	t.Helper()
	var out []string
	for {
		head, n, ok := r.drv[queueCtrlRx].Used()
		if !ok {
			return out
		}
		b := r.drv[queueCtrlRx].WrittenBytes(head, n)
		if len(b) < controlLen {
			t.Fatalf("control message of %d bytes", len(b))
		}
		s := describe(control{id: binary.LittleEndian.Uint32(b), event: binary.LittleEndian.Uint16(b[4:]), value: binary.LittleEndian.Uint16(b[6:])})
		if len(b) > controlLen {
			s += " " + string(b[controlLen:])
		}
		out = append(out, s)
	}
}

func describe(c control) string {
	name := map[uint16]string{eventDeviceAdd: "DEVICE_ADD", eventPortOpen: "PORT_OPEN", eventPortName: "PORT_NAME"}[c.event]
	if name == "" {
		name = "event-" + string(rune('0'+c.event))
	}
	return name + "(" + string(rune('0'+c.id)) + "," + string(rune('0'+c.value)) + ")"
}

func newDevice(t *testing.T, out *bytes.Buffer) *Device {
	t.Helper()
	d, err := New("vmm.job-stdout", out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The discovery Linux's driver runs at probe (virtio v1.2 §5.3.6.2.1):
// DEVICE_READY is answered with the port, PORT_READY with its name and
// the host's side open; answers wait for the driver's buffers.
func TestDiscovery(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		r := newRig(t, newDevice(t, &bytes.Buffer{}), eventIdx)
		r.post(t, 1)
		r.send(t, control{id: badID, event: eventDeviceReady, value: 1})
		if got := r.received(t); strings.Join(got, " ") != "DEVICE_ADD(0,0)" {
			t.Fatalf("after DEVICE_READY: %q", got)
		}
		// PORT_READY before the driver posts buffers for the answers.
		r.send(t, control{id: portID, event: eventPortReady, value: 1})
		if got := r.received(t); len(got) != 0 {
			t.Fatalf("answers without buffers: %q", got)
		}
		if eventIdx {
			// The device asks to be kicked for the driver's next
			// buffer: avail_event at the driver's avail index.
			drv := r.drv[queueCtrlRx]
			ev := binary.LittleEndian.Uint16(r.mem.Bytes(drv.UsedAddr()+4+8*uint64(drv.Size()), 2))
			if ev != drv.AvailIdx() {
				t.Errorf("control receive avail_event %d with answers pending, want %d", ev, drv.AvailIdx())
			}
		}
		r.post(t, 1)
		// The host side's state before the name that makes the port
		// appear in the guest's sysfs (reply's doc says why).
		if got := r.received(t); strings.Join(got, " ") != "PORT_OPEN(0,1)" {
			t.Fatalf("with one buffer: %q", got)
		}
		r.post(t, 4)
		if got := r.received(t); strings.Join(got, " ") != "PORT_NAME(0,0) vmm.job-stdout" {
			t.Fatalf("with more buffers: %q", got)
		}
		// The driver's used control transmit buffers all came back.
		for {
			if _, n, ok := r.drv[queueCtrlTx].Used(); !ok {
				break
			} else if n != 0 {
				t.Errorf("control transmit buffer used with %d bytes written", n)
			}
		}
		if r.drv[queueCtrlTx].Outstanding() != 0 {
			t.Errorf("%d control messages not returned", r.drv[queueCtrlTx].Outstanding())
		}
		if r.d.GuestOpen() {
			t.Error("port open before the guest opened it")
		}
		r.send(t, control{id: portID, event: eventPortOpen, value: 1})
		if !r.d.GuestOpen() {
			t.Error("PORT_OPEN 1 not seen")
		}
		r.send(t, control{id: portID, event: eventPortOpen, value: 0})
		if r.d.GuestOpen() {
			t.Error("PORT_OPEN 0 not seen")
		}
		r.d.Reset()
	}
}

// Messages that need no answer get none: failures, other ports, events
// only a device sends, messages cut short.
func TestControlIgnored(t *testing.T) {
	r := newRig(t, newDevice(t, &bytes.Buffer{}), true)
	r.post(t, 8)
	for _, c := range []control{
		{id: badID, event: eventDeviceReady, value: 0},
		{id: portID, event: eventPortReady, value: 0},
		{id: 1, event: eventPortReady, value: 1},
		{id: portID, event: eventDeviceAdd, value: 1},
		{id: portID, event: eventPortName, value: 1},
		{id: 1, event: eventPortOpen, value: 1},
		{id: portID, event: 99, value: 1},
	} {
		r.send(t, c)
	}
	if _, err := r.drv[queueCtrlTx].Add(virtiotest.R([]byte{0, 0, 0, 0, 0, 0, 1})); err != nil {
		t.Fatal(err)
	}
	r.n[queueCtrlTx].Signal()
	r.settle(t)
	if got := r.received(t); len(got) != 0 {
		t.Errorf("answers: %q", got)
	}
	if r.d.GuestOpen() {
		t.Error("another port's PORT_OPEN opened port 0")
	}
	select {
	case err := <-r.failed:
		t.Errorf("device failed: %v", err)
	default:
	}
}

// A driver repeating DEVICE_READY without posting buffers cannot make
// the device hold more than maxPending answers.
func TestControlPendingBounded(t *testing.T) {
	r := newRig(t, newDevice(t, &bytes.Buffer{}), true)
	for range maxPending + 10 {
		r.send(t, control{id: badID, event: eventDeviceReady, value: 1})
	}
	r.d.ctrlMu.Lock()
	n := len(r.d.pending)
	r.d.ctrlMu.Unlock()
	if n != maxPending {
		t.Errorf("%d pending answers, want %d", n, maxPending)
	}
	// The end of the host's input is not dropped with the answers: it
	// comes last, once the driver posts buffers.
	r.d.EndInput()
	r.post(t, maxPending+2)
	got := r.received(t)
	if len(got) != maxPending+1 || got[len(got)-1] != "PORT_OPEN(0,0)" {
		t.Errorf("after EndInput with the queue full the driver got %d messages ending %q, want %d ending PORT_OPEN(0,0)", len(got), got[len(got)-1:], maxPending+1)
	}
}

// What the guest writes to the port reaches the writer whole and in
// order, however the driver splits it into buffers and chains.
func TestOutput(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		var out bytes.Buffer
		r := newRig(t, newDevice(t, &out), eventIdx)
		var want []byte
		for i := range 40 {
			data := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*997%(32<<10))
			want = append(want, data...)
			var bufs []virtiotest.Buf
			for len(data) > 0 {
				n := min(len(data), 1+i*131%5000)
				bufs = append(bufs, virtiotest.R(data[:n]))
				data = data[n:]
			}
			if _, err := r.drv[queuePortTx].Add(bufs...); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				r.n[queuePortTx].Signal()
				r.settle(t)
				for {
					if _, n, ok := r.drv[queuePortTx].Used(); !ok {
						break
					} else if n != 0 {
						t.Fatalf("transmit buffer used with %d bytes written", n)
					}
				}
			}
		}
		r.n[queuePortTx].Signal()
		r.settle(t)
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("eventIdx %v: wrote %d bytes, want %d (first difference at %d)", eventIdx, out.Len(), len(want), firstDiff(out.Bytes(), want))
		}
		if r.d.Written() != uint64(len(want)) {
			t.Errorf("Written %d, want %d", r.d.Written(), len(want))
		}
		if r.irq.Count() == 0 {
			t.Error("no interrupt for used transmit buffers")
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// pacedWriter has room for limit bytes at a time until the test takes
// them; it is safe for the device's goroutines.
type pacedWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	queued int
	limit  int
	want   int
	notify []func()
	// overrun is set by a Write the writer had no room for.
	overrun bool
	// most is what the device said it writes on one yes (NotifyReady);
	// sinceYes counts the bytes written since Ready last said yes, and
	// maxSinceYes the most of them.
	most, sinceYes, maxSinceYes int
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queued+len(b) > p.limit {
		p.overrun = true
		return 0, errors.New("paced writer overrun: the device wrote without room")
	}
	p.queued += len(b)
	p.sinceYes += len(b)
	p.maxSinceYes = max(p.maxSinceYes, p.sinceYes)
	return p.buf.Write(b)
}

func (p *pacedWriter) Ready(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limit-p.queued >= n {
		p.sinceYes = 0
		return true
	}
	p.want = n
	return false
}

func (p *pacedWriter) NotifyReady(f func(), most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify = append(p.notify, f)
	p.most = most
}

// take empties the writer's room, as a host reader would, and tells the
// device.
func (p *pacedWriter) take() []byte {
	p.mu.Lock()
	b := append([]byte(nil), p.buf.Bytes()...)
	p.buf.Reset()
	p.queued, p.want = 0, 0
	fs := p.notify
	p.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return b
}

// refused says Ready said no since the last take: the device waits.
func (p *pacedWriter) refused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want > 0
}

func (p *pacedWriter) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Len()
}

// A writer without room holds the guest's buffers, not vmm: the chain
// stays unused (the guest's write sleeps) until the host takes bytes;
// nothing is dropped or written twice.
func TestOutputPaced(t *testing.T) {
	p := &pacedWriter{limit: 3 * maxPiece}
	d, err := New("p", p)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, d, true)
	want := bytes.Repeat([]byte("0123456789abcdef"), 10*maxPiece/16+3)
	if _, err := r.drv[queuePortTx].Add(virtiotest.R(want[:len(want)/2]), virtiotest.R(want[len(want)/2:])); err != nil {
		t.Fatal(err)
	}
	r.n[queuePortTx].Signal()
	var got []byte
	deadline := time.Now().Add(wait)
	for len(got) < len(want) && time.Now().Before(deadline) {
		if !p.refused() && len(got)+p.len() < len(want) {
			time.Sleep(time.Millisecond)
			continue
		}
		got = append(got, p.take()...)
	}
	r.settle(t)
	got = append(got, p.take()...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	if _, _, ok := r.drv[queuePortTx].Used(); !ok {
		t.Error("chain not completed once written")
	}
	if p.overrun {
		t.Error("the device wrote without room")
	}
	// What the device registered must cover what it writes on one yes,
	// or a queue shared with the job's UART lets the UART spend it.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.most <= 0 || p.maxSinceYes > p.most {
		t.Errorf("device registered %d bytes per yes and wrote up to %d after one", p.most, p.maxSinceYes)
	}
}

// Flush writes what the guest queued without a notification (the kick
// is on its way when the guest stops) and gives up with ctx, leaving an
// unwritten chain in the ring.
func TestFlush(t *testing.T) {
	var out bytes.Buffer
	r := newRig(t, newDevice(t, &out), true)
	if _, err := r.drv[queuePortTx].Add(virtiotest.R([]byte("last words\n"))); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out.String() != "last words\n" {
		t.Errorf("flushed %q", out.String())
	}

	p := &pacedWriter{limit: maxPiece}
	d, err := New("p", p)
	if err != nil {
		t.Fatal(err)
	}
	r = newRig(t, d, true)
	if _, err := r.drv[queuePortTx].Add(virtiotest.R(make([]byte, 2*maxPiece))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := d.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with no room: %v", err)
	}
	if _, _, ok := r.drv[queuePortTx].Used(); ok {
		t.Error("a chain not all written was completed")
	}
	// Room again: a later Flush writes the chain whole (the first piece
	// again: it was never reported taken).
	done := make(chan error, 1)
	go func() { done <- d.Flush(t.Context()) }()
	var got int
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			got += len(p.take())
			if got < 2*maxPiece {
				t.Errorf("wrote %d bytes of %d", got, 2*maxPiece)
			}
			return
		case <-time.After(time.Millisecond):
			got += len(p.take())
		}
	}
}

// Reset stops a worker that waits for room.
func TestResetWhileWaiting(t *testing.T) {
	p := &pacedWriter{limit: maxPiece}
	d, err := New("p", p)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, d, true)
	if _, err := r.drv[queuePortTx].Add(virtiotest.R(make([]byte, 3*maxPiece))); err != nil {
		t.Fatal(err)
	}
	r.n[queuePortTx].Signal()
	for p.len() < maxPiece {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() { d.Reset(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("Reset waited for the host writer")
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"vmm.job-stdout", true},
		{"org.qemu.guest_agent.0", true},
		{"", false},
		{"has space", false},
		{"nl\n", false},
		{strings.Repeat("x", maxName), true},
		{strings.Repeat("x", maxName+1), false},
		{"é", false},
	} {
		_, err := New(tc.name, &bytes.Buffer{})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): %v", tc.name, err)
		}
	}
}

func TestConfig(t *testing.T) {
	d := newDevice(t, &bytes.Buffer{})
	b := make([]byte, 16)
	d.ReadConfig(0, b)
	if got := binary.LittleEndian.Uint32(b[cfgMaxNrPorts:]); got != 1 {
		t.Errorf("max_nr_ports %d", got)
	}
	if binary.LittleEndian.Uint32(b[0:]) != 0 || !bytes.Equal(b[8:], make([]byte, 8)) {
		t.Errorf("config %x: only max_nr_ports is set", b)
	}
	d.WriteConfig(8, []byte{1, 2, 3, 4})
	d.ReadConfig(8, b[:4])
	if !bytes.Equal(b[:4], make([]byte, 4)) {
		t.Error("emerg_wr took a write without its feature")
	}
	if d.Features()&(1<<featureMultiport) == 0 || d.Type() != virtio.TypeConsole || len(d.QueueMax()) != numQueues {
		t.Error("not a multiport console with four queues")
	}
}

// slowWriter always has room (as hostout has once its reader is gone)
// but takes a while per write.
type slowWriter struct{}

func (slowWriter) Write(p []byte) (int, error) { time.Sleep(8 * time.Millisecond); return len(p), nil }
func (slowWriter) Ready(int) bool              { return true }
func (slowWriter) NotifyReady(func(), int)     {}

// Reset stops a worker between pieces of a long chain even when the
// writer never makes it wait: a guest's chain can cover most of its RAM.
func TestResetMidChain(t *testing.T) {
	d, err := New("p", slowWriter{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, d, true)
	const size = 1 << 20 // 256 pieces, two seconds at 8 ms each: a stalled test still resets mid-chain
	if _, err := r.drv[queuePortTx].Add(virtiotest.R(make([]byte, size))); err != nil {
		t.Fatal(err)
	}
	r.n[queuePortTx].Signal()
	for d.Written() == 0 {
		time.Sleep(time.Millisecond)
	}
	d.Reset()
	if n := d.Written(); n >= size {
		t.Errorf("Reset waited for all %d bytes of the chain", n)
	}
}

// openPort takes the rig's driver through discovery and opens the port
// on the guest's side, as Linux's driver and vmm-init do.
func (r *rig) openPort(t *testing.T) {
	t.Helper()
	r.post(t, 8)
	r.send(t, control{id: badID, event: eventDeviceReady, value: 1})
	r.send(t, control{id: portID, event: eventPortReady, value: 1})
	r.received(t)
	r.send(t, control{id: portID, event: eventPortOpen, value: 1})
}

// postRx offers n receive buffers of size bytes on the port and kicks.
// The rig's driver touches the receive ring under the device's mu, which
// Send's fill holds: the test's memory is ordinary Go memory, where the
// race detector would see what a real guest's concurrent accesses are.
func (r *rig) postRx(t *testing.T, n, size int) {
	t.Helper()
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	for range n {
		if _, err := r.drv[queuePortRx].Add(virtiotest.W(size)); err != nil {
			t.Fatal(err)
		}
	}
	r.n[queuePortRx].Signal()
}

// takeRx consumes the port's used receive buffers and returns their bytes.
func (r *rig) takeRx() []byte {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	var out []byte
	for {
		head, n, ok := r.drv[queuePortRx].Used()
		if !ok {
			return out
		}
		out = append(out, r.drv[queuePortRx].WrittenBytes(head, n)...)
	}
}

// sendAsync runs Send on its own goroutine, as vmm's input forwarder does.
func sendAsync(d *Device, p []byte, cancel <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() { done <- d.Send(p, cancel) }()
	return done
}

// sendResult is what sendAsync's Send returned, or a failure when it has
// not returned within wait; when says when it should have.
func sendResult(t *testing.T, done <-chan error, when string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wait):
		t.Fatalf("Send did not return %s", when)
		return nil
	}
}

// TestInput: what the host sends waits for the guest to open the port,
// then fills the driver's buffers in order, each from its start, as many
// as the driver posts, waiting for more; the end of the input is
// PORT_OPEN 0 after the last byte.
func TestInput(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		t.Run(map[bool]string{false: "no event index", true: "event index"}[eventIdx], func(t *testing.T) {
			r := newRig(t, newDevice(t, &bytes.Buffer{}), eventIdx)
			data := make([]byte, 20000)
			for i := range data {
				data[i] = byte(i * 7)
			}
			r.postRx(t, 2, 4096)
			done := sendAsync(r.d, data, nil)
			select {
			case <-r.d.Opened():
				t.Fatal("opened before the guest opened the port")
			case err := <-done:
				t.Fatalf("Send returned %v before the guest opened the port", err)
			case <-time.After(50 * time.Millisecond):
			}
			if got := r.takeRx(); len(got) != 0 {
				t.Fatalf("%d bytes sent to a port the guest has not opened", len(got))
			}
			r.openPort(t)
			select {
			case <-r.d.Opened():
			case <-time.After(wait):
				t.Fatal("Opened not closed after PORT_OPEN 1")
			}
			var got []byte
			deadline := time.Now().Add(wait)
			for len(got) < len(data) && time.Now().Before(deadline) {
				// The driver reads what came and posts the buffers
				// again, as its reader takes the bytes.
				b := r.takeRx()
				got = append(got, b...)
				if len(b) > 0 {
					r.postRx(t, (len(b)+4095)/4096, 4096)
				}
				time.Sleep(time.Millisecond)
			}
			if err := sendResult(t, done, "once the guest had taken everything"); err != nil {
				t.Fatal(err)
			}
			got = append(got, r.takeRx()...)
			if !bytes.Equal(got, data) {
				t.Fatalf("the guest received %d bytes, differing at %d", len(got), firstDiff(got, data))
			}
			if r.irq.Count() == 0 {
				t.Error("no interrupt for the filled buffers")
			}
			r.d.EndInput()
			r.settle(t)
			if got := r.received(t); strings.Join(got, " ") != "PORT_OPEN(0,0)" {
				t.Fatalf("after EndInput: %q", got)
			}
			if err := r.d.Send([]byte("x"), nil); !errors.Is(err, ErrInputEnded) {
				t.Fatalf("Send after EndInput: %v", err)
			}
			// A driver that asks again (after a reset of its own) is
			// told the host side is closed.
			r.send(t, control{id: portID, event: eventPortReady, value: 1})
			if got := r.received(t); strings.Join(got, " ") != "PORT_OPEN(0,0) PORT_NAME(0,0) vmm.job-stdout" {
				t.Fatalf("PORT_READY after EndInput: %q", got)
			}
			select {
			case err := <-r.failed:
				t.Fatalf("device failed: %v", err)
			default:
			}
		})
	}
}

// TestInputEndBeforeDriver: input that ends before the driver is there
// (vmm run </dev/null) reaches it as a port whose host side is closed.
func TestInputEndBeforeDriver(t *testing.T) {
	d := newDevice(t, &bytes.Buffer{})
	d.EndInput()
	d.EndInput() // twice is once
	r := newRig(t, d, true)
	r.openPort(t)
	r.settle(t)
	// openPort consumed the discovery answers: look at them again.
	r.send(t, control{id: portID, event: eventPortReady, value: 1})
	if got := r.received(t); strings.Join(got, " ") != "PORT_OPEN(0,0) PORT_NAME(0,0) vmm.job-stdout" {
		t.Fatalf("PORT_READY after EndInput: %q", got)
	}
}

// TestInputCancel: a Send waiting for a guest that never reads ends when
// its cancel channel closes, having sent what the buffers held; a
// chain without writable buffers is given back empty, not kept.
func TestInputCancel(t *testing.T) {
	r := newRig(t, newDevice(t, &bytes.Buffer{}), true)
	r.openPort(t)
	r.d.mu.Lock()
	_, err := r.drv[queuePortRx].Add(virtiotest.R([]byte("guest")))
	r.d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r.postRx(t, 1, 100)
	cancel := make(chan struct{})
	done := sendAsync(r.d, make([]byte, 1000), cancel)
	deadline := time.Now().Add(wait)
	var got []byte
	used := 0
	for used < 2 && time.Now().Before(deadline) {
		r.d.mu.Lock()
		head, n, ok := r.drv[queuePortRx].Used()
		if ok {
			used++
			got = append(got, r.drv[queuePortRx].WrittenBytes(head, n)...)
		}
		r.d.mu.Unlock()
		if !ok {
			time.Sleep(time.Millisecond)
		}
	}
	if used != 2 || len(got) != 100 {
		t.Fatalf("%d chains used with %d bytes, want 2 with 100", used, len(got))
	}
	close(cancel)
	if err := sendResult(t, done, "at cancel"); !errors.Is(err, ErrCanceled) {
		t.Fatalf("Send: %v, want ErrCanceled", err)
	}
}

// TestInputAcrossReset: a Send waiting when the driver resets the device
// goes on once the driver is back and opens the port again.
func TestInputAcrossReset(t *testing.T) {
	d := newDevice(t, &bytes.Buffer{})
	r := newRig(t, d, false)
	r.openPort(t)
	done := sendAsync(d, []byte("after reset"), nil)
	time.Sleep(20 * time.Millisecond)
	d.Reset()
	select {
	case err := <-done:
		t.Fatalf("Send returned %v at the reset", err)
	case <-time.After(20 * time.Millisecond):
	}
	r = newRig(t, d, false)
	r.openPort(t)
	r.postRx(t, 1, 4096)
	if err := sendResult(t, done, "after the driver came back"); err != nil {
		t.Fatal(err)
	}
	if got := string(r.takeRx()); got != "after reset" {
		t.Fatalf("received %q", got)
	}
}
