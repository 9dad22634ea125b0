// Package console is virtio's console device (virtio v1.2 §5.3) with one
// named port: what the guest writes to the port goes to a host writer,
// and what the host sends (Send) fills the buffers the guest posts for
// it. `vmm run` carries a job's stdout on one such device and its stdin
// on another.
//
// A UART moves one byte per port access, each an exit to vmm (more than
// one per byte with the FIFO's status reads: 1.19 measured nested); a
// port moves up to 32 KiB per notification (Linux's port_fops_write caps
// a write there), through an ioeventfd to this device's goroutine, so
// the vCPU never waits for the host. The device offers
// VIRTIO_CONSOLE_F_MULTIPORT so that the port is a generic port with a
// name (/dev/vportNpM, its name in /sys/class/virtio-ports/*/name)
// rather than a console (hvc0) that the guest's kernel could claim, and
// so that the driver's writes sleep while the queue is full instead of
// spinning with interrupts off, as hvc's put_chars does.
//
// Backpressure on output is the host writer's: with a Paced writer, a
// chain is completed only once the writer has room for it, so a reader
// that stops makes the guest's write(2) sleep, never vmm drop bytes or
// block a vCPU. On input it is the guest's: Send fills only the buffers
// the driver has posted, which it posts again only as its reader takes
// the bytes, so a job that does not read its stdin holds up the host's
// sender, not vCPUs, and nothing is dropped. The end of the host's input
// is the host side closing the port (EndInput, PORT_OPEN 0), which the
// guest's reads see as end of file once they have every byte.
package console

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/vmm-dev/vmm/virtio"
)

// featureMultiport is VIRTIO_CONSOLE_F_MULTIPORT (§5.3.3): ports and the
// control queues.
const featureMultiport = 1

// Queues (§5.3.2): port 0's receive and transmit queues, then the
// control receive and transmit queues. With max_nr_ports 1 there are no
// more.
const (
	queuePortRx = 0
	queuePortTx = 1
	queueCtrlRx = 2
	queueCtrlTx = 3
	numQueues   = 4
)

// portID is the one port's id; port 0's queues are 0 and 1 (§5.3.2).
const portID = 0

// Queue sizes. The driver keeps a 32 KiB write in flight per descriptor
// and sleeps when the transmit queue is full, so 128 of them are 4 MiB
// the guest can have queued; the control queues carry a handful of
// messages at boot.
const (
	portQueueSize = 128
	ctrlQueueSize = 32
)

// struct virtio_console_config (§5.3.4): cols and rows (le16 each, only
// with VIRTIO_CONSOLE_F_SIZE, not offered), max_nr_ports (le32) and
// emerg_wr (le32, only with VIRTIO_CONSOLE_F_EMERG_WRITE, not offered).
const (
	cfgMaxNrPorts = 4
	configSize    = 12
)

// maxPending bounds the control messages waiting for the driver's
// receive buffers: discovery needs three. A driver that repeats
// DEVICE_READY without posting buffers gets its extra answers dropped.
const maxPending = 16

// maxPiece is the most one Write hands the host writer: a Paced writer
// must be able to report room for it.
const maxPiece = 4096

// Paced is a host writer that says when it has room (hostout.Paced), so
// the device completes the guest's buffers only as fast as the host
// takes them.
type Paced interface {
	// Ready reports whether n more bytes can be written now; after it
	// reports false, the function given to NotifyReady is called once
	// they can.
	Ready(n int) bool
	// NotifyReady adds a function Ready's refusals are answered with,
	// and most, the most the device writes on one yes (maxPiece), which
	// a writer shared with other devices keeps free for it.
	NotifyReady(f func(), most int)
}

