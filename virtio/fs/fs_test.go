package fs

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/fs/fusetest"
	"github.com/vmm-dev/vmm/virtio/fs/share"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

const root = fuse.FUSE_ROOT_ID

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		tag, dir, want string
	}{
		{"", dir, `virtio-fs tag "": empty`},
		{strings.Repeat("t", TagLen+1), dir, "longer than 36 bytes"},
		{"bad\xff", dir, "not UTF-8"},
		{"a\x00b", dir, "contains NUL"},
		{"share", filepath.Join(dir, "missing"), "virtio-fs share: shared directory " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{"share", file, "not a directory"},
		{"share", "", "no directory given"},
	} {
		_, err := New(Config{Tag: tc.tag, Dir: tc.dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("New(%q, %q) = %v, want one line with %q", tc.tag, tc.dir, err, tc.want)
		}
	}
	d, err := New(Config{Tag: strings.Repeat("é", TagLen/2), Dir: dir})
	if err != nil {
		t.Fatalf("36-byte UTF-8 tag: %v", err)
	}
	d.Close()
}

func TestConfig(t *testing.T) {
	d, err := New(Config{Tag: "myshare", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Type() != 26 || d.Tag() != "myshare" {
		t.Fatalf("type %d tag %q", d.Type(), d.Tag())
	}
	if want := uint64(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc); d.Features() != want {
		t.Fatalf("features %#x, want %#x", d.Features(), want)
	}
	if got := d.QueueMax(); !slices.Equal(got, []uint16{hiprioSize, requestSize}) {
		t.Fatalf("QueueMax %v", got)
	}
	want := make([]byte, 48)
	copy(want, "myshare")
	binary.LittleEndian.PutUint32(want[36:], 1)
	d.WriteConfig(0, []byte("xxxxxxxx")) // ignored
	for _, tc := range []struct{ off, n int }{{0, 48}, {0, 1}, {36, 4}, {38, 2}, {39, 4}, {40, 4}, {100, 4}, {3, 36}} {
		got := bytes.Repeat([]byte{0xee}, tc.n)
		d.ReadConfig(uint64(tc.off), got)
		w := make([]byte, tc.n)
		if tc.off < len(want) {
			copy(w, want[tc.off:])
		}
		if !bytes.Equal(got, w) {
			t.Errorf("ReadConfig(%d, %d) = % x, want % x", tc.off, tc.n, got, w)
		}
	}
}

// TestSession mounts, creates, writes, reads back, lists, renames and
// removes a file through the queues, with requests and replies split
// over many descriptors, direct and indirect.
func TestSession(t *testing.T) {
	r := newRig(t, false, false)
	r.init(t)

	errno, body := r.call(t, fusetest.Encode(fusetest.OpCreate, r.next(), root,
		fuse.CreateIn{Flags: unix.O_RDWR, Mode: 0o644}, fusetest.Name("new")), 4096)
	var co fuse.CreateOut
	if errno != 0 || fusetest.Decode(body, &co) != nil {
		t.Fatalf("CREATE: %v", errno)
	}

	// A write of MaxWrite bytes in 2 KiB pieces (500-odd descriptors,
	// so indirect), one in page-sized pieces direct, and one a byte per
	// descriptor.
	data := make([]byte, share.MaxWrite)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	for _, tc := range []struct {
		piece    int
		indirect bool
		off      uint64
		n        int
	}{{2048, true, 0, share.MaxWrite}, {4096, false, 8192, 64 << 10}, {1, true, 100, 700}} {
		req := fusetest.Encode(fusetest.OpWrite, r.next(), co.NodeId, fuse.WriteIn{Fh: co.Fh, Offset: tc.off, Size: uint32(tc.n)}, data[:tc.n])
		reply := r.run(t, requestQueue, chain{bufs: split(req, 24, tc.piece), indirect: tc.indirect})[0]
		h, body, err := fusetest.Parse(reply)
		var wo fuse.WriteOut
		fusetest.Decode(body, &wo)
		if err != nil || h.Status != 0 || wo.Size != uint32(tc.n) {
			t.Fatalf("WRITE of %d in %d-byte pieces: %v status %d size %d", tc.n, tc.piece, err, h.Status, wo.Size)
		}
	}
	want := slices.Clone(data)
	copy(want[8192:], data[:64<<10])
	copy(want[100:], data[:700])
	if got, _ := os.ReadFile(filepath.Join(r.dir, "new")); !bytes.Equal(got, want) {
		t.Fatalf("host file differs (%d bytes, want %d)", len(got), len(want))
	}
	// Read it back into 4 KiB pieces, indirect.
	req := fusetest.Encode(fusetest.OpRead, r.next(), co.NodeId, fuse.ReadIn{Fh: co.Fh, Size: share.MaxWrite})
	reply := r.run(t, requestQueue, chain{bufs: split(req, share.MaxReply, 4096), indirect: true})[0]
	if h, body, err := fusetest.Parse(reply); err != nil || h.Status != 0 || !bytes.Equal(body, want) {
		t.Fatalf("READ: %v status %d, %d bytes", err, h.Status, len(body))
	}

	errno, body = r.call(t, fusetest.Encode(fusetest.OpGetattr, r.next(), co.NodeId, fuse.GetAttrIn{}), 4096)
	var ao fuse.AttrOut
	if fusetest.Decode(body, &ao); errno != 0 || ao.Size != share.MaxWrite {
		t.Fatalf("GETATTR: %v size %d", errno, ao.Size)
	}
	errno, _ = r.call(t, fusetest.Encode(fusetest.OpRename, r.next(), root, fusetest.RenameIn{Newdir: root}, fusetest.Name("new"), fusetest.Name("renamed")), 4096)
	if errno != 0 {
		t.Fatalf("RENAME: %v", errno)
	}
	errno, body = r.call(t, fusetest.Encode(fusetest.OpOpendir, r.next(), root, fuse.OpenIn{}), 4096)
	var oo fuse.OpenOut
	if fusetest.Decode(body, &oo); errno != 0 {
		t.Fatalf("OPENDIR: %v", errno)
	}
	errno, body = r.call(t, fusetest.Encode(fusetest.OpReaddirplus, r.next(), root, fuse.ReadIn{Fh: oo.Fh, Size: 4096}), 4096+16)
	ents, err := fusetest.ParseDirPlus(body)
	if errno != 0 || err != nil {
		t.Fatalf("READDIRPLUS: %v %v", errno, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{".", "..", "d", "f", "renamed"}) {
		t.Fatalf("READDIRPLUS: %q", names)
	}
	errno, _ = r.call(t, fusetest.Encode(fusetest.OpUnlink, r.next(), root, nil, fusetest.Name("renamed")), 4096)
	if errno != 0 {
		t.Fatalf("UNLINK: %v", errno)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "renamed")); !os.IsNotExist(err) {
		t.Fatalf("renamed still there: %v", err)
	}

	// FORGET on the high-priority queue: completed with nothing written.
	// f was looked up twice, by READDIRPLUS and LOOKUP.
	f := r.lookup(t, root, "f")
	replies := r.run(t, hiprioQueue, chain{bufs: split(fusetest.Encode(fusetest.OpForget, r.next(), f.NodeId, fuse.ForgetIn{Nlookup: 2}), 0, 4096)})
	if len(replies[0]) != 0 {
		t.Fatalf("FORGET: reply of %d bytes", len(replies[0]))
	}
	errno, _ = r.call(t, fusetest.Encode(fusetest.OpGetattr, r.next(), f.NodeId, fuse.GetAttrIn{}), 4096)
	if errno != unix.ESTALE {
		t.Fatalf("GETATTR of a forgotten node: %v, want ESTALE", errno)
	}
}

// TestEventIdx runs a few requests with EVENT_IDX negotiated.
func TestEventIdx(t *testing.T) {
	r := newRig(t, false, true)
	for i := range 5 {
		// With EVENT_IDX, used_event 0 asks for an interrupt only
		// when the used index passes 0; move it along as Linux does.
		r.drv[requestQueue].SetUsedEvent(uint16(i))
		if i == 0 {
			r.init(t)
			continue
		}
		e := r.lookup(t, root, "f")
		if e.Size != 6 {
			t.Fatalf("LOOKUP f: size %d", e.Size)
		}
	}
}

func TestReadOnly(t *testing.T) {
	r := newRig(t, true, false)
	r.init(t)
	errno, _ := r.call(t, fusetest.Encode(fusetest.OpMkdir, r.next(), root, fuse.MkdirIn{Mode: 0o755}, fusetest.Name("x")), 4096)
	if errno != unix.EROFS {
		t.Fatalf("MKDIR on a read-only share: %v, want EROFS", errno)
	}
}

// TestBadChains sends requests whose chains give too little room: none
// for the reply, and too little for it.
func TestBadChains(t *testing.T) {
	r := newRig(t, false, false)
	r.init(t)
	lookup := fusetest.Encode(fusetest.OpLookup, r.next(), root, nil, fusetest.Name("f"))
	replies := r.run(t, requestQueue,
		chain{bufs: split(lookup, 0, 4096)},        // no writable buffer
		chain{bufs: split(lookup, 10, 4096)},       // too short for a header
		chain{bufs: split(lookup, 16, 4096)},       // too short for an entry
		chain{bufs: split(lookup[:30], 100, 4096)}, // truncated request
		chain{bufs: []virtiotest.Buf{virtiotest.W(100)}},
	)
	for i, want := range []int32{1, 1, -int32(unix.EIO), -int32(unix.EINVAL), -int32(unix.EINVAL)} {
		if want == 1 {
			if len(replies[i]) != 0 {
				t.Errorf("chain %d: %d bytes written, want none", i, len(replies[i]))
			}
			continue
		}
		h, _, err := fusetest.Parse(replies[i])
		if err != nil || h.Status != want {
			t.Errorf("chain %d: %v status %d, want %d", i, err, h.Status, want)
		}
	}
}

// TestMalformedQueue checks that a queue the device cannot walk fails
// the device and stops it, and that a reset brings it back.
func TestMalformedQueue(t *testing.T) {
	r := newRig(t, false, false)
	r.init(t)
	drv := r.drv[requestQueue]
	head, err := drv.Add(virtiotest.R(make([]byte, 40)), virtiotest.W(100))
	if err != nil {
		t.Fatal(err)
	}
	addr, length, _, next := drv.Desc(head)
	drv.SetDesc(head, addr, length, virtio.DescFlagNext, next+requestSize) // a next beyond the table
	r.n[requestQueue].Notify()
	select {
	case err := <-r.failed:
		if !strings.Contains(err.Error(), "queue 1") {
			t.Errorf("failure %v does not name the queue", err)
		}
	case <-time.After(wait):
		t.Fatal("no failure")
	}
	r.d.Reset()
	r.activate(t, false)
	errno, _ := r.call(t, fusetest.Encode(fusetest.OpLookup, r.next(), root, nil, fusetest.Name("f")), 4096)
	if errno != unix.EIO {
		t.Fatalf("LOOKUP before INIT after a reset: %v, want EIO", errno)
	}
	r.init(t)
	r.lookup(t, root, "f")
}

// TestOutOfOrder holds the first of several requests in the server and
// checks the others complete without it, then it.
func TestOutOfOrder(t *testing.T) {
	f := newFakeServer()
	r := newRigFor(t, newDevice("fake", f), "", false)
	release := f.hold(1)
	drv := r.drv[requestQueue]
	var heads []uint16
	for i := range 6 {
		h, err := drv.Add(virtiotest.R(fusetest.Encode(fusetest.OpGetattr, uint64(i+1), root, fuse.GetAttrIn{})), virtiotest.W(16))
		if err != nil {
			t.Fatal(err)
		}
		heads = append(heads, h)
	}
	r.n[requestQueue].Notify()
	for range 6 {
		select {
		case <-f.started:
		case <-time.After(wait):
			t.Fatal("requests did not all start")
		}
	}
	deadline := time.Now().Add(wait)
	for r.irq.Count() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d completions while the first request is held, want 5", r.irq.Count())
		}
		r.irq.Wait(10 * time.Millisecond)
	}
	var order []uint16
	for len(order) < 5 {
		h, _, ok := drv.Used()
		if !ok {
			t.Fatal("fewer used elements than interrupts")
		}
		order = append(order, h)
	}
	if slices.Contains(order, heads[0]) {
		t.Fatalf("the held request completed: %v", order)
	}
	close(release)
	for r.irq.Count() < 6 {
		if !r.irq.Wait(wait) {
			t.Fatal("the released request did not complete")
		}
	}
	if h, n, ok := drv.Used(); !ok || h != heads[0] || n != 16 {
		t.Fatalf("last completion %d (%d bytes, %v), want %d", h, n, ok, heads[0])
	}
	r.d.Reset()
	if f.resets != 1 {
		t.Fatalf("server reset %d times, want 1", f.resets)
	}
}

// TestResetWaits checks that Reset waits for a request in flight.
func TestResetWaits(t *testing.T) {
	f := newFakeServer()
	r := newRigFor(t, newDevice("fake", f), "", false)
	release := f.hold(7)
	if _, err := r.drv[requestQueue].Add(virtiotest.R(fusetest.Encode(fusetest.OpGetattr, 7, root, fuse.GetAttrIn{})), virtiotest.W(16)); err != nil {
		t.Fatal(err)
	}
	r.n[requestQueue].Notify()
	<-f.started
	done := make(chan struct{})
	go func() {
		r.d.Reset()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Reset returned with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Reset did not return")
	}
}

func TestActivateErrors(t *testing.T) {
	d := newDevice("fake", newFakeServer())
	if err := d.Activate(virtio.Env{}); err == nil {
		t.Fatal("Activate without queues succeeded")
	}
	mem := virtiotest.NewMem(ramBase, 1<<20)
	env := virtio.Env{
		Mem:       mem,
		Queues:    []*virtio.Queue{virtio.NewQueue(hiprioSize), virtio.NewQueue(requestSize)},
		Notifiers: []virtio.Notifier{virtiotest.NewNotifier(), virtiotest.NewNotifier()},
	}
	if err := d.Activate(env); err == nil {
		t.Fatal("Activate without Interrupt and Fail succeeded")
	}
	env.Interrupt, env.Fail = func() {}, func(error) {}
	if err := d.Activate(env); err != nil { // no queue ready: nothing to do
		t.Fatal(err)
	}
	if err := d.Activate(env); err == nil {
		t.Fatal("second Activate succeeded")
	}
	d.Reset()
	d.Reset()
}
