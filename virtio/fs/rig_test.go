package fs

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const (
	ramBase = 0x100000
	ramSize = 16 << 20
	wait    = 10 * time.Second
	// The request queue's rings and data take the first 12 MiB, the
	// high-priority queue's the next 1 MiB.
	reqData    = 12<<20 - 64<<10
	hiprioAt   = ramBase + 12<<20
	hiprioData = 1<<20 - 64<<10
)

// rig is an activated device with a driver on each of its queues.
type rig struct {
	d      *Device
	dir    string
	mem    *virtiotest.Mem
	drv    [numQueues]*virtiotest.Driver
	q      [numQueues]*virtio.Queue
	n      [numQueues]*virtiotest.Notifier
	irq    *virtiotest.Interrupt
	failed chan error
	unique uint64
}

// newRig shares a directory holding a file f and a directory d.
func newRig(t testing.TB, readOnly, eventIdx bool) *rig {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Tag: "share", Dir: dir, ReadOnly: readOnly, Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return newRigFor(t, d, dir, eventIdx)
}

func newRigFor(t testing.TB, d *Device, dir string, eventIdx bool) *rig {
	t.Helper()
	r := &rig{d: d, dir: dir, mem: virtiotest.NewMem(ramBase, ramSize)}
	var err error
	if r.drv[requestQueue], err = virtiotest.NewDriver(r.mem, requestSize, ramBase, reqData); err != nil {
		t.Fatal(err)
	}
	if r.drv[hiprioQueue], err = virtiotest.NewDriver(r.mem, hiprioSize, hiprioAt, hiprioData); err != nil {
		t.Fatal(err)
	}
	for i, max := range d.QueueMax() {
		r.q[i] = virtio.NewQueue(max)
	}
	r.activate(t, eventIdx)
	return r
}

// activate sets the queues up afresh and starts the device.
func (r *rig) activate(t testing.TB, eventIdx bool) {
	t.Helper()
	features := r.d.Features()
	if !eventIdx {
		features &^= 1 << virtio.FeatureEventIdx
	}
	env := virtio.Env{
		Features:  features,
		Mem:       r.mem,
		Interrupt: func() { r.irq.Trigger() },
		Fail: func(err error) {
			select {
			case r.failed <- err:
			default:
			}
		},
	}
	for i := range numQueues {
		r.drv[i].Reset()
		r.q[i].Reset()
		if err := r.q[i].Setup(r.mem, r.drv[i].Config(), eventIdx, true); err != nil {
			t.Fatal(err)
		}
		r.n[i] = virtiotest.NewNotifier()
		env.Queues = append(env.Queues, r.q[i])
		env.Notifiers = append(env.Notifiers, r.n[i])
	}
	r.irq = virtiotest.NewInterrupt()
	r.failed = make(chan error, 1)
	if err := r.d.Activate(env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.d.Reset)
}

func (r *rig) next() uint64 {
	r.unique++
	return r.unique
}

// chain is one request as the driver lays it out.
type chain struct {
	bufs     []virtiotest.Buf
	indirect bool
}

// split cuts req into readable buffers of at most piece bytes and adds
// writable buffers of at most piece bytes for replyLen bytes.
func split(req []byte, replyLen, piece int) []virtiotest.Buf {
	var bufs []virtiotest.Buf
	for len(req) > 0 {
		n := min(piece, len(req))
		bufs = append(bufs, virtiotest.R(req[:n]))
		req = req[n:]
	}
	for replyLen > 0 {
		n := min(piece, replyLen)
		bufs = append(bufs, virtiotest.W(n))
		replyLen -= n
	}
	return bufs
}