// Device is a console with one output port.
type Device struct {
	name   string
	out    io.Writer
	paced  Paced // out's pacing, or nil
	config [configSize]byte

	// room gets a token when a paced writer that refused has room.
	room chan struct{}
	// tx is held by whoever pops the transmit queue: its worker or
	// Flush. A channel, so that Flush can give up waiting for it.
	tx chan struct{}
	// txChain is the transmit side's chain, used by tx's holder.
	txChain *virtio.Chain
	// written counts the bytes handed to out.
	written atomic.Uint64
	// guestOpen is the port's state on the guest's side (PORT_OPEN).
	guestOpen atomic.Bool
	// opened is closed the first time the guest opens the port.
	opened   chan struct{}
	openOnce sync.Once
	// rxWake gets a token when Send may get further: the guest posted
	// receive buffers or opened the port, or the device was activated
	// or reset.
	rxWake chan struct{}
	// rxChain is Send's chain, used under mu.
	rxChain *virtio.Chain

	// mu serializes Activate, Reset and Flush's view of the
	// environment; workers never take it.
	mu     sync.Mutex
	active bool
	env    virtio.Env
	stop   chan struct{}
	wg     sync.WaitGroup

	// ctrlMu guards the control receive queue, pending and hostClosed,
	// which the control workers and EndInput share.
	ctrlMu  sync.Mutex
	pending [][]byte
	// hostClosed is set by EndInput: the host side of the port is
	// closed, which every later PORT_READY is answered with.
	hostClosed bool
	ctrlRx     *virtio.Chain
	// ctrlTx is the control transmit worker's chain.
	ctrlTx *virtio.Chain
}

// New returns a console whose port, called name (what the guest finds in
// /sys/class/virtio-ports/*/name), writes to out; if out is a Paced
// writer the device waits for its room, which must be able to hold
// maxPiece (4 KiB) bytes at once, and the other devices' reserve beside
// them (hostout.Paced; vmm's job queue holds 256 KiB).
func New(name string, out io.Writer) (*Device, error) {
	if name == "" || len(name) > maxName {
		return nil, fmt.Errorf("virtio-console: port name %q: want 1 to %d bytes", name, maxName)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' {
			return nil, fmt.Errorf("virtio-console: port name %q: printable ASCII without spaces only", name)
		}
	}
	d := &Device{name: name, out: out, room: make(chan struct{}, 1), tx: make(chan struct{}, 1),
		txChain: virtio.NewChain(), ctrlRx: virtio.NewChain(), ctrlTx: virtio.NewChain(),
		opened: make(chan struct{}), rxWake: make(chan struct{}, 1), rxChain: virtio.NewChain()}
	d.tx <- struct{}{}
	if p, ok := out.(Paced); ok {
		d.paced = p
		p.NotifyReady(func() {
			select {
			case d.room <- struct{}{}:
			default:
			}
		}, maxPiece)
	}
	binary.LittleEndian.PutUint32(d.config[cfgMaxNrPorts:], 1) // port 0 only
	return d, nil
}

// maxName bounds a port's name: the driver takes the rest of a page-sized
// control buffer, and a name is an identifier, not data.
const maxName = 64

// Written is how many bytes of the guest's output the device handed to
// its writer.
func (d *Device) Written() uint64 { return d.written.Load() }

// GuestOpen reports whether the guest has the port open.
func (d *Device) GuestOpen() bool { return d.guestOpen.Load() }

// Opened is closed once the guest has first opened the port: the guest's
// init opens a job's input port only when it takes its input there.
func (d *Device) Opened() <-chan struct{} { return d.opened }

// wakeRx tells a waiting Send to look again.
func (d *Device) wakeRx() {
	select {
	case d.rxWake <- struct{}{}:
	default:
	}
}

// Type is virtio.TypeConsole (virtio v1.2 §5.3.1).
func (d *Device) Type() virtio.DeviceType { return virtio.TypeConsole }

// Features is MULTIPORT with VERSION_1, EVENT_IDX and INDIRECT_DESC.
func (d *Device) Features() uint64 {
	return 1<<featureMultiport | 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc
}

// QueueMax is port 0's two queues and the two control queues.
func (d *Device) QueueMax() []uint16 {
	return []uint16{portQueueSize, portQueueSize, ctrlQueueSize, ctrlQueueSize}
}

// ReadConfig reads struct virtio_console_config, which never changes.
func (d *Device) ReadConfig(off uint64, data []byte) {
	virtio.ReadFixedConfig(d.config[:], off, data)
}

