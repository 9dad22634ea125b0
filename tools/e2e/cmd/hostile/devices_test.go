//go:build linux && amd64 && !race

// Not under the race detector: these tests run the guest program's
// driver against vmm's device workers on one []byte of "guest RAM",
// which both sides read and write without Go synchronization, exactly
// as a guest and a device share RAM (ordered by the virtio ring's
// barriers, which the detector does not see). make unit runs them
// without -race.

package main

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/usernet"
	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/blk"
	vnet "github.com/vmm-dev/vmm/virtio/net"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// fakeMachine is vmm's own devices (virtio-blk on two images, virtio-net
// on a user network) behind vmm's own virtio-mmio transport, with guest
// RAM on a byte slice: what the hostile program meets in a guest, minus
// KVM, so the case tables run here exactly as they do there.
type fakeMachine struct {
	mem       *virtiotest.Mem
	pages     []dmaPage
	rw, ro    *device
	nic       *device
	mac       net.HardwareAddr
	capacity  uint64
	logs      *strings.Builder
	notifiers []*virtiotest.Notifier
}

// countingBus counts register accesses: each is an exit to vmm's
// userspace in a guest (QueueNotify aside, which an ioeventfd takes).
type countingBus struct {
	registers
	accesses, notifies int
}

func (c *countingBus) Read(off uint64, data []byte) {
	c.accesses++
	c.registers.Read(off, data)
}

func (c *countingBus) Write(off uint64, data []byte) {
	if off == regQueueNotify {
		c.notifies++
	} else {
		c.accesses++
	}
	c.registers.Write(off, data)
}

