package virtio_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmm-dev/vmm/bus"
	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// The machine puts the transport on its MMIO bus.
var _ bus.Device = (*virtio.MMIO)(nil)

const (
	memBase = 0x10_0000
	memSize = 0x10000

	featureNetMAC = 5 // a device-specific bit for the fake device
	offered       = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureIndirectDesc | 1<<featureNetMAC
)

// fakeDevice records what the transport asks of it.
type fakeDevice struct {
	typ      virtio.DeviceType
	features uint64
	max      []uint16
	config   [24]byte

	mu          sync.Mutex
	activateErr error
	envs        []virtio.Env
	resets      int
	active      bool
	misuse      string // set when Activate/Reset come in an order the contract forbids
	cfgReads    []uint64
	cfgWrites   []string
}

func newFakeDevice(features uint64, max ...uint16) *fakeDevice {
	d := &fakeDevice{typ: virtio.TypeNet, features: features, max: max}
	for i := range d.config {
		d.config[i] = byte(0xa0 + i)
	}
	return d
}

func (d *fakeDevice) Type() virtio.DeviceType { return d.typ }
func (d *fakeDevice) Features() uint64        { return d.features }
func (d *fakeDevice) QueueMax() []uint16      { return d.max }

func (d *fakeDevice) ReadConfig(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfgReads = append(d.cfgReads, off)
	for i := range data {
		if o := off + uint64(i); o < uint64(len(d.config)) {
			data[i] = d.config[o]
		} else {
			data[i] = 0
		}
	}
}

func (d *fakeDevice) WriteConfig(off uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfgWrites = append(d.cfgWrites, fmt.Sprintf("%#x:%x", off, data))
}

func (d *fakeDevice) Activate(env virtio.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		d.misuse = "Activate twice without Reset"
	}
	d.envs = append(d.envs, env)
	d.active = true
	return d.activateErr
}

func (d *fakeDevice) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.active {
		d.misuse = "Reset without Activate"
	}
	d.resets++
	d.active = false
}

func (d *fakeDevice) state() (envs []virtio.Env, resets int, misuse string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]virtio.Env(nil), d.envs...), d.resets, d.misuse
}

func (d *fakeDevice) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active
}

// countIRQ counts Trigger calls.
type countIRQ struct{ n atomic.Int64 }

func (c *countIRQ) Trigger() { c.n.Add(1) }

// countNotifier counts Signal calls; Wait is never used by the transport.
type countNotifier struct{ n atomic.Int64 }

func (c *countNotifier) Signal()     { c.n.Add(1) }
func (c *countNotifier) Wait() error { return errors.New("not used") }

type harness struct {
	t     *testing.T
	m     *virtio.MMIO
	dev   *fakeDevice
	irq   *countIRQ
	notes []*countNotifier
	mem   virtio.Memory
	logs  []string
}

func newHarness(t *testing.T, dev *fakeDevice) *harness {
	t.Helper()
	h := &harness{t: t, dev: dev, irq: &countIRQ{}, mem: virtiotest.NewMem(memBase, memSize)}
	notifiers := make([]virtio.Notifier, len(dev.max))
	for i := range notifiers {
		n := &countNotifier{}
		h.notes = append(h.notes, n)
		notifiers[i] = n
	}
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		h.logs = append(h.logs, fmt.Sprintf(format, args...))
	}
	m, err := virtio.NewMMIO(dev, h.mem, h.irq, notifiers, logf)
	if err != nil {
		t.Fatalf("NewMMIO: %v", err)
	}
	t.Cleanup(m.Close)
	h.m = m
	return h
}

func (h *harness) r32(off uint64) uint32 {
	var b [4]byte
	h.m.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (h *harness) w32(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	h.m.Write(off, b[:])
}

func (h *harness) w64(lo uint64, v uint64) {
	h.w32(lo, uint32(v))
	h.w32(lo+4, uint32(v>>32))
}

// goodQueue is a valid layout for queue i of size 8: each queue gets its
// own 16 KiB of RAM, each part its own page.
func goodQueue(i int) virtio.QueueConfig {
	b := uint64(memBase + i*0x4000)
	return virtio.QueueConfig{Size: 8, Desc: b, Avail: b + 0x1000, Used: b + 0x2000}
}

// negotiate runs the first steps of virtio v1.2 §3.1.1 and returns the
// status read back after FEATURES_OK.
func (h *harness) negotiate(features uint64) uint32 {
	h.w32(virtio.MMIOStatus, 0)
	h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge)
	h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	h.w32(virtio.MMIODriverFeaturesSel, 1)
	h.w32(virtio.MMIODriverFeatures, uint32(features>>32))
	h.w32(virtio.MMIODriverFeaturesSel, 0)
	h.w32(virtio.MMIODriverFeatures, uint32(features))
	h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	return h.r32(virtio.MMIOStatus)
}