// WriteConfig ignores the write: emerg_wr, the one writable field, needs
// VIRTIO_CONSOLE_F_EMERG_WRITE, which the device does not offer.
func (d *Device) WriteConfig(off uint64, data []byte) {}

// Activate starts a worker for the port's transmit queue and for each
// control queue the driver enabled. A driver that did not take
// MULTIPORT has no control queues and uses port 0 as a console; its
// output goes to the writer just the same.
func (d *Device) Activate(env virtio.Env) error {
	if len(env.Queues) != numQueues || len(env.Notifiers) != numQueues {
		return fmt.Errorf("virtio-console: %d queues and %d notifiers, want %d", len(env.Queues), len(env.Notifiers), numQueues)
	}
	if env.Interrupt == nil || env.Fail == nil {
		return errors.New("virtio-console: incomplete environment")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		return errors.New("virtio-console: already active")
	}
	d.active, d.env, d.stop = true, env, make(chan struct{})
	start := func(q int, run func(stop <-chan struct{})) {
		if env.Queues[q] == nil || !env.Queues[q].Ready() || env.Notifiers[q] == nil {
			return
		}
		d.wg.Add(1)
		stop := d.stop
		go func() {
			defer d.wg.Done()
			for {
				if err := env.Notifiers[q].Wait(); err != nil || stopped(stop) {
					return
				}
				run(stop)
			}
		}()
	}
	start(queuePortTx, d.serveTx)
	start(queueCtrlTx, d.serveCtrlTx)
	start(queueCtrlRx, func(<-chan struct{}) { d.sendPending() })
	// The guest's receive buffers are Send's, which fills them under mu;
	// their notifications only wake it.
	start(queuePortRx, func(<-chan struct{}) { d.wakeRx() })
	d.wakeRx()
	return nil
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// Reset stops the workers and waits for them. Buffers the guest queued
// and the device had not reached stay in the rings, which the transport
// resets.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		return
	}
	close(d.stop)
	for _, n := range d.env.Notifiers {
		if n != nil {
			n.Signal()
		}
	}
	d.wg.Wait()
	// A Flush in progress ends at the stop too; the queues are the
	// transport's to reset once it has.
	<-d.tx
	d.tx <- struct{}{}
	d.ctrlMu.Lock()
	d.pending = nil
	d.ctrlMu.Unlock()
	d.guestOpen.Store(false)
	d.active, d.env = false, virtio.Env{}
	d.wakeRx()
}

// Flush hands every buffer the guest queued on the port to the writer,
// waiting for a paced writer's room, until the queue is empty, ctx is
// done (its error) or the device is reset. The machine calls it once
// the guest has stopped (after the job's exit status, before vmm acts
// on it), so that no output the guest wrote is left in its RAM.
func (d *Device) Flush(ctx context.Context) error {
	d.mu.Lock()
	active, stop, env := d.active, d.stop, d.env
	d.mu.Unlock()
	if !active || env.Queues[queuePortTx] == nil || !env.Queues[queuePortTx].Ready() {
		return nil
	}
	select {
	case <-d.tx:
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return nil
	}
	defer func() { d.tx <- struct{}{} }()
	// select picks at random among ready cases: the token may have come
	// with a reset that has already stopped the device.
	if stopped(stop) {
		return nil
	}
	if !d.drainTx(env, stop, ctx.Done()) {
		return ctx.Err()
	}
	return nil
}

// serveTx is the transmit worker's turn after a notification.
func (d *Device) serveTx(stop <-chan struct{}) {
	select {
	case <-d.tx:
	case <-stop:
		return
	}
	defer func() { d.tx <- struct{}{} }()
	d.drainTx(d.env, stop, nil)
}

// drainTx writes out every chain on the port's transmit queue, with
// notifications off while it works (virtio v1.2 §2.7.10); the caller
// holds d.tx. It returns false if stop or cancel (nil for none) ended it
// first, or the queue turned out malformed.
func (d *Device) drainTx(env virtio.Env, stop, cancel <-chan struct{}) bool {
	q := env.Queues[queuePortTx]
	c := d.txChain
	for {
		q.DisableNotify()
		for {
			ok, err := q.Pop(c)
			if err != nil {
				env.Fail(fmt.Errorf("virtio-console: port transmit queue: %w", err))
				return false
			}
			if !ok {
				break
			}
			done := d.write(c.Readable, stop, cancel)
			c.Readable, c.Writable = nil, nil
			if !done {
				// Given back, not completed: the guest has not
				// seen it taken. Only a stopping machine or
				// device gets here.
				q.Unpop(1)
				return false
			}
			q.Push(c.Head, 0)
			if q.NeedInterrupt() {
				env.Interrupt()
			}
		}
		if !q.EnableNotify() {
			return true
		}
	}
}

