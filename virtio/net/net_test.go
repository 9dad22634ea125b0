package net

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tap"
	"github.com/vmm-dev/vmm/virtio"
)

var _ virtio.Device = (*Device)(nil)

// The host TAP is a Backend.
var _ Backend = (*tap.Tap)(nil)

func TestFeatures(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0, 1, 2, 3}
	withMAC := New(&memBackend{}, Options{MAC: mac}).Features()
	noMAC := New(&memBackend{}, Options{}).Features()
	for _, tc := range []struct {
		bit          uint
		name         string
		want, wantNo bool // offered with and without a MAC
	}{
		{virtio.FeatureVersion1, "VERSION_1", true, true},
		{virtio.FeatureEventIdx, "EVENT_IDX", true, true},
		{virtio.FeatureIndirectDesc, "INDIRECT_DESC", true, true},
		{FeatureCsum, "CSUM", true, true},
		{FeatureGuestCsum, "GUEST_CSUM", true, true},
		{FeatureMAC, "MAC", true, false},
		{FeatureGuestTSO4, "GUEST_TSO4", true, true},
		{FeatureGuestTSO6, "GUEST_TSO6", true, true},
		{FeatureGuestECN, "GUEST_ECN", true, true},
		{10, "GUEST_UFO", false, false},
		{FeatureHostTSO4, "HOST_TSO4", true, true},
		{FeatureHostTSO6, "HOST_TSO6", true, true},
		{FeatureHostECN, "HOST_ECN", true, true},
		{14, "HOST_UFO", false, false},
		{FeatureMrgRxbuf, "MRG_RXBUF", true, true},
		{FeatureStatus, "STATUS", true, true},
		{17, "CTRL_VQ", false, false},
		{22, "MQ", false, false},
		{3, "MTU", false, false},
	} {
		if got := withMAC&(1<<tc.bit) != 0; got != tc.want {
			t.Errorf("%s offered = %v with a MAC, want %v", tc.name, got, tc.want)
		}
		if got := noMAC&(1<<tc.bit) != 0; got != tc.wantNo {
			t.Errorf("%s offered = %v without a MAC, want %v", tc.name, got, tc.wantNo)
		}
	}
	if d := New(&memBackend{}, Options{}); d.Type() != virtio.TypeNet {
		t.Errorf("Type = %d", d.Type())
	}
}

// With NoOffload, exactly the checksum and segmentation features are
// gone; everything else is offered as without it.
func TestFeaturesNoOffload(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0, 1, 2, 3}
	with := New(&memBackend{}, Options{MAC: mac}).Features()
	without := New(&memBackend{}, Options{MAC: mac, NoOffload: true}).Features()
	for _, tc := range []struct {
		bit  uint
		name string
	}{
		{FeatureCsum, "CSUM"}, {FeatureGuestCsum, "GUEST_CSUM"},
		{FeatureGuestTSO4, "GUEST_TSO4"}, {FeatureGuestTSO6, "GUEST_TSO6"}, {FeatureGuestECN, "GUEST_ECN"},
		{FeatureHostTSO4, "HOST_TSO4"}, {FeatureHostTSO6, "HOST_TSO6"}, {FeatureHostECN, "HOST_ECN"},
	} {
		if without&(1<<tc.bit) != 0 {
			t.Errorf("%s offered with NoOffload", tc.name)
		}
		if with&(1<<tc.bit) == 0 {
			t.Errorf("%s not offered without NoOffload", tc.name)
		}
	}
	if want := with &^ offloadFeatures; without != want {
		t.Errorf("features with NoOffload %#x, want %#x", without, want)
	}
}

// With NoOffload the backend is only ever asked for no offloads, even
// when the features handed to Activate claim some (the transport never
// lets a driver take what was not offered; the device does not rely on
// it).
func TestActivateNoOffload(t *testing.T) {
	all := uint64(1<<FeatureGuestCsum | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestECN)
	for _, feat := range []uint64{0, all} {
		h := newHarness(t, baseFeat|feat, Options{NoOffload: true})
		if err := h.dev.Activate(h.env()); err != nil {
			t.Fatal(err)
		}
		if got := h.be.offloadCalls(); !slices.Equal(got, []uint32{0}) {
			t.Errorf("features %#x: SetOffload calls %#x, want [0]", feat, got)
		}
		h.dev.Reset()
	}
}

