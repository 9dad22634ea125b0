package blk

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const (
	ramBase   = 0x100000
	ramSize   = 4 << 20
	wait      = 5 * time.Second
	rigQueue  = queueSize
	rigSector = 128 // disk size for queue tests
)

// rig is an activated device with a driver on the other side of its queue.
type rig struct {
	d      *Device
	path   string
	mem    *virtiotest.Mem
	drv    *virtiotest.Driver
	q      *virtio.Queue
	n      *virtiotest.Notifier
	irq    *virtiotest.Interrupt
	failed chan error
	// onInterrupt, when set before a notification, runs on the worker
	// just before each interrupt.
	onInterrupt func()
}

func newRig(t *testing.T, readOnly, eventIdx bool) *rig {
	t.Helper()
	d, path, _ := newDisk(t, rigSector, readOnly)
	r := &rig{d: d, path: path, mem: virtiotest.NewMem(ramBase, ramSize), q: virtio.NewQueue(rigQueue)}
	var err error
	r.drv, err = virtiotest.NewDriver(r.mem, rigQueue, ramBase, ramSize-64<<10)
	if err != nil {
		t.Fatal(err)
	}
	r.activate(t, eventIdx)
	return r
}

// activate sets the queue up afresh and starts the device.
func (r *rig) activate(t *testing.T, eventIdx bool) {
	t.Helper()
	r.drv.Reset()
	r.q.Reset()
	if err := r.q.Setup(r.mem, r.drv.Config(), eventIdx, true); err != nil {
		t.Fatal(err)
	}
	r.n = virtiotest.NewNotifier()
	r.irq = virtiotest.NewInterrupt()
	r.failed = make(chan error, 1)
	features := r.d.Features()
	if !eventIdx {
		features &^= 1 << virtio.FeatureEventIdx
	}
	err := r.d.Activate(virtio.Env{
		Features:  features,
		Mem:       r.mem,
		Queues:    []*virtio.Queue{r.q},
		Notifiers: []virtio.Notifier{r.n},
		Interrupt: func() {
			if r.onInterrupt != nil {
				r.onInterrupt()
			}
			r.irq.Trigger()
		},
		Fail: func(err error) {
			select {
			case r.failed <- err:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.d.Reset)
}

// kick notifies the device and waits for its interrupt and for the
// worker to go back to sleep, after which the rings are the test's.
func (r *rig) kick(t *testing.T) {
	t.Helper()
	r.n.Notify()
	if !r.irq.Wait(wait) {
		t.Fatal("no interrupt")
	}
	if !r.n.Idle(wait) {
		t.Fatal("worker not idle")
	}
}

// completions consumes n used elements.
func (r *rig) completions(t *testing.T, n int) map[uint16]uint32 {
	t.Helper()
	got := map[uint16]uint32{}
	for len(got) < n {
		head, used, ok := r.drv.Used()
		if !ok {
			t.Fatalf("%d completions, want %d", len(got), n)
		}
		got[head] = used
	}
	if _, _, ok := r.drv.Used(); ok {
		t.Fatalf("more than %d completions", n)
	}
	return got
}

func add(t *testing.T, drv *virtiotest.Driver, indirect bool, bufs ...virtiotest.Buf) uint16 {
	t.Helper()
	addf := drv.Add
	if indirect {
		addf = drv.AddIndirect
	}
	head, err := addf(bufs...)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

// R and W are virtiotest's buffer constructors, short for tables.
func R(data []byte) virtiotest.Buf { return virtiotest.R(data) }
func W(n int) virtiotest.Buf       { return virtiotest.W(n) }

// TestQueueLayouts writes and reads back through a real queue, with the
// request laid out over descriptors in the ways drivers do.
func TestQueueLayouts(t *testing.T) {
	data := make([]byte, 1536)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	hdrOut, hdrIn := header(typeOut, 40), header(typeIn, 40)
	for _, tc := range []struct {
		name     string
		indirect bool
		out, in  []virtiotest.Buf
	}{
		{"header and data in one descriptor", false,
			[]virtiotest.Buf{R(append(bytes.Clone(hdrOut), data...)), W(1)},
			[]virtiotest.Buf{R(hdrIn), W(len(data) + 1)}},
		{"header split 8+8", false,
			[]virtiotest.Buf{R(hdrOut[:8]), R(hdrOut[8:]), R(data), W(1)},
			[]virtiotest.Buf{R(hdrIn[:8]), R(hdrIn[8:]), W(len(data)), W(1)}},
		{"data across 3 descriptors", false,
			[]virtiotest.Buf{R(hdrOut), R(data[:512]), R(data[512:1024]), R(data[1024:]), W(1)},
			[]virtiotest.Buf{R(hdrIn), W(512), W(512), W(512), W(1)}},
		{"indirect", true,
			[]virtiotest.Buf{R(hdrOut), R(data[:1000]), R(data[1000:]), W(1)},
			[]virtiotest.Buf{R(hdrIn), W(24), W(1000), W(512), W(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, false, true)
			out := add(t, r.drv, tc.indirect, tc.out...)
			in := add(t, r.drv, tc.indirect, tc.in...)
			r.kick(t)
			used := r.completions(t, 2)
			if used[out] != 1 || used[in] != uint32(len(data)+1) {
				t.Fatalf("used lengths: write %d, read %d; want 1 and %d", used[out], used[in], len(data)+1)
			}
			if st := r.drv.WrittenBytes(out, 1); !bytes.Equal(st, []byte{statusOK}) {
				t.Errorf("write status %v", st)
			}
			got := r.drv.WrittenBytes(in, used[in])
			if !bytes.Equal(got[:len(data)], data) || got[len(data)] != statusOK {
				t.Errorf("read back differs from what was written (status %d)", got[len(data)])
			}
			if err := r.mem.CheckGuards(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestWorker posts 100 requests with one notification and checks every
// completion, with and without EVENT_IDX.
func TestWorker(t *testing.T) {
	for _, eventIdx := range []bool{true, false} {
		t.Run(map[bool]string{true: "event idx", false: "no event idx"}[eventIdx], func(t *testing.T) {
			r := newRig(t, false, eventIdx)
			want := readFile(t, r.path)
			type req struct {
				write  bool
				sector int
			}
			reqs := map[uint16]req{}
			for i := range 100 {
				// Writes to sectors 0..49, reads of 50..99: the outcome
				// does not depend on the order of service.
				rq := req{i%2 == 0, i/2 + 50*(i%2)}
				var head uint16
				if rq.write {
					data := repeat(byte(i), SectorSize)
					copy(want[rq.sector*SectorSize:], data)
					head = add(t, r.drv, i%4 == 0, R(header(typeOut, uint64(rq.sector))), R(data), W(1))
				} else {
					head = add(t, r.drv, i%4 == 1, R(header(typeIn, uint64(rq.sector))), W(SectorSize), W(1))
				}
				reqs[head] = rq
			}
			r.kick(t)
			orig := pattern(rigSector * SectorSize)
			for head, used := range r.completions(t, 100) {
				rq := reqs[head]
				wantUsed := uint32(1)
				if !rq.write {
					wantUsed += SectorSize
				}
				got := r.drv.WrittenBytes(head, used)
				if used != wantUsed || got[len(got)-1] != statusOK {
					t.Fatalf("request %+v: used %d status %d", rq, used, got[len(got)-1])
				}
				if off := rq.sector * SectorSize; !rq.write && !bytes.Equal(got[:SectorSize], orig[off:off+SectorSize]) {
					t.Errorf("read of sector %d returned other data", rq.sector)
				}
			}
			if !bytes.Equal(readFile(t, r.path), want) {
				t.Errorf("disk content wrong after 50 writes")
			}
			if n := r.irq.Count(); n != 1 {
				t.Errorf("%d interrupts for one batch, want 1", n)
			}
			select {
			case err := <-r.failed:
				t.Errorf("Fail(%v)", err)
			default:
			}
		})
	}
}

// TestNoInterruptWanted checks that the worker honours the driver's wish
// not to be interrupted (VIRTQ_AVAIL_F_NO_INTERRUPT).
func TestNoInterruptWanted(t *testing.T) {
	r := newRig(t, false, false)
	r.drv.SetAvailFlags(virtio.AvailFlagNoInterrupt)
	add(t, r.drv, false, R(header(typeFlush, 0)), W(1))
	r.n.Notify()
	for r.drv.UsedIdx() != 1 {
		if !r.n.Idle(wait) {
			t.Fatal("worker not idle")
		}
		if r.drv.UsedIdx() != 1 {
			t.Fatal("request not completed")
		}
	}
	if n := r.irq.Count(); n != 0 {
		t.Errorf("%d interrupts, want none", n)
	}
}

// TestLateRequest: a request the driver makes available while the worker
// is busy, with notifications off, is served without a notification,
// because the worker re-checks the ring after turning them back on.
func TestLateRequest(t *testing.T) {
	for _, eventIdx := range []bool{true, false} {
		r := newRig(t, false, eventIdx)
		first := add(t, r.drv, false, R(header(typeFlush, 0)), W(1))
		var late uint16
		r.onInterrupt = func() {
			if late != 0 {
				return
			}
			// On the worker goroutine: t.Error, not t.Fatal.
			var err error
			if late, err = r.drv.Add(R(header(typeIn, 2)), W(SectorSize), W(1)); err != nil {
				t.Error(err)
			}
		}
		r.kick(t)
		used := r.completions(t, 2)
		if used[first] != 1 || used[late] != SectorSize+1 {
			t.Errorf("event idx %v: used lengths %d and %d, want 1 and %d", eventIdx, used[first], used[late], SectorSize+1)
		}
	}
}

// TestBadRequestKeepsGoing: a request without a status byte completes
// with used length 0 and the next one is served normally.
func TestBadRequestKeepsGoing(t *testing.T) {
	r := newRig(t, false, true)
	bad := add(t, r.drv, false, R(header(typeIn, 0)), R(make([]byte, 512)))
	good := add(t, r.drv, false, R(header(typeGetID, 0)), W(SerialLen), W(1))
	r.kick(t)
	used := r.completions(t, 2)
	if used[bad] != 0 || used[good] != SerialLen+1 {
		t.Errorf("used lengths %d and %d, want 0 and %d", used[bad], used[good], SerialLen+1)
	}
	if got := r.drv.WrittenBytes(good, SerialLen); !bytes.HasPrefix(got, []byte("test-serial\x00")) {
		t.Errorf("GET_ID returned %q", got)
	}
	select {
	case err := <-r.failed:
		t.Errorf("Fail(%v)", err)
	default:
	}
}

// TestMalformedQueue: what Pop rejects fails the device once, after
// completing what came before, and the worker stops.
func TestMalformedQueue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(r *rig)
		// served: the flush before the damage is completed (the avail
		// index is checked before any chain is popped).
		served bool
	}{
		{"descriptor outside RAM", func(r *rig) {
			head := add(t, r.drv, false, R(header(typeIn, 0)), W(1))
			r.drv.SetDesc(head, r.mem.End()-8, 16, 0, 0)
		}, true},
		{"avail index far ahead", func(r *rig) {
			r.drv.SetAvailIdx(r.drv.AvailIdx() + rigQueue + 1)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, false, true)
			good := add(t, r.drv, false, R(header(typeFlush, 0)), W(1))
			tc.break_(r)
			r.n.Notify()
			var err error
			select {
			case err = <-r.failed:
			case <-time.After(wait):
				t.Fatal("Fail not called")
			}
			if !errors.Is(err, virtio.ErrMalformed) || !strings.Contains(err.Error(), r.path) {
				t.Errorf("Fail(%v): want ErrMalformed naming %s", err, r.path)
			}
			// The worker is gone before Reset: nothing more is served.
			waitWorkers(t, 0)
			if tc.served {
				if r.irq.Count() != 1 {
					t.Errorf("%d interrupts for the request completed before the bad one, want 1", r.irq.Count())
				}
				if head, used, ok := r.drv.Used(); !ok || head != good || used != 1 {
					t.Errorf("completion %d/%d/%v, want the flush", head, used, ok)
				}
			}
			if head, _, ok := r.drv.Used(); ok {
				t.Errorf("request %d completed after the failure", head)
			}
			r.n.Notify()
			r.d.Reset()
		})
	}
}

// TestReset: Reset stops the worker wherever it is, twice is harmless,
// and the device can be activated again and serve requests.
func TestReset(t *testing.T) {
	r := newRig(t, false, true)
	waitWorkers(t, 1)
	r.d.Reset()
	r.d.Reset()
	waitWorkers(t, 0)
	if err := r.d.Activate(virtio.Env{}); err == nil {
		t.Errorf("Activate with no queues succeeded")
	}

	r.activate(t, true)
	if err := r.d.Activate(virtio.Env{Queues: []*virtio.Queue{r.q}, Notifiers: []virtio.Notifier{r.n}, Interrupt: func() {}, Fail: func(error) {}}); err == nil {
		t.Errorf("second Activate succeeded")
	}
	head := add(t, r.drv, false, R(header(typeIn, 1)), W(SectorSize), W(1))
	r.kick(t)
	if used := r.completions(t, 1)[head]; used != SectorSize+1 {
		t.Errorf("used %d after reactivation", used)
	}
	if err := r.d.Close(); err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, 0)
}

// TestResetMidBatch resets the device while its worker is in the middle
// of a batch: the first request (without a status byte) is logged, and
// the log call holds the worker until Reset has asked it to stop. The
// worker must then stop before the next request, and Reset return.
func TestResetMidBatch(t *testing.T) {
	r := newRig(t, false, true)
	started := make(chan struct{})
	r.d.log.logf = func(string, ...any) {
		close(started)
		for !r.d.stop.Load() {
			time.Sleep(time.Millisecond)
		}
	}
	bad := add(t, r.drv, false, R(header(typeIn, 0)))
	for i := range 100 {
		add(t, r.drv, true, R(header(typeIn, uint64(i))), W(SectorSize), W(1))
	}
	r.n.Notify()
	<-started
	r.d.Reset()
	waitWorkers(t, 0)
	if head, used, ok := r.drv.Used(); !ok || head != bad || used != 0 {
		t.Errorf("first completion %d/%d/%v, want the bad request with used length 0", head, used, ok)
	}
	if head, _, ok := r.drv.Used(); ok {
		t.Errorf("request %d served after Reset", head)
	}
}

// TestNotifierClosed: a closed notifier ends the worker, and Reset still
// returns.
func TestNotifierClosed(t *testing.T) {
	r := newRig(t, false, true)
	r.n.Close()
	waitWorkers(t, 0)
	r.d.Reset()
}

// waitWorkers waits for the number of device worker goroutines (in any
// Device of this process) to be want. It looks for the worker in
// goroutine stacks rather than counting goroutines, which timers and
// finished tests disturb.
func waitWorkers(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for workers() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers running, want %d", workers(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func workers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("blk.(*Device).run("))
}