// write hands b to the writer a piece at a time, each once a paced
// writer has room. It returns false if stop or cancel came first; the
// pieces written by then stay written.
func (d *Device) write(b virtio.Buffers, stop, cancel <-chan struct{}) bool {
	for _, s := range b {
		for len(s) > 0 {
			// Checked between pieces too, not only while waiting
			// for room: a writer that always has room (one whose
			// reader is gone discards) must not keep a guest's
			// chains of most of its RAM going past a stop.
			select {
			case <-stop:
				return false
			case <-cancel:
				return false
			default:
			}
			p := s[:min(len(s), maxPiece)]
			for d.paced != nil && !d.paced.Ready(len(p)) {
				select {
				case <-d.room:
				case <-stop:
					return false
				case <-cancel:
					return false
				}
			}
			// A write error is the writer's to count (hostout
			// discards once its reader is gone): the guest's
			// output is taken either way.
			d.out.Write(p)
			d.written.Add(uint64(len(p)))
			s = s[len(p):]
		}
	}
	return true
}

// ErrCanceled is Send's error when its cancel channel closed first.
var ErrCanceled = errors.New("virtio-console: send canceled")

// ErrInputEnded is Send's error after EndInput.
var ErrInputEnded = errors.New("virtio-console: input already ended")

// Send hands p to the guest through the port's receive queue and returns
// once all of it is in the guest's buffers, or with ErrCanceled when
// cancel (nil for never) closes first, having sent what the guest took by
// then. It waits for the guest to have the port open, because Linux's
// driver discards what arrives on a port nobody has open
// (drivers/char/virtio_console.c, in_intr), and for the driver's
// buffers, which it posts again as its reader takes the bytes. One
// caller at a time; across a reset of the device it waits for the
// driver to come back.
func (d *Device) Send(p []byte, cancel <-chan struct{}) error {
	for len(p) > 0 {
		n, err := d.fill(p)
		if err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
		if n > 0 {
			continue
		}
		select {
		case <-d.rxWake:
		case <-cancel:
			return ErrCanceled
		}
	}
	return nil
}

// fill puts as much of p as the guest's posted receive buffers hold into
// them, each buffer from its start (§5.3.6.1: the driver reads what the
// used length says), and reports how much that was: 0 when the port is
// closed on the guest's side or no buffer is posted, after asking for a
// notification when one is.
func (d *Device) fill(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ctrlMu.Lock()
	ended := d.hostClosed
	d.ctrlMu.Unlock()
	if ended {
		return 0, ErrInputEnded
	}
	if !d.active || !d.guestOpen.Load() {
		return 0, nil
	}
	env := d.env
	q := env.Queues[queuePortRx]
	if q == nil || !q.Ready() {
		return 0, nil
	}
	c := d.rxChain
	n, added, unpublished := 0, false, 0
	for n < len(p) {
		ok, err := q.Pop(c)
		if err != nil {
			// Failed until the driver resets the device; Send waits
			// for that.
			env.Fail(fmt.Errorf("virtio-console: port receive queue: %w", err))
			break
		}
		if !ok {
			// With EVENT_IDX the driver kicks only past avail_event,
			// which this moves up only when the queue is empty.
			if q.EnableNotify() {
				continue
			}
			break
		}
		w, _ := c.Writable.WriteAt(p[n:], 0)
		c.Readable, c.Writable = nil, nil
		// A chain with no room (no writable buffer) is given back
		// empty rather than kept.
		q.Add(c.Head, uint32(w))
		added = true
		n += w
		// Chains given back empty do not move n: a driver that keeps
		// posting them from another vCPU would otherwise have more
		// entries added than the used ring holds before one Publish,
		// overwriting its own.
		if unpublished++; unpublished == int(q.Size()) {
			q.Publish()
			unpublished = 0
		}
	}
	if added {
		q.Publish()
		if q.NeedInterrupt() {
			env.Interrupt()
		}
	}
	return n, nil
}