// setupQueue writes cfg to queue i and makes it ready, as Linux's
// vm_setup_vq does.
func (h *harness) setupQueue(i int, cfg virtio.QueueConfig) {
	h.w32(virtio.MMIOQueueSel, uint32(i))
	if got := h.r32(virtio.MMIOQueueReady); got != 0 {
		h.t.Fatalf("queue %d: QueueReady = %d before setup", i, got)
	}
	h.w32(virtio.MMIOQueueNum, uint32(cfg.Size))
	h.w64(virtio.MMIOQueueDescLow, cfg.Desc)
	h.w64(virtio.MMIOQueueDriverLow, cfg.Avail)
	h.w64(virtio.MMIOQueueDeviceLow, cfg.Used)
	h.w32(virtio.MMIOQueueReady, 1)
}

const fullStatus = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK

// start negotiates features, sets up the given queues and sets
// DRIVER_OK.
func (h *harness) start(features uint64, queues map[int]virtio.QueueConfig) {
	h.t.Helper()
	if st := h.negotiate(features); st&virtio.StatusFeaturesOK == 0 {
		h.t.Fatalf("features %#x refused: status %#x, logs %q", features, st, h.logs)
	}
	for i, cfg := range queues {
		h.setupQueue(i, cfg)
	}
	h.w32(virtio.MMIOStatus, fullStatus)
}

func (h *harness) activeEnv() virtio.Env {
	h.t.Helper()
	envs, _, misuse := h.dev.state()
	if misuse != "" {
		h.t.Fatal(misuse)
	}
	if len(envs) == 0 {
		h.t.Fatalf("device not activated: status %#x, logs %q", h.r32(virtio.MMIOStatus), h.logs)
	}
	return envs[len(envs)-1]
}

func TestMMIOIdentity(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 256, 64))
	h.dev.typ = virtio.TypeBlock
	for _, tc := range []struct {
		name string
		sel  uint32 // QueueSel
		off  uint64
		want uint32
	}{
		{"magic", 0, virtio.MMIOMagicValue, 0x74726976},
		{"version", 0, virtio.MMIOVersion, 2},
		{"device ID", 0, virtio.MMIODeviceID, 2},
		{"vendor", 0, virtio.MMIOVendorID, 0x004d4d56},
		{"queue 0 max", 0, virtio.MMIOQueueNumMax, 256},
		{"queue 1 max", 1, virtio.MMIOQueueNumMax, 64},
		{"no queue 2", 2, virtio.MMIOQueueNumMax, 0},
		{"no queue 2^32-1", 0xffffffff, virtio.MMIOQueueNumMax, 0},
		{"queue 1 not ready", 1, virtio.MMIOQueueReady, 0},
		{"no shared memory low", 0, virtio.MMIOSHMLenLow, 0xffffffff},
		{"no shared memory high", 0, virtio.MMIOSHMLenHigh, 0xffffffff},
		{"status after reset", 0, virtio.MMIOStatus, 0},
		{"no interrupt", 0, virtio.MMIOInterruptStatus, 0},
		{"no queue reset", 0, virtio.MMIOQueueReset, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.w32(virtio.MMIOQueueSel, tc.sel)
			if got := h.r32(tc.off); got != tc.want {
				t.Errorf("register %#x = %#x, want %#x", tc.off, got, tc.want)
			}
		})
	}
}