func TestQueueMax(t *testing.T) {
	for _, tc := range []struct{ in, want uint16 }{
		{0, 256}, {256, 256}, {64, 64}, {300, 256}, {1, 1}, {32768, 32768}, {65535, 32768},
	} {
		got := New(&memBackend{}, Options{QueueSize: tc.in}).QueueMax()
		if !slices.Equal(got, []uint16{tc.want, tc.want}) {
			t.Errorf("QueueSize %d: QueueMax = %v, want two of %d", tc.in, got, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	d := New(&memBackend{}, Options{MAC: [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}})
	full := []byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef, 1, 0, 1, 0}
	for _, tc := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 6, full[:6]},
		{0, 10, full},
		{6, 2, []byte{StatusLinkUp, 0}},  // status: link up
		{8, 2, []byte{1, 0}},             // max_virtqueue_pairs
		{4, 4, []byte{0xcd, 0xef, 1, 0}}, // across fields
		{8, 8, []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		{10, 4, []byte{0, 0, 0, 0}},
		{0x1000, 2, []byte{0, 0}},
		{^uint64(0), 4, []byte{0, 0, 0, 0}},
		{^uint64(0) - 1, 4, []byte{0, 0, 0, 0}},
		{3, 0, []byte{}},
	} {
		got := bytes.Repeat([]byte{0x99}, tc.n)
		d.ReadConfig(tc.off, got)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("ReadConfig(%#x, %d) = % x, want % x", tc.off, tc.n, got, tc.want)
		}
	}
	// Writes are ignored.
	d.WriteConfig(0, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	got := make([]byte, 10)
	d.ReadConfig(0, got)
	if !bytes.Equal(got, full) {
		t.Errorf("after WriteConfig: % x, want % x", got, full)
	}
}

func TestOffloadFlags(t *testing.T) {
	const (
		csum = 1 << FeatureGuestCsum
		tso4 = 1 << FeatureGuestTSO4
		tso6 = 1 << FeatureGuestTSO6
		ecn  = 1 << FeatureGuestECN
	)
	for _, tc := range []struct {
		features uint64
		want     uint32
	}{
		{0, 0},
		{1 << FeatureCsum, 0}, // host-side offloads do not concern the TAP's reader
		{1<<FeatureHostTSO4 | 1<<FeatureHostTSO6, 0},
		{csum, TunCsum},
		{csum | tso4, TunCsum | TunTSO4},
		{csum | tso6, TunCsum | TunTSO6},
		{csum | tso4 | tso6 | ecn, TunCsum | TunTSO4 | TunTSO6 | TunTSOECN},
		{csum | ecn, TunCsum},  // ECN qualifies TSO only
		{tso4 | tso6 | ecn, 0}, // TSO without CSUM is not allowed
	} {
		if got := offloadFlags(tc.features); got != tc.want {
			t.Errorf("offloadFlags(%#x) = %#x, want %#x", tc.features, got, tc.want)
		}
	}
}

// Activate hands the TAP the offloads the driver accepted, falls back to
// none when the TAP refuses, and fails only when even that is refused.
func TestActivateOffload(t *testing.T) {
	all := uint64(1<<FeatureGuestCsum | 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestECN)
	allFlags := uint32(TunCsum | TunTSO4 | TunTSO6 | TunTSOECN)
	for _, tc := range []struct {
		name      string
		features  uint64
		refuse    func(uint32) error
		wantCalls []uint32
		wantErr   bool
	}{
		{"none", 0, nil, []uint32{0}, false},
		{"all", all, nil, []uint32{allFlags}, false},
		{"refused, fallback", all, func(f uint32) error {
			if f != 0 {
				return errTestOffload
			}
			return nil
		}, []uint32{allFlags, 0}, false},
		{"everything refused", all, func(uint32) error { return errTestOffload }, []uint32{allFlags, 0}, true},
		{"zero refused", 0, func(uint32) error { return errTestOffload }, []uint32{0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, baseFeat|tc.features, Options{})
			h.be.offloadErr = tc.refuse
			err := h.dev.Activate(h.env())
			if (err != nil) != tc.wantErr {
				t.Fatalf("Activate = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, errTestOffload) {
				t.Errorf("Activate error %v does not wrap the backend's", err)
			}
			if got := h.be.offloadCalls(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("SetOffload calls %#x, want %#x", got, tc.wantCalls)
			}
		})
	}
}

func TestActivateRejectsBadEnv(t *testing.T) {
	h := newHarness(t, baseFeat, Options{})
	env := h.env()
	env.Queues = env.Queues[:1]
	if err := h.dev.Activate(env); err == nil {
		t.Error("Activate with one queue succeeded")
	}
	env = h.env()
	env.Notifiers = []virtio.Notifier{nil, h.txn}
	if err := h.dev.Activate(env); err == nil {
		t.Error("Activate with a nil notifier succeeded")
	}
	h.activate()
	if err := h.dev.Activate(h.env()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Activate = %v, want an error", err)
	}
}

// Reset must stop an RX worker parked in Backend.Read (the usual state of
// an idle NIC) promptly, and the device must work after a new Activate,
// as after a guest driver reload.
func TestResetWhileReading(t *testing.T) {
	for _, feat := range []uint64{baseFeat, baseFeat | eventIdx | mergeable} {
		h := newHarness(t, feat, Options{})
		h.activate() // RX is now blocked in Read
		start := time.Now()
		h.resetLikeTransport()
		if d := time.Since(start); d > time.Second {
			t.Errorf("Reset took %v", d)
		}
		// Reset is idempotent.
		h.dev.Reset()

		h.setupQueues()
		head, err := h.rx.Add(w(2048))
		if err != nil {
			t.Fatal(err)
		}
		h.activate()
		f := frameOf(300, 1)
		h.deliver(f)
		u := drainUsed(h.rx)
		if len(u) != 1 || u[0] != (used{head, 300}) {
			t.Fatalf("used after re-activation %v, want [{%d 300}]", u, head)
		}
		if got := h.rx.WrittenBytes(head, 300); !bytes.Equal(got, withNumBuffers(f, 1)) {
			t.Errorf("frame after re-activation differs")
		}

		// TX works again as well.
		h.tx.Add(r(frameOf(100, 2)))
		h.txn.Notify()
		if got := h.recv(); !bytes.Equal(got, frameOf(100, 2)) {
			t.Errorf("TX after re-activation: got %d bytes", len(got))
		}
	}
}

// A frame held for lack of buffers is dropped by Reset, which must not
// wait for buffers that will never come.
func TestResetWithPendingFrame(t *testing.T) {
	h := newHarness(t, baseFeat|mergeable, Options{})
	h.rx.Add(w(100)) // too small for the frame: held while waiting
	h.activate()
	h.send(frameOf(1000, 3))
	h.rxIdle()
	start := time.Now()
	h.resetLikeTransport()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Reset took %v", d)
	}
	if s := h.dev.Stats(); s.RxDropped != 1 || s.RxFrames != 0 {
		t.Errorf("stats %+v, want one RX drop", s)
	}
}