// EndInput closes the host's side of the port once the last Send has
// returned: the driver is told (PORT_OPEN 0) now if it is running and in
// its answer to PORT_READY otherwise, and the guest's reads then return
// end of file once they have taken every byte sent. Later Sends fail.
func (d *Device) EndInput() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ctrlMu.Lock()
	if d.hostClosed {
		d.ctrlMu.Unlock()
		return
	}
	d.hostClosed = true
	if d.active {
		// Past maxPending too: a driver that flooded the queue with
		// requests must still learn where its input ends. Once only.
		d.pending = append(d.pending, appendControl(nil, control{id: portID, event: eventPortOpen, value: 0}, ""))
	}
	d.ctrlMu.Unlock()
	if d.active {
		d.sendPending()
	}
}

// serveCtrlTx reads the driver's control messages and queues the
// device's answers.
func (d *Device) serveCtrlTx(stop <-chan struct{}) {
	env := d.env
	q := env.Queues[queueCtrlTx]
	c := d.ctrlTx
	for {
		q.DisableNotify()
		for !stopped(stop) {
			ok, err := q.Pop(c)
			if err != nil {
				env.Fail(fmt.Errorf("virtio-console: control transmit queue: %w", err))
				return
			}
			if !ok {
				break
			}
			m, valid := parseControl(c.Readable)
			c.Readable, c.Writable = nil, nil
			// The port's state first: Linux's driver waits for this
			// buffer to come back before it stops taking input on a
			// port it closes (port_fops_release), so Send stops
			// filling before that.
			if valid && m.event == eventPortOpen && m.id == portID {
				d.guestOpen.Store(m.value != 0)
				if m.value != 0 {
					d.openOnce.Do(func() { close(d.opened) })
				}
				d.wakeRx()
			}
			q.Push(c.Head, 0)
			if q.NeedInterrupt() {
				env.Interrupt()
			}
			if !valid {
				continue
			}
			// The answer is made under ctrlMu, so that it and
			// EndInput's PORT_OPEN 0 are queued in the order of
			// what they say.
			d.ctrlMu.Lock()
			d.queueLocked(reply(m, d.name, !d.hostClosed)...)
			d.ctrlMu.Unlock()
			d.sendPending()
		}
		if stopped(stop) || !q.EnableNotify() {
			return
		}
	}
}

// queueLocked adds control messages for the driver, as many as
// maxPending allows; the caller holds ctrlMu.
func (d *Device) queueLocked(msgs ...[]byte) {
	for _, b := range msgs {
		if len(d.pending) < maxPending {
			d.pending = append(d.pending, b)
		}
	}
}

// sendPending puts queued control messages into the driver's control
// receive buffers, as many as it has posted; the rest wait for its next
// buffers (its notification of the control receive queue, which it
// asks for).
func (d *Device) sendPending() {
	d.ctrlMu.Lock()
	defer d.ctrlMu.Unlock()
	env := d.env
	q := env.Queues[queueCtrlRx]
	if q == nil || !q.Ready() {
		return
	}
	c := d.ctrlRx
	for len(d.pending) > 0 {
		ok, err := q.Pop(c)
		if err != nil {
			env.Fail(fmt.Errorf("virtio-console: control receive queue: %w", err))
			d.pending = nil
			return
		}
		if !ok {
			// Ask for the driver's next buffers (with EVENT_IDX
			// it kicks only past avail_event), unless some came
			// in meanwhile.
			if q.EnableNotify() {
				continue
			}
			return
		}
		n, _ := c.Writable.WriteAt(d.pending[0], 0)
		c.Readable, c.Writable = nil, nil
		d.pending[0] = nil
		d.pending = d.pending[1:]
		q.Push(c.Head, uint32(n))
		if q.NeedInterrupt() {
			env.Interrupt()
		}
	}
}