func TestMMIODeviceFeatures(t *testing.T) {
	const features = 1<<virtio.FeatureVersion1 | 1<<35 | 1<<featureNetMAC | 1<<virtio.FeatureEventIdx
	h := newHarness(t, newFakeDevice(features, 8))
	for _, tc := range []struct {
		sel  uint32
		want uint32
	}{
		{0, 1<<featureNetMAC | 1<<virtio.FeatureEventIdx},
		{1, 1<<(virtio.FeatureVersion1-32) | 1<<3},
		{2, 0},
		{0xffffffff, 0},
	} {
		h.w32(virtio.MMIODeviceFeaturesSel, tc.sel)
		if got := h.r32(virtio.MMIODeviceFeatures); got != tc.want {
			t.Errorf("DeviceFeatures word %d = %#x, want %#x", tc.sel, got, tc.want)
		}
	}
}

func TestMMIONegotiation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		driver uint64
		word2  uint32 // written to DriverFeatures with DriverFeaturesSel 2
		ok     bool
	}{
		{"everything offered", offered, 0, true},
		{"VERSION_1 only", 1 << virtio.FeatureVersion1, 0, true},
		{"subset", 1<<virtio.FeatureVersion1 | 1<<featureNetMAC, 0, true},
		{"missing VERSION_1", offered &^ (1 << virtio.FeatureVersion1), 0, false},
		{"nothing", 0, 0, false},
		{"superset low", offered | 1<<7, 0, false},
		{"superset high", offered | 1<<50, 0, false},
		{"beyond bit 63", offered, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newFakeDevice(offered, 8))
			h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
			h.w32(virtio.MMIODriverFeaturesSel, 2)
			h.w32(virtio.MMIODriverFeatures, tc.word2)
			for sel := uint32(0); sel < 2; sel++ {
				h.w32(virtio.MMIODriverFeaturesSel, sel)
				h.w32(virtio.MMIODriverFeatures, uint32(tc.driver>>(32*sel)))
			}
			h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
			st := h.r32(virtio.MMIOStatus)
			if got := st&virtio.StatusFeaturesOK != 0; got != tc.ok {
				t.Fatalf("FEATURES_OK accepted = %v, want %v (status %#x)", got, tc.ok, st)
			}
			if st&^virtio.StatusFeaturesOK != virtio.StatusAcknowledge|virtio.StatusDriver {
				t.Errorf("status %#x lost the driver's other bits", st)
			}
			// DRIVER_OK must start the device exactly when FEATURES_OK
			// was accepted.
			h.setupQueue(0, goodQueue(0))
			h.w32(virtio.MMIOStatus, fullStatus)
			envs, _, _ := h.dev.state()
			if tc.ok {
				if len(envs) != 1 || envs[0].Features != tc.driver {
					t.Fatalf("activations %d, want 1 with features %#x", len(envs), tc.driver)
				}
				if st := h.r32(virtio.MMIOStatus); st != fullStatus {
					t.Errorf("status %#x, want %#x", st, fullStatus)
				}
			} else {
				if len(envs) != 0 {
					t.Fatalf("device activated with refused features %#x", envs[0].Features)
				}
				if st := h.r32(virtio.MMIOStatus); st&virtio.StatusDriverOK != 0 {
					t.Errorf("status %#x has DRIVER_OK without FEATURES_OK", st)
				}
				if len(h.logs) == 0 {
					t.Error("refusal not logged")
				}
			}
		})
	}
}

// TestMMIOFeaturesFinal: once FEATURES_OK is accepted, the driver
// cannot change the negotiated set.
func TestMMIOFeaturesFinal(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	want := uint64(1<<virtio.FeatureVersion1 | 1<<featureNetMAC)
	if st := h.negotiate(want); st&virtio.StatusFeaturesOK == 0 {
		t.Fatalf("refused: %#x", st)
	}
	h.w32(virtio.MMIODriverFeaturesSel, 0)
	h.w32(virtio.MMIODriverFeatures, 0xffffffff)
	h.w32(virtio.MMIODriverFeaturesSel, 1)
	h.w32(virtio.MMIODriverFeatures, 0)
	h.setupQueue(0, goodQueue(0))
	h.w32(virtio.MMIOStatus, fullStatus)
	if got := h.activeEnv().Features; got != want {
		t.Errorf("negotiated %#x, want %#x", got, want)
	}
}

