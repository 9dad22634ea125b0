package machine

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/pm"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/snapshot"
)

// savableFake is a scripted vCPU whose state ioctls a stateFake answers,
// as the KVM vCPU's are: what the save path needs.
type savableFake struct {
	*fakeVCPU
	st *stateFake
}

func (s savableFake) stateIO() vcpuStateIO { return s.st }

// TestSaveOnWait checks the save half of a snapshot without KVM: the
// guest's write to the wait port stops the machine for its snapshot
// (and only with SaveOnWait), and each vCPU thread then enters once more
// and saves its own state, which Snapshot later collects.
func TestSaveOnWait(t *testing.T) {
	for _, saveOnWait := range []bool{true, false} {
		st := &stateFake{}
		fv := newFakeVCPU(0, ioOut(guestabi.WaitPort, 1, 1), ioOut(pmPort+pm.ResetRegOffset, 1, pm.ResetValue))
		m, _ := newFakeMachine(t, Config{SaveOnWait: saveOnWait})
		m.vcpus = append(m.vcpus, savableFake{fv, st})
		m.snap.msrs = []uint32{0x10, 0xc0000080}
		if err := runFake(t, m); err != nil {
			t.Fatal(err)
		}
		if !saveOnWait {
			if r := m.Reason(); r == StopSnapshot || len(m.snap.saved) != 0 {
				t.Fatalf("without SaveOnWait: stopped for %v with %d saved vCPUs; the wait port must mean nothing", r, len(m.snap.saved))
			}
			continue
		}
		if r := m.Reason(); r != StopSnapshot {
			t.Fatalf("stopped for %v, want %v", r, StopSnapshot)
		}
		if len(m.snap.saved) != 1 || len(m.snap.errs) != 0 {
			t.Fatalf("saved %d vCPUs, errors %v", len(m.snap.saved), m.snap.errs)
		}
		if got := m.snap.saved[0].Regs.RIP; got != 7 {
			t.Errorf("saved RIP %#x, want the fake's 7", got)
		}
		calls := strings.Join(st.calls, " ")
		for _, want := range []string{"Regs", "Sregs", "XSave", "LAPIC", "Events", "MPState", "MSRs[16 3221225600]"} {
			if !strings.Contains(calls, want) {
				t.Errorf("save made %q, lacking %s", calls, want)
			}
		}
		if fv.runs < 2 {
			t.Errorf("the vCPU ran %d times: it must enter once more to complete the port write before saving", fv.runs)
		}
	}
}

// TestWaitValue: what the init writes to the wait port is kept for the
// manifest (guestabi.WaitInputPort).
func TestWaitValue(t *testing.T) {
	for _, v := range []byte{guestabi.WaitReady, guestabi.WaitReady | guestabi.WaitInputPort} {
		fv := newFakeVCPU(0, ioOut(guestabi.WaitPort, 1, v))
		m, _ := newFakeMachine(t, Config{SaveOnWait: true})
		m.vcpus = append(m.vcpus, savableFake{fv, &stateFake{}})
		if err := runFake(t, m); err != nil {
			t.Fatal(err)
		}
		if got := m.snap.waitValue.Load(); got != uint32(v) {
			t.Errorf("wait port written %d, kept %d", v, got)
		}
	}
}