// testWriter sends the report's lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	m := &fakeMachine{mem: virtiotest.NewMem(0, 16<<20), logs: &strings.Builder{}, mac: net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}}
	for i := 0; i < 11; i++ {
		off := uint64(1<<20 + i*pageSize)
		m.pages = append(m.pages, dmaPage{b: m.mem.RAM()[off : off+pageSize : off+pageSize], phys: off})
	}
	logf := func(format string, args ...any) {
		// Device goroutines log too; the builder is only read after
		// every device was reset.
		t.Logf("vmm: "+format, args...)
	}
	attach := func(name string, dev virtio.Device, queues int) *device {
		ns := make([]virtio.Notifier, queues)
		for i := range ns {
			n := virtiotest.NewNotifier()
			m.notifiers = append(m.notifiers, n)
			ns[i] = n
		}
		tr, err := virtio.NewMMIO(dev, m.mem, virtiotest.NewInterrupt(), ns, logf)
		if err != nil {
			t.Fatal(err)
		}
		d := &device{mmioDevice: mmioDevice{name: name}, bus: &countingBus{registers: tr}}
		d.id = d.r32(regDeviceID)
		return d
	}
	dir := t.TempDir()
	image := func(name string, seed uint64) string {
		b := make([]byte, 1<<20)
		rng := rand.New(rand.NewPCG(seed, seed))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, d := range []struct {
		dev      **device
		name     string
		readOnly bool
	}{{&m.rw, "rw", false}, {&m.ro, "ro", true}} {
		b, err := blk.Open(blk.Options{Path: image(d.name+".img", 1), ReadOnly: d.readOnly, Logf: logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		*d.dev = attach("blk-"+d.name, b, 1)
	}
	un, err := usernet.New(usernet.Config{Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { un.Close() })
	var mac [6]byte
	copy(mac[:], m.mac)
	m.nic = attach("net", vnet.New(un, vnet.Options{MAC: mac, Logf: logf}), 2)
	t.Cleanup(func() {
		for _, d := range []*device{m.rw, m.ro, m.nic} {
			d.reset()
		}
		for _, n := range m.notifiers {
			n.Close()
		}
	})
	m.capacity = m.rw.capacity()
	return m
}

// Every case the hostile program makes, on vmm's own devices: each gets
// the answer its table says, and both devices still work afterwards. A
// case whose expectation is not what vmm does (or what the spec asks)
// fails here before it costs a nested run.
func TestCasesOnVMMDevices(t *testing.T) {
	m := newFakeMachine(t)
	if m.nic.id != deviceNet || m.rw.id != deviceBlock {
		t.Fatalf("device IDs %d %d", m.nic.id, m.rw.id)
	}
	rep := &report{w: testWriter{t}}
	attackDisks(rep, m.rw, m.ro, m.capacity, m.pages[0], bufs{misc: m.pages[1], data: m.pages[2]})
	n := newNIC(m.nic, m.mac, m.pages[6:11])
	attackNIC(rep, n)
	detail, err := n.roundTrip()
	rep.check("recovery-net", detail, err)
	// What the cases cost in exits to vmm's userspace (the guest's
	// emulator crashes grow with them).
	for _, d := range []*device{m.rw, m.ro, m.nic} {
		c := d.bus.(*countingBus)
		t.Logf("%s: %d register accesses besides %d notifications", d.name, c.accesses, c.notifies)
	}
	if rep.failed != 0 {
		t.Errorf("%d of %d cases failed", rep.failed, rep.failed+rep.ok)
	}
	rx, tx := netTargets(n.d, n.mac, n.rings, n.b, n.arpPage)
	want := len(queueCrafts(&target{chain: blkChain}, blkHonest)) + len(blkCrafts(m.capacity)) + len(roCrafts()) +
		len(queueCrafts(rx, rxHonest(rx, m.mac))) + len(rxCrafts(rx, m.mac)) +
		len(queueCrafts(tx, txHonest(tx))) + len(txCrafts(tx)) + 3 // honest-arp, missing-queue, recovery
	if rep.ok != want {
		t.Errorf("%d cases ok, want %d", rep.ok, want)
	}
}

// runCraft fails a case whose device does not answer as the case says:
// the check is not a formality.
func TestRunCraftCatchesMismatch(t *testing.T) {
	m := newFakeMachine(t)
	n := newNIC(m.nic, m.mac, m.pages[6:11])
	rx, tx := netTargets(n.d, n.mac, n.rings, n.b, n.arpPage)
	blkT := &target{d: m.rw, queue: 0, queues: 1, rings: m.pages[0:1], b: bufs{misc: m.pages[1], data: m.pages[2]}, chain: blkChain}
	byName := func(cs []craft, name string) craft {
		for _, c := range cs {
			if c.name == name {
				return c
			}
		}
		t.Fatalf("no case %s", name)
		return craft{}
	}
	otherMAC := net.HardwareAddr{0x52, 0x54, 0, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		t    *target
		c    craft
	}{
		{"honest read called malformed", blkT, func() craft { c := blkHonest; c.want = malformed; return c }()},
		{"honest read with the wrong length", blkT, func() craft { c := blkHonest; c.usedLen = 1; return c }()},
		{"queue-size-7 called honest", blkT, func() craft {
			c := byName(queueCrafts(blkT, blkHonest), "queue-size-7")
			c.want = completes
			c.build = blkHonest.build
			return c
		}()},
		{"desc-loop called a completion", tx, func() craft {
			c := byName(queueCrafts(tx, txHonest(tx)), "desc-loop")
			c.want, c.check = completes, usedZero(0)
			return c
		}()},
		{"an ARP reply for another MAC", rx, rxHonest(rx, otherMAC)},
		{"num_buffers 1 where 2 chains are used", rx, func() craft {
			c := byName(rxCrafts(rx, m.mac), "rx-mrg-num-buffers")
			c.check = mergedFrame(m.mac, []uint32{3})
			return c
		}()},
		{"a frame expected in an RX chain too small for the header", rx, func() craft {
			c := byName(rxCrafts(rx, m.mac), "rx-buffer-shorter-than-header")
			c.check = rxFrame(m.mac, 0, 3)
			return c
		}()},
	}
	for _, tt := range tests {
		if detail, err := runCraft(tt.t, tt.c); err == nil {
			t.Errorf("%s: passed (%s)", tt.name, detail)
		} else {
			t.Logf("%s: %v", tt.name, err)
		}
	}
}

// The ARP request is what RFC 826 has, and the reply check takes only
// the gateway's answer to this guest.
func TestARP(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}
	req := arpRequest(mac)
	if len(req) != netHdrSize+42 || !bytes.Equal(req[:netHdrSize], make([]byte, netHdrSize)) {
		t.Fatalf("request % x", req)
	}
	gw := net.HardwareAddr{0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd}
	reply := func(edit func(f []byte)) []byte {
		f := make([]byte, 42)
		copy(f[0:6], mac)
		copy(f[6:12], gw)
		f[12], f[13] = 0x08, 0x06
		a := f[14:]
		copy(a, req[netHdrSize+14:netHdrSize+22])
		a[7] = 2
		copy(a[8:14], gw)
		copy(a[14:18], netGatewayIP[:])
		copy(a[18:24], mac)
		copy(a[24:28], netGuestIP[:])
		if edit != nil {
			edit(f)
		}
		return f
	}
	tests := []struct {
		name    string
		frame   []byte
		wantErr string
	}{
		{"the reply", reply(nil), ""},
		{"padded to 60 bytes", append(reply(nil), make([]byte, 18)...), ""},
		{"short", reply(nil)[:41], "42 bytes"},
		{"for another MAC", reply(func(f []byte) { f[5] ^= 1 }), "want one for"},
		{"IPv4", reply(func(f []byte) { f[13] = 0 }), "ethertype"},
		{"a request", reply(func(f []byte) { f[21] = 1 }), "operation 1"},
		{"from another address", reply(func(f []byte) { f[31] = 3 }), "ARP reply from 10.0.2.3"},
	}
	for _, tt := range tests {
		got, err := checkARPReply(tt.frame, mac)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr == "" && !bytes.Equal(got, gw):
			t.Errorf("%s: gateway %v, want %v", tt.name, got, gw)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if f := silentFrame(mac); len(f) != netHdrSize+60 || !bytes.Equal(f[netHdrSize:netHdrSize+6], netNowhere) || f[netHdrSize]&1 != 0 {
		t.Errorf("silent frame % x: want 60 bytes to a unicast address nobody has", f)
	}
}