func TestMMIOInitAndReset(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 16, 8, 4))
	features := uint64(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx)
	q2 := goodQueue(2)
	q2.Size = 4
	// Queue 1 is left unused, as a driver may.
	h.start(features, map[int]virtio.QueueConfig{0: goodQueue(0), 2: q2})

	env := h.activeEnv()
	if env.Features != features {
		t.Errorf("Env.Features %#x, want %#x", env.Features, features)
	}
	if env.Mem != h.mem {
		t.Error("Env.Mem is not the transport's memory")
	}
	if len(env.Queues) != 3 || len(env.Notifiers) != 3 {
		t.Fatalf("Env has %d queues and %d notifiers, want 3", len(env.Queues), len(env.Notifiers))
	}
	for i, want := range []bool{true, false, true} {
		if got := env.Queues[i].Ready(); got != want {
			t.Errorf("queue %d Ready = %v, want %v", i, got, want)
		}
		if env.Queues[i].Max() != h.dev.max[i] {
			t.Errorf("queue %d Max = %d, want %d", i, env.Queues[i].Max(), h.dev.max[i])
		}
		if env.Notifiers[i] != virtio.Notifier(h.notes[i]) {
			t.Errorf("Env.Notifiers[%d] is not notifier %d", i, i)
		}
	}
	if env.Interrupt == nil || env.Fail == nil {
		t.Fatal("Env.Interrupt or Env.Fail is nil")
	}
	if st := h.r32(virtio.MMIOStatus); st != fullStatus {
		t.Errorf("status %#x, want %#x", st, fullStatus)
	}
	h.w32(virtio.MMIOQueueSel, 2)
	if h.r32(virtio.MMIOQueueReady) != 1 {
		t.Error("queue 2 QueueReady reads 0 while running")
	}

	// The running queue's registers are frozen.
	h.w32(virtio.MMIOQueueReady, 0)
	if h.r32(virtio.MMIOQueueReady) != 1 {
		t.Error("QueueReady cleared after DRIVER_OK")
	}

	env.Interrupt()
	if h.r32(virtio.MMIOInterruptStatus) != virtio.InterruptUsedBuffer {
		t.Error("no used-buffer interrupt pending before reset")
	}
	gen := h.r32(virtio.MMIOConfigGeneration)

	h.w32(virtio.MMIOStatus, 0)
	_, resets, misuse := h.dev.state()
	if resets != 1 || misuse != "" {
		t.Fatalf("status 0: %d device resets (%s), want 1", resets, misuse)
	}
	for _, r := range []struct {
		name string
		off  uint64
		want uint32
	}{
		{"status", virtio.MMIOStatus, 0},
		{"interrupt status", virtio.MMIOInterruptStatus, 0},
		{"queue 2 ready", virtio.MMIOQueueReady, 0}, // QueueSel also reset to 0
	} {
		if got := h.r32(r.off); got != r.want {
			t.Errorf("after reset %s = %#x, want %#x", r.name, got, r.want)
		}
	}
	if h.r32(virtio.MMIOConfigGeneration) == gen {
		t.Error("ConfigGeneration unchanged by reset")
	}
	for i, q := range env.Queues {
		if q.Ready() {
			t.Errorf("queue %d still ready after reset", i)
		}
	}
	// A second reset with nothing running leaves the device alone.
	h.w32(virtio.MMIOStatus, 0)
	if _, resets, _ := h.dev.state(); resets != 1 {
		t.Errorf("reset of an idle device called dev.Reset (%d resets)", resets)
	}

	// And the driver can start over.
	h.start(features, map[int]virtio.QueueConfig{1: goodQueue(1)})
	env = h.activeEnv()
	if env.Queues[0].Ready() || !env.Queues[1].Ready() {
		t.Error("second activation kept the first one's queues")
	}

	h.m.Close()
	h.m.Close()
	if _, resets, misuse := h.dev.state(); resets != 2 || misuse != "" {
		t.Errorf("Close: %d resets (%s), want 2", resets, misuse)
	}
	h.negotiate(features)
	h.setupQueue(0, goodQueue(0))
	h.w32(virtio.MMIOStatus, fullStatus)
	if envs, _, _ := h.dev.state(); len(envs) != 2 {
		t.Errorf("closed transport activated the device again")
	}
}