// No vCPU reads its state while another may still be in the guest (an
// IPI from its last instructions would miss a LAPIC already read), and
// an exit KVM returns for the completing run (the next piece of a split
// access) is served before the state is read.
func TestSaveWaitsForEveryVCPU(t *testing.T) {
	var mu sync.Mutex
	var events []string
	log := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	v0 := newFakeVCPU(0, ioOut(guestabi.WaitPort, 1, 1))
	v0.pending = []fakeRun{ioOut(com1Port, 1, 'x')} // the completion's exit
	v1 := newFakeVCPU(1)                            // in the guest until kicked
	v1.onLeave = func() {
		time.Sleep(50 * time.Millisecond) // slow out of KVM_RUN
		log("vCPU 1 left the guest")
	}
	st0 := &stateFake{onRec: func(call string) {
		if call == "Regs" {
			log("vCPU 0 read its state")
		}
	}}
	var console strings.Builder
	m, _ := newFakeMachine(t, Config{SaveOnWait: true, Console: &console})
	m.vcpus = append(m.vcpus, savableFake{v0, st0}, savableFake{v1, &stateFake{}})
	if err := runFake(t, m); err != nil {
		t.Fatal(err)
	}
	if m.snap.nsaved != 2 || len(m.snap.errs) != 0 {
		t.Fatalf("saved %d vCPUs, errors %v", m.snap.nsaved, m.snap.errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"vCPU 1 left the guest", "vCPU 0 read its state"}; !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	if console.String() != "x" {
		t.Errorf("console %q: the completing run's exit was not served", console.String())
	}
}

// A vCPU whose thread failed as the machine stopped for its snapshot
// saved nothing, and Snapshot says so rather than write a snapshot
// without it.
func TestSnapshotMissingVCPU(t *testing.T) {
	v0 := newFakeVCPU(0, ioOut(guestabi.WaitPort, 1, 1))
	v1 := newFakeVCPU(1)
	v1.pending = []fakeRun{{err: errors.New("KVM_RUN failed")}}
	m, _ := newFakeMachine(t, Config{SaveOnWait: true})
	m.vcpus = append(m.vcpus, savableFake{v0, &stateFake{}}, savableFake{v1, &stateFake{}})
	runFake(t, m)
	if err := m.Snapshot(t.TempDir(), snapshot.Manifest{}); err == nil || !strings.Contains(err.Error(), "vCPU") {
		t.Fatalf("Snapshot with vCPU 1's state missing: %v", err)
	}
}

// TestSaveOfAnUnsavableVCPU: a vCPU without state ioctls is an error
// Snapshot reports, not a panic or a silent partial snapshot.
func TestSaveOfAnUnsavableVCPU(t *testing.T) {
	fv := newFakeVCPU(0, ioOut(guestabi.WaitPort, 1, 1))
	m, _ := newFakeMachine(t, Config{SaveOnWait: true}, fv)
	if err := runFake(t, m); err != nil {
		t.Fatal(err)
	}
	if len(m.snap.errs) != 1 || !strings.Contains(m.snap.errs[0].Error(), "cannot be saved") {
		t.Fatalf("errors %v, want one saying the state cannot be saved", m.snap.errs)
	}
	if err := m.Snapshot(t.TempDir(), snapshot.Manifest{}); err == nil || !strings.Contains(err.Error(), "cannot be saved") {
		t.Fatalf("Snapshot: %v, want the save error", err)
	}
}

func TestDescribeCPU(t *testing.T) {
	// "AuthenticAMD" in EBX, EDX, ECX of leaf 0, family/model in leaf 1.
	cpuid := []kvm.CPUIDEntry{{Function: 0, EBX: 0x68747541, EDX: 0x69746e65, ECX: 0x444d4163}, {Function: 1, EAX: 0x00830f10}}
	if got := describeCPU(cpuid); !strings.Contains(got, "AuthenticAMD") {
		t.Errorf("describeCPU = %q, want the vendor", got)
	}
	if got := describeCPU(nil); got != "" {
		t.Errorf("describeCPU(nil) = %q, want nothing claimed", got)
	}
}

// A restored TR is available on AMD, as the guest's LTR left it in the
// VMCB, and as KVM reported it elsewhere.
func TestRestoredSregsTR(t *testing.T) {
	amd := []kvm.CPUIDEntry{{Function: 0, EBX: 0x68747541, EDX: 0x69746e65, ECX: 0x444d4163}}
	// "GenuineIntel".
	intel := []kvm.CPUIDEntry{{Function: 0, EBX: 0x756e6547, EDX: 0x49656e69, ECX: 0x6c65746e}}
	for _, tc := range []struct {
		name       string
		cpuid      []kvm.CPUIDEntry
		typ, wantT uint8
	}{
		{"AMD busy", amd, tssBusy, tssAvailable},
		{"AMD available", amd, tssAvailable, tssAvailable},
		{"Intel busy", intel, tssBusy, tssBusy},
		{"no CPUID", nil, tssBusy, tssBusy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := kvm.Sregs{CR0: 0x80050033}
			in.TR = kvm.Segment{Base: 0xfffffe0000003000, Limit: 0x4087, Selector: 0x40, Type: tc.typ, Present: 1}
			out := restoredSregs(in, tc.cpuid)
			if out.TR.Type != tc.wantT {
				t.Errorf("TR type %#x, want %#x", out.TR.Type, tc.wantT)
			}
			out.TR.Type = in.TR.Type
			if out != in {
				t.Errorf("more than TR's type changed: %+v, want %+v", out, in)
			}
		})
	}
}

// The MSRs saved are KVM's list and the PAT and MTRRs it leaves out,
// each once.
func TestWithArchMSRs(t *testing.T) {
	got := withArchMSRs([]uint32{0x10, 0x277, 0xc0000080})
	for _, want := range []uint32{0x10, 0xc0000080, 0x277, 0x2ff, 0x250, 0x258, 0x259, 0x268, 0x26f, 0x200, 0x20f} {
		if n := countOf(got, want); n != 1 {
			t.Errorf("MSR %#x %d times in %#x", want, n, got)
		}
	}
}

func countOf(l []uint32, v uint32) int {
	n := 0
	for _, x := range l {
		if x == v {
			n++
		}
	}
	return n
}