// run offers the chains on queue q at once, kicks it, and waits until
// the device completed them all; it returns each chain's reply (its
// writable bytes, cut to the used length), in the order given.
//
// Every completion raises an interrupt here (no EVENT_IDX, interrupts
// on), and the handler pushes before it interrupts, so once the count
// covers every chain the used ring is complete; waiting for the worker
// to go idle too orders the worker's last ring accesses before the
// test's.
func (r *rig) run(t testing.TB, q int, chains ...chain) [][]byte {
	t.Helper()
	heads := make([]uint16, len(chains))
	for i, c := range chains {
		var err error
		if c.indirect {
			heads[i], err = r.drv[q].AddIndirect(c.bufs...)
		} else {
			heads[i], err = r.drv[q].Add(c.bufs...)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	start := r.irq.Count()
	r.n[q].Notify()
	deadline := time.Now().Add(wait)
	for r.irq.Count() < start+uint64(len(chains)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d chains completed", r.irq.Count()-start, len(chains))
		}
		select {
		case err := <-r.failed:
			t.Fatalf("device failed: %v", err)
		default:
		}
		r.irq.Wait(10 * time.Millisecond)
	}
	if !r.n[q].Idle(wait) {
		t.Fatal("worker not idle")
	}
	used := map[uint16]uint32{}
	for {
		head, n, ok := r.drv[q].Used()
		if !ok {
			break
		}
		if _, dup := used[head]; dup {
			t.Fatalf("chain %d completed twice", head)
		}
		used[head] = n
	}
	replies := make([][]byte, len(chains))
	for i, h := range heads {
		n, ok := used[h]
		if !ok {
			t.Fatalf("chain %d not completed", h)
		}
		replies[i] = r.drv[q].WrittenBytes(h, n)
		if len(replies[i]) != int(n) {
			t.Fatalf("chain %d: used length %d exceeds its %d writable bytes", h, n, len(replies[i]))
		}
	}
	if len(used) != len(chains) {
		t.Fatalf("%d completions for %d chains", len(used), len(chains))
	}
	if err := r.mem.CheckGuards(); err != nil {
		t.Fatal(err)
	}
	return replies
}

// call sends one request on the request queue in pieces of at most 4 KiB
// with replyLen bytes for the reply and returns the reply's errno and
// body.
func (r *rig) call(t testing.TB, req []byte, replyLen int) (unix.Errno, []byte) {
	t.Helper()
	reply := r.run(t, requestQueue, chain{bufs: split(req, replyLen, 4096)})[0]
	h, body, err := fusetest.Parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	return unix.Errno(-h.Status), body
}

func (r *rig) init(t testing.TB) {
	t.Helper()
	errno, body := r.call(t, fusetest.Init(r.next()), 4096)
	if errno != 0 {
		t.Fatalf("INIT: %v", errno)
	}
	if _, err := fusetest.DecodeInit(body); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) lookup(t testing.TB, parent uint64, name string) fuse.EntryOut {
	t.Helper()
	errno, body := r.call(t, fusetest.Encode(fusetest.OpLookup, r.next(), parent, nil, fusetest.Name(name)), 4096)
	if errno != 0 {
		t.Fatalf("LOOKUP %s: %v", name, errno)
	}
	var e fuse.EntryOut
	if err := fusetest.Decode(body, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// fakeServer answers every request with a 16-byte reply whose unique is
// the request's, after waiting for its release channel when it has one:
// the test decides which requests finish first.
type fakeServer struct {
	mu      sync.Mutex
	release map[uint64]chan struct{}
	started chan uint64
	resets  int
}

func newFakeServer() *fakeServer {
	return &fakeServer{release: map[uint64]chan struct{}{}, started: make(chan uint64, 64)}
}

// hold makes the request with this unique wait for the returned channel.
func (f *fakeServer) hold(unique uint64) chan struct{} {
	ch := make(chan struct{})
	f.mu.Lock()
	f.release[unique] = ch
	f.mu.Unlock()
	return ch
}

func (f *fakeServer) Handle(in, out virtio.Buffers) int {
	var h [fusetest.InHeaderSize]byte
	in.ReadAt(h[:], 0)
	unique := binary.LittleEndian.Uint64(h[8:])
	f.started <- unique
	f.mu.Lock()
	ch := f.release[unique]
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
	var reply [fusetest.OutHeaderSize]byte
	binary.LittleEndian.PutUint32(reply[0:], fusetest.OutHeaderSize)
	binary.LittleEndian.PutUint64(reply[8:], unique)
	if _, err := out.WriteAt(reply[:], 0); err != nil {
		return 0
	}
	return len(reply)
}

func (f *fakeServer) Reset() {
	f.mu.Lock()
	f.resets++
	f.mu.Unlock()
}

func (f *fakeServer) Close() error { return nil }