func TestMMIODriverOKWithoutFeaturesOK(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status []uint32
	}{
		{"straight to DRIVER_OK", []uint32{virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusDriverOK}},
		{"only DRIVER_OK", []uint32{virtio.StatusDriverOK}},
		{"FAILED with it", []uint32{fullStatus | virtio.StatusFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newFakeDevice(offered, 8))
			h.w32(virtio.MMIODriverFeatures, 0)
			h.w32(virtio.MMIODriverFeaturesSel, 1)
			h.w32(virtio.MMIODriverFeatures, 1)
			h.setupQueue(0, goodQueue(0))
			for _, s := range tc.status {
				h.w32(virtio.MMIOStatus, s)
			}
			if envs, _, _ := h.dev.state(); len(envs) != 0 {
				t.Fatalf("device activated by status %#x", tc.status)
			}
		})
	}
}

func TestMMIOBadQueueSetup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*virtio.QueueConfig)
		num   uint32 // overrides Size when non-zero
		queue int
	}{
		{name: "misaligned descriptors", edit: func(c *virtio.QueueConfig) { c.Desc += 8 }},
		{name: "misaligned used ring", edit: func(c *virtio.QueueConfig) { c.Used += 2 }},
		{name: "descriptors outside RAM", edit: func(c *virtio.QueueConfig) { c.Desc = memBase + memSize }},
		{name: "used ring straddles end of RAM", edit: func(c *virtio.QueueConfig) { c.Used = memBase + memSize - 16 }},
		{name: "avail ring below RAM", edit: func(c *virtio.QueueConfig) { c.Avail = 0 }},
		{name: "address beyond 4 GiB", edit: func(c *virtio.QueueConfig) { c.Desc |= 1 << 40 }},
		{name: "size not a power of 2", edit: func(c *virtio.QueueConfig) { c.Size = 6 }},
		{name: "size 0", num: 0, edit: func(c *virtio.QueueConfig) { c.Size = 0 }},
		{name: "size above max", edit: func(c *virtio.QueueConfig) { c.Size = 16 }},
		{name: "size above 16 bits", num: 0x10008},
		{name: "second queue bad", queue: 1, edit: func(c *virtio.QueueConfig) { c.Avail = 1 << 62 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newFakeDevice(offered, 8, 8))
			if st := h.negotiate(offered); st&virtio.StatusFeaturesOK == 0 {
				t.Fatalf("features refused")
			}
			for i := 0; i <= tc.queue; i++ {
				cfg := goodQueue(i)
				if i == tc.queue && tc.edit != nil {
					tc.edit(&cfg)
				}
				h.setupQueue(i, cfg)
				if i == tc.queue && tc.num != 0 {
					h.w32(virtio.MMIOQueueReady, 0)
					h.w32(virtio.MMIOQueueNum, tc.num)
					h.w32(virtio.MMIOQueueReady, 1)
				}
			}
			h.w32(virtio.MMIOStatus, fullStatus)
			if envs, _, _ := h.dev.state(); len(envs) != 0 {
				t.Fatal("device activated with a bad queue")
			}
			if st := h.r32(virtio.MMIOStatus); st != fullStatus|virtio.StatusDeviceNeedsReset {
				t.Errorf("status %#x, want %#x", st, fullStatus|virtio.StatusDeviceNeedsReset)
			}
			if isr := h.r32(virtio.MMIOInterruptStatus); isr != virtio.InterruptConfigChange {
				t.Errorf("interrupt status %#x, want config change", isr)
			}
			if n := h.irq.n.Load(); n != 1 {
				t.Errorf("%d interrupts, want 1", n)
			}
			if len(h.logs) != 1 || !strings.Contains(h.logs[0], fmt.Sprintf("queue %d", tc.queue)) {
				t.Errorf("logs %q, want one naming queue %d", h.logs, tc.queue)
			}
			// Reset clears it and a good setup then works.
			h.w32(virtio.MMIOStatus, 0)
			if _, resets, _ := h.dev.state(); resets != 0 {
				t.Error("dev.Reset called for a device never activated")
			}
			if st := h.r32(virtio.MMIOStatus); st != 0 {
				t.Errorf("status after reset %#x", st)
			}
			h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0), 1: goodQueue(1)})
			h.activeEnv()
		})
	}
}

