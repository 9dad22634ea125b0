package virtio_test

import (
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/internal/pack"
	"github.com/vmm-dev/vmm/virtio"
)

// A running transport paused and saved, then restored into a fresh one
// over the same memory, comes back running: same registers, queues set
// up at the saved indices, the device activated with the negotiated
// features, each ready queue signalled once, and the driver interrupted
// once.
func TestMMIOStateRoundTrip(t *testing.T) {
	h := newHarness(t, newFakeDevice(offered, 8, 8))
	features := uint64(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx)
	h.negotiate(features)
	h.setupQueue(0, goodQueue(0))
	h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	envs, _, _ := h.dev.state()
	if len(envs) != 1 {
		t.Fatalf("%d activations, want 1", len(envs))
	}
	q := envs[0].Queues[0]
	virtio.SetIndices(q, 0xfffe) // indices near the wrap survive the trip
	h.m.Pause()
	if h.dev.running() {
		t.Fatal("device still running after Pause")
	}
	s := h.m.State()
	b, err := pack.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back virtio.TransportState
	if err := pack.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, newFakeDevice(offered, 8, 8))
	h2.mem = h.mem
	if err := h2.m.Restore(back); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	envs2, _, misuse := h2.dev.state()
	if misuse != "" || len(envs2) != 1 {
		t.Fatalf("restored device: %d activations, misuse %q", len(envs2), misuse)
	}
	if envs2[0].Features != features {
		t.Errorf("restored features %#x, want %#x", envs2[0].Features, features)
	}
	if got := envs2[0].Queues[0].State(); got != s.Queues[0].Ring {
		t.Errorf("restored queue state %+v, want %+v", got, s.Queues[0].Ring)
	}
	if envs2[0].Queues[1].Ready() {
		t.Error("queue 1 was never set up but is ready after restore")
	}
	if got := h2.r32(virtio.MMIOStatus); got != h.m.State().Status {
		t.Errorf("status %#x after restore, want %#x", got, s.Status)
	}
	if h2.notes[0].n.Load() != 1 || h2.notes[1].n.Load() != 0 {
		t.Errorf("signals after restore: %d, %d; want 1, 0", h2.notes[0].n.Load(), h2.notes[1].n.Load())
	}
	// One used-buffer interrupt, for completions the snapshot's vCPUs
	// may have missed.
	if got := h2.irq.n.Load(); got != 1 {
		t.Errorf("%d interrupts after restore, want 1", got)
	}
	if got := h2.r32(virtio.MMIOInterruptStatus); got&virtio.InterruptUsedBuffer == 0 {
		t.Errorf("InterruptStatus %#x after restore, want the used-buffer bit", got)
	}
	if again := h2.m.State(); again.Queues[0].Ring != s.Queues[0].Ring || again.DriverFeatures != s.DriverFeatures {
		t.Errorf("state after restore %+v, want %+v", again, s)
	}
}

// Restore refuses what does not belong to the device, and leaves the
// transport reset.
func TestMMIORestoreRefuses(t *testing.T) {
	base := func() virtio.TransportState {
		h := newHarness(t, newFakeDevice(offered, 8))
		h.negotiate(1 << virtio.FeatureVersion1)
		h.setupQueue(0, goodQueue(0))
		h.w32(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
		h.m.Pause()
		return h.m.State()
	}
	for _, tc := range []struct {
		name string
		edit func(*virtio.TransportState)
		want string
	}{
		{"type", func(s *virtio.TransportState) { s.Type = virtio.TypeBlock }, "device type"},
		{"offered", func(s *virtio.TransportState) { s.OfferedFeatures ^= 1 << featureNetMAC }, "offered features"},
		{"queues", func(s *virtio.TransportState) { s.Queues = append(s.Queues, s.Queues[0]) }, "queues"},
		{"negotiated", func(s *virtio.TransportState) { s.DriverFeatures |= 1 << 60 }, "beyond the offered"},
		{"ring outside RAM", func(s *virtio.TransportState) { s.Queues[0].Desc = 1 << 40 }, "could not be set up"},
		{"in flight", func(s *virtio.TransportState) { s.Queues[0].Ring.LastAvail = 100 }, "could not be set up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(&s)
			h := newHarness(t, newFakeDevice(offered, 8))
			err := h.m.Restore(s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore: %v, want an error with %q", err, tc.want)
			}
			if h.dev.running() || h.r32(virtio.MMIOStatus) != 0 && tc.want == "could not be set up" {
				t.Errorf("transport not reset after a refused restore (running %v)", h.dev.running())
			}
		})
	}
}