func TestMMIOQueueRegistersLocked(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	h.negotiate(offered)
	h.setupQueue(0, goodQueue(0))
	// Ready queue: these are ignored, so the good layout stays.
	h.w32(virtio.MMIOQueueNum, 3)
	h.w64(virtio.MMIOQueueDescLow, 1)
	h.w64(virtio.MMIOQueueDeviceLow, 1<<60)
	h.w32(virtio.MMIOStatus, fullStatus)
	env := h.activeEnv()
	if !env.Queues[0].Ready() {
		t.Fatal("queue 0 not ready")
	}
	if st := h.r32(virtio.MMIOStatus); st != fullStatus {
		t.Errorf("status %#x, want %#x", st, fullStatus)
	}
}

func TestMMIOActivateError(t *testing.T) {
	dev := newFakeDevice(offered, 8)
	dev.activateErr = errors.New("no backend")
	h := newHarness(t, dev)
	h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0)})
	if st := h.r32(virtio.MMIOStatus); st != fullStatus|virtio.StatusDeviceNeedsReset {
		t.Errorf("status %#x, want NEEDS_RESET", st)
	}
	if isr := h.r32(virtio.MMIOInterruptStatus); isr != virtio.InterruptConfigChange {
		t.Errorf("interrupt status %#x", isr)
	}
	if len(h.logs) != 1 || !strings.Contains(h.logs[0], "no backend") {
		t.Errorf("logs %q", h.logs)
	}
	// The device may have started something before failing: reset it.
	h.w32(virtio.MMIOStatus, 0)
	if _, resets, misuse := h.dev.state(); resets != 1 || misuse != "" {
		t.Errorf("%d resets (%s), want 1", resets, misuse)
	}
}

func TestMMIONotify(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value uint32
		want  []int64
	}{
		{"queue 0", 0, []int64{1, 0, 0}},
		{"queue 2", 2, []int64{0, 0, 1}},
		{"no queue 3", 3, []int64{0, 0, 0}},
		{"no queue 2^32-1", 0xffffffff, []int64{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newFakeDevice(offered, 8, 8, 8))
			h.w32(virtio.MMIOQueueNotify, tc.value)
			for i, n := range h.notes {
				if got := n.n.Load(); got != tc.want[i] {
					t.Errorf("notifier %d signalled %d times, want %d", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestMMIOInterrupt(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0)})
	env := h.activeEnv()
	steps := []struct {
		name    string
		do      func()
		isr     uint32
		irqs    int64
		needsRS bool
	}{
		{"used buffer", env.Interrupt, 1, 1, false},
		{"again", env.Interrupt, 1, 2, false},
		{"ack other bit", func() { h.w32(virtio.MMIOInterruptACK, 2) }, 1, 2, false},
		{"ack", func() { h.w32(virtio.MMIOInterruptACK, 1) }, 0, 2, false},
		{"fail", func() { env.Fail(errors.New("bad chain")) }, 2, 3, true},
		{"used buffer after fail", env.Interrupt, 3, 4, true},
		{"ack both", func() { h.w32(virtio.MMIOInterruptACK, 3) }, 0, 4, true},
	}
	for _, s := range steps {
		s.do()
		if got := h.r32(virtio.MMIOInterruptStatus); got != s.isr {
			t.Errorf("%s: interrupt status %#x, want %#x", s.name, got, s.isr)
		}
		if got := h.irq.n.Load(); got != s.irqs {
			t.Errorf("%s: %d interrupts, want %d", s.name, got, s.irqs)
		}
		st := h.r32(virtio.MMIOStatus)
		if got := st&virtio.StatusDeviceNeedsReset != 0; got != s.needsRS {
			t.Errorf("%s: status %#x, NEEDS_RESET want %v", s.name, st, s.needsRS)
		}
	}
	if len(h.logs) != 1 || !strings.Contains(h.logs[0], "bad chain") {
		t.Errorf("logs %q, want the failure", h.logs)
	}
	// Fail from an activation that was reset is ignored.
	h.w32(virtio.MMIOStatus, 0)
	h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0)})
	env.Fail(errors.New("stale"))
	if st := h.r32(virtio.MMIOStatus); st != fullStatus {
		t.Errorf("stale Fail: status %#x", st)
	}
}

func TestMMIOAccessWidth(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	for _, tc := range []struct {
		name string
		off  uint64
		n    int
	}{
		{"byte", virtio.MMIOMagicValue, 1},
		{"half", virtio.MMIOMagicValue, 2},
		{"quad", virtio.MMIOMagicValue, 8},
		{"unaligned", virtio.MMIOMagicValue + 2, 4},
		{"unaligned byte", virtio.MMIOVersion + 1, 1},
		{"empty", virtio.MMIOMagicValue, 0},
		{"straddles config", virtio.MMIOConfig - 2, 4},
		{"config 3 bytes", virtio.MMIOConfig, 3},
		{"config past the window", virtio.MMIOSize - 4, 8},
		{"beyond the window", virtio.MMIOSize, 4},
		{"far beyond", 1 << 63, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.n)
			for i := range data {
				data[i] = 0xee
			}
			h.m.Read(tc.off, data)
			for i, b := range data {
				if b != 0 {
					t.Fatalf("byte %d = %#x, want 0", i, b)
				}
			}
		})
	}
	// Odd-width writes are ignored.
	h.m.Write(virtio.MMIOStatus, []byte{virtio.StatusAcknowledge})
	h.m.Write(virtio.MMIOStatus, []byte{virtio.StatusAcknowledge, 0})
	h.m.Write(virtio.MMIOStatus, []byte{virtio.StatusAcknowledge, 0, 0, 0, 0, 0, 0, 0})
	h.m.Write(virtio.MMIOStatus+1, []byte{virtio.StatusAcknowledge, 0, 0, 0})
	h.m.Write(virtio.MMIOQueueNotify, []byte{0, 0})
	if st := h.r32(virtio.MMIOStatus); st != 0 {
		t.Errorf("odd-width status write took effect: %#x", st)
	}
	if n := h.notes[0].n.Load(); n != 0 {
		t.Errorf("odd-width notify signalled")
	}
	if len(h.dev.cfgReads)+len(h.dev.cfgWrites) != 0 {
		t.Errorf("odd config accesses reached the device: %v %v", h.dev.cfgReads, h.dev.cfgWrites)
	}
	// Rate limited: one line for all of those.
	if len(h.logs) != 1 {
		t.Errorf("%d log lines, want 1: %q", len(h.logs), h.logs)
	}
}

func TestMMIOConfigSpace(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	for _, tc := range []struct {
		off    uint64 // window offset
		n      int
		want   []byte
		devOff uint64
	}{
		{virtio.MMIOConfig, 1, []byte{0xa0}, 0},
		{virtio.MMIOConfig + 6, 2, []byte{0xa6, 0xa7}, 6},
		{virtio.MMIOConfig + 20, 4, []byte{0xb4, 0xb5, 0xb6, 0xb7}, 20},
		{virtio.MMIOConfig + 8, 8, []byte{0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}, 8},
		{virtio.MMIOConfig + 22, 4, []byte{0xb6, 0xb7, 0, 0}, 22}, // device zero-fills past its end
		{virtio.MMIOSize - 8, 8, make([]byte, 8), 0xf8},
	} {
		data := make([]byte, tc.n)
		h.m.Read(tc.off, data)
		if string(data) != string(tc.want) {
			t.Errorf("read %d at %#x = %x, want %x", tc.n, tc.off, data, tc.want)
		}
		if got := h.dev.cfgReads[len(h.dev.cfgReads)-1]; got != tc.devOff {
			t.Errorf("read at %#x reached device offset %#x, want %#x", tc.off, got, tc.devOff)
		}
	}
	h.m.Write(virtio.MMIOConfig+4, []byte{1, 2})
	h.m.Write(virtio.MMIOConfig, []byte{9, 8, 7, 6, 5, 4, 3, 2})
	want := []string{"0x4:0102", "0x0:0908070605040302"}
	if fmt.Sprint(h.dev.cfgWrites) != fmt.Sprint(want) {
		t.Errorf("config writes %q, want %q", h.dev.cfgWrites, want)
	}
}

func TestMMIONoSuchQueue(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8))
	h.negotiate(offered)
	h.w32(virtio.MMIOQueueSel, 1)
	if got := h.r32(virtio.MMIOQueueNumMax); got != 0 {
		t.Errorf("QueueNumMax of queue 1 = %d, want 0", got)
	}
	h.w32(virtio.MMIOQueueNum, 8)
	h.w64(virtio.MMIOQueueDescLow, memBase)
	h.w32(virtio.MMIOQueueReady, 1)
	if got := h.r32(virtio.MMIOQueueReady); got != 0 {
		t.Errorf("QueueReady of queue 1 = %d after writing 1", got)
	}
	// Queue 0 was not touched by those writes: still unready, so the
	// device starts with no ready queue.
	h.w32(virtio.MMIOStatus, fullStatus)
	if env := h.activeEnv(); len(env.Queues) != 1 || env.Queues[0].Ready() {
		t.Errorf("writes to a missing queue reached queue 0")
	}
}

func TestNewMMIOErrors(t *testing.T) {
	notes := func(n int) []virtio.Notifier {
		s := make([]virtio.Notifier, n)
		for i := range s {
			s[i] = &countNotifier{}
		}
		return s
	}
	mem := virtiotest.NewMem(memBase, memSize)
	for _, tc := range []struct {
		name  string
		dev   *fakeDevice
		notes []virtio.Notifier
	}{
		{"no VERSION_1", newFakeDevice(1<<featureNetMAC, 8), notes(1)},
		{"packed ring", newFakeDevice(offered|1<<34, 8), notes(1)},
		{"ring reset", newFakeDevice(offered|1<<40, 8), notes(1)},
		{"too few notifiers", newFakeDevice(offered, 8, 8), notes(1)},
		{"too many notifiers", newFakeDevice(offered, 8), notes(2)},
		{"nil notifier", newFakeDevice(offered, 8), []virtio.Notifier{nil}},
		{"no queues", newFakeDevice(offered), nil},
		{"max 0", newFakeDevice(offered, 0), notes(1)},
		{"max not a power of 2", newFakeDevice(offered, 8, 100), notes(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := virtio.NewMMIO(tc.dev, mem, &countIRQ{}, tc.notes, nil); err == nil {
				t.Error("NewMMIO succeeded")
			}
		})
	}
	if _, err := virtio.NewMMIO(newFakeDevice(offered, 32768), mem, &countIRQ{}, notes(1), nil); err != nil {
		t.Errorf("largest queue refused: %v", err)
	}
}

func TestMMIOAllocs(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8, 8))
	h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0)})
	env := h.activeEnv()
	if n := testing.AllocsPerRun(100, env.Interrupt); n != 0 {
		t.Errorf("Env.Interrupt allocates %v times", n)
	}
	notify := []byte{1, 0, 0, 0}
	if n := testing.AllocsPerRun(100, func() { h.m.Write(virtio.MMIOQueueNotify, notify) }); n != 0 {
		t.Errorf("QueueNotify write allocates %v times", n)
	}
	ack := []byte{1, 0, 0, 0}
	isr := make([]byte, 4)
	if n := testing.AllocsPerRun(100, func() {
		h.m.Read(virtio.MMIOInterruptStatus, isr)
		h.m.Write(virtio.MMIOInterruptACK, ack)
	}); n != 0 {
		t.Errorf("interrupt acknowledgement allocates %v times", n)
	}
	if h.notes[1].n.Load() < 100 {
		t.Error("notify writes did not reach notifier 1")
	}
}

// TestMMIOConcurrent drives the registers from several "vCPUs" while the
// device raises interrupts and fails; run with -race.
func TestMMIOConcurrent(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8, 8))
	h.start(offered, map[int]virtio.QueueConfig{0: goodQueue(0), 1: goodQueue(1)})
	env := h.activeEnv()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 4)
			for i := 0; i < 200; i++ {
				switch (g + i) % 5 {
				case 0:
					env.Interrupt()
				case 1:
					h.m.Read(virtio.MMIOInterruptStatus, b)
					h.m.Write(virtio.MMIOInterruptACK, b)
				case 2:
					h.m.Read(virtio.MMIOStatus, b)
				case 3:
					h.m.Write(virtio.MMIOQueueSel, []byte{byte(i % 3), 0, 0, 0})
					h.m.Read(virtio.MMIOQueueNumMax, b)
				case 4:
					h.m.Write(virtio.MMIOQueueNotify, []byte{byte(i % 2), 0, 0, 0})
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		env.Fail(errors.New("concurrent"))
	}()
	wg.Wait()
	if st := h.r32(virtio.MMIOStatus); st != fullStatus|virtio.StatusDeviceNeedsReset {
		t.Errorf("status %#x", st)
	}
	if h.irq.n.Load() < 1+200*4/5 {
		t.Errorf("only %d interrupts", h.irq.n.Load())
	}
}
