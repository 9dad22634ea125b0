package machine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/pack"
	"github.com/vmm-dev/vmm/internal/pack/packtest"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/snapshot"
	"github.com/vmm-dev/vmm/virtio"
)

// stateFake is a vCPU's state ioctls recorded in order; MSRs it is told
// are unreadable fail as KVM_GET_MSRS does.
type stateFake struct {
	calls      []string
	unreadable map[uint32]bool
	failSet    string
	onRec      func(call string) // if not nil, told of every call
	// tscKHz is the vCPU's TSC rate (0: 2 GHz); noTSCScaling makes
	// SetTSCKHz fail, as KVM does where it cannot scale, after it has
	// recorded the rate asked for, as KVM does too (kvm_set_tsc_khz sets
	// virtual_tsc_khz, which KVM_GET_TSC_KHZ returns, before it fails).
	tscKHz       uint32
	noTSCScaling bool
}

func (f *stateFake) rec(s string) error {
	f.calls = append(f.calls, s)
	if f.onRec != nil {
		f.onRec(s)
	}
	if s == f.failSet {
		return errors.New("refused")
	}
	return nil
}
func (f *stateFake) ID() int                          { return 1 }
func (f *stateFake) SetCPUID2([]kvm.CPUIDEntry) error { return f.rec("SetCPUID2") }
func (f *stateFake) TSCKHz() (uint32, error) {
	if f.tscKHz != 0 {
		return f.tscKHz, f.rec("TSCKHz")
	}
	return 2000000, f.rec("TSCKHz")
}
func (f *stateFake) SetTSCKHz(khz uint32) error {
	if f.noTSCScaling {
		f.tscKHz = khz
		f.rec("SetTSCKHz")
		return errors.New("invalid argument")
	}
	f.tscKHz = khz
	return f.rec("SetTSCKHz")
}
func (f *stateFake) Regs() (kvm.Regs, error)           { return kvm.Regs{RIP: 7}, f.rec("Regs") }
func (f *stateFake) SetRegs(kvm.Regs) error            { return f.rec("SetRegs") }
func (f *stateFake) Sregs() (kvm.Sregs, error)         { return kvm.Sregs{}, f.rec("Sregs") }
func (f *stateFake) SetSregs(kvm.Sregs) error          { return f.rec("SetSregs") }
func (f *stateFake) FPU() (kvm.FPU, error)             { return kvm.FPU{}, f.rec("FPU") }
func (f *stateFake) SetFPU(kvm.FPU) error              { return f.rec("SetFPU") }
func (f *stateFake) XSave() (kvm.XSave, error)         { return kvm.XSave{}, f.rec("XSave") }
func (f *stateFake) SetXSave(kvm.XSave) error          { return f.rec("SetXSave") }
func (f *stateFake) XCRs() (kvm.XCRs, error)           { return kvm.XCRs{}, f.rec("XCRs") }
func (f *stateFake) SetXCRs(kvm.XCRs) error            { return f.rec("SetXCRs") }
func (f *stateFake) LAPIC() (kvm.LAPICState, error)    { return kvm.LAPICState{}, f.rec("LAPIC") }
func (f *stateFake) SetLAPIC(kvm.LAPICState) error     { return f.rec("SetLAPIC") }
func (f *stateFake) Events() (kvm.VCPUEvents, error)   { return kvm.VCPUEvents{}, f.rec("Events") }
func (f *stateFake) SetEvents(kvm.VCPUEvents) error    { return f.rec("SetEvents") }
func (f *stateFake) MPState() (kvm.MPState, error)     { return kvm.MPState{}, f.rec("MPState") }
func (f *stateFake) SetMPState(kvm.MPState) error      { return f.rec("SetMPState") }
func (f *stateFake) DebugRegs() (kvm.DebugRegs, error) { return kvm.DebugRegs{}, f.rec("DebugRegs") }
func (f *stateFake) SetDebugRegs(kvm.DebugRegs) error  { return f.rec("SetDebugRegs") }
func (f *stateFake) SetMSRs([]kvm.MSREntry) error      { return f.rec("SetMSRs") }
func (f *stateFake) MSRs(idx []uint32) ([]kvm.MSREntry, error) {
	f.calls = append(f.calls, fmt.Sprintf("MSRs%v", idx))
	var out []kvm.MSREntry
	for _, i := range idx {
		if f.unreadable[i] {
			return nil, fmt.Errorf("MSR %#x", i)
		}
		out = append(out, kvm.MSREntry{Index: i, Data: uint64(i) * 2})
	}
	return out, nil
}

func TestSaveVCPUSkipsUnreadableMSRs(t *testing.T) {
	f := &stateFake{unreadable: map[uint32]bool{0x11: true}}
	s, err := saveVCPU(f, []kvm.CPUIDEntry{{Function: 1}}, []uint32{0x10, 0x11, 0x4b564d01})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, e := range s.MSRs {
		got = append(got, e.Index)
	}
	if !reflect.DeepEqual(got, []uint32{0x10, 0x4b564d01}) || s.Regs.RIP != 7 || s.TSCKHz != 2000000 {
		t.Errorf("saved MSRs %#x, RIP %d, TSC %d", got, s.Regs.RIP, s.TSCKHz)
	}
}

// The restore order is KVM's: CPUID first, the LAPIC before the MSRs
// (TSC deadline), events and MP state last.
func TestRestoreVCPUOrder(t *testing.T) {
	f := &stateFake{}
	if err := restoreVCPU(f, VCPUState{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"SetCPUID2", "SetSregs", "SetRegs", "SetFPU", "SetXSave", "SetXCRs", "SetDebugRegs", "SetLAPIC", "SetMSRs", "SetEvents", "SetMPState"}
	if !reflect.DeepEqual(f.calls, want) {
		t.Errorf("order %v, want %v", f.calls, want)
	}
	f = &stateFake{failSet: "SetMSRs"}
	if err := restoreVCPU(f, VCPUState{}); err == nil || !strings.Contains(err.Error(), "vCPU 1 MSRs") {
		t.Errorf("a refused step: %v", err)
	}
}

// A restored vCPU gets the TSC rate its guest calibrated at boot, after
// CPUID and before the TSC MSRs; the same rate is left alone, and one
// KVM cannot scale to is refused in words.
func TestRestoreTSCKHz(t *testing.T) {
	for _, tc := range []struct {
		name      string
		saved     uint32
		noScaling bool
		wantCall  bool
		wantErr   string
	}{
		{"not recorded", 0, false, false, ""},
		{"same rate", 2000000, false, false, ""},
		{"other rate, scaled", 2500000, false, true, ""},
		{"other rate, no scaling", 2500000, true, true, "2500000 kHz where it was saved and runs at 2000000 kHz here"},
	} {
		f := &stateFake{noTSCScaling: tc.noScaling}
		err := restoreVCPU(f, VCPUState{TSCKHz: tc.saved})
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
		}
		if got := slices.Contains(f.calls, "SetTSCKHz"); got != tc.wantCall {
			t.Errorf("%s: SetTSCKHz called %v, want %v (calls %v)", tc.name, got, tc.wantCall, f.calls)
		}
		if tc.wantCall && tc.wantErr == "" && (f.calls[0] != "SetCPUID2" || slices.Index(f.calls, "SetTSCKHz") > slices.Index(f.calls, "SetMSRs")) {
			t.Errorf("%s: order %v: want the rate after CPUID and before the MSRs", tc.name, f.calls)
		}
	}
}

func TestMissingCPUFeatures(t *testing.T) {
	host := []kvm.CPUIDEntry{
		{Function: 1, ECX: 0x1, EDX: 0xff},
		{Function: 7, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0x0f},
	}
	for _, tc := range []struct {
		name string
		saw  []kvm.CPUIDEntry
		want string
	}{
		{"same", host, ""},
		{"vmm's own bits", []kvm.CPUIDEntry{{Function: 1, ECX: 0x1 | ecxHypervisor | ecxTSCDeadline, EDX: 0xff | edxHTT}}, ""},
		{"leaf 7 ebx", []kvm.CPUIDEntry{{Function: 7, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0x3f}}, "0x7.0 ebx bits 0x30"},
		{"leaf 1 ecx", []kvm.CPUIDEntry{{Function: 1, ECX: 0x3}}, "0x1.0 ecx bits 0x2"},
	} {
		err := missingCPUFeatures(tc.saw, host)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckSnapshot(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{MemSize: 64 << 20, CPUs: 2, Disks: []Disk{{Path: disk, Serial: "vmm-out"}},
		Shares: []Share{{Dir: "/snapshot-time", Tag: "vmm-share"}}}
	devs, err := manifestDevices(cfg)
	if err != nil {
		t.Fatal(err)
	}
	man := snapshot.Manifest{MemSize: 64 << 20, CPUs: 2, Devices: devs}
	if err := CheckSnapshot(cfg, man); err != nil {
		t.Fatalf("matching config refused: %v", err)
	}
	// A share's directory may differ: the guest has not mounted it.
	other := cfg
	other.Shares = []Share{{Dir: "/run-time", Tag: "vmm-share"}}
	if err := CheckSnapshot(other, man); err != nil {
		t.Fatalf("another directory for the same share refused: %v", err)
	}
	withPort := cfg
	withPort.JobOutput = io.Discard
	if devs, err := manifestDevices(withPort); err != nil || len(devs) != 3 || devs[2] != (snapshot.Device{Kind: "console", Tag: guestabi.JobOutputPort}) {
		t.Fatalf("a job's devices: %+v, %v; want the output port last", devs, err)
	}
	withPort.JobInputPort = true
	if devs, err := manifestDevices(withPort); err != nil || len(devs) != 4 || devs[3] != (snapshot.Device{Kind: "console", Tag: guestabi.JobInputPort}) {
		t.Fatalf("a job's devices with its input port: %+v, %v; want the input port after the output port", devs, err)
	}
	withInput := man
	withInput.Devices, _ = manifestDevices(withPort)
	noInput := withPort
	noInput.JobInputPort = false
	if err := CheckSnapshot(noInput, withInput); err == nil {
		t.Fatal("a run without the snapshot's input port accepted")
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"memory", func(c *Config) { c.MemSize = 128 << 20 }, "-m 128 MiB, snapshot has 64 MiB"},
		{"cpus", func(c *Config) { c.CPUs = 1 }, "-smp 1"},
		{"no disk", func(c *Config) { c.Disks = nil }, "1 virtio devices asked for, snapshot has 2 (blk vmm-out, fs vmm-share)"},
		{"no share", func(c *Config) { c.Shares = nil }, "1 virtio devices asked for"},
		{"share tag", func(c *Config) { c.Shares = []Share{{Dir: "/x", Tag: "other"}} }, "device 1 is {Kind:fs Serial: Tag:other"},
		{"ro", func(c *Config) { c.Disks = []Disk{{Path: disk, Serial: "vmm-out", ReadOnly: true}} }, "device 0"},
		{"nic", func(c *Config) { c.Disks = nil; c.NICs = []NIC{{Tap: "t"}} }, "device 0 is {Kind:net"},
		// vmm run's job output port, which a snapshot from before it
		// existed lacks.
		{"job port", func(c *Config) { c.JobOutput = io.Discard }, "3 virtio devices asked for, snapshot has 2"},
	} {
		c := cfg
		tc.edit(&c)
		err := CheckSnapshot(c, man)
		if !errors.Is(err, ErrSnapshotMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a mismatch with %q", tc.name, err, tc.want)
		}
	}
	// A share's directory and whether the host serves it read-only are
	// the run's: the guest's device is the same.
	c := cfg
	c.Shares = []Share{{Dir: "/elsewhere", Tag: "vmm-share", ReadOnly: true}}
	if err := CheckSnapshot(c, man); err != nil {
		t.Errorf("a share served read-only from another directory: %v", err)
	}
}

func TestDecodeStateRefuses(t *testing.T) {
	cfg := Config{CPUs: 1}
	enc := func(st State) []byte {
		b, err := pack.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	vcpus := []VCPUState{{CPUID: []kvm.CPUIDEntry{{}}}}
	good := enc(State{VCPUs: vcpus, IRQChips: threeChips()})
	if _, err := decodeState(good, cfg); err != nil {
		t.Fatalf("a good state: %v", err)
	}
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"garbage", []byte("{"), "corrupt"},
		{"truncated", good[:len(good)-1], "corrupt"},
		{"trailing bytes", append(append([]byte(nil), good...), 0), "1 bytes after"},
		{"no vCPUs", enc(State{}), "0 vCPUs"},
		{"no irqchips", enc(State{VCPUs: vcpus}), "interrupt controllers"},
		{"three PIC masters", enc(State{VCPUs: vcpus, IRQChips: make([]kvm.IRQChip, 3)}), "interrupt controller 1 is chip 0, want 1"},
		// A virtio-mmio snapshot restored on this run's virtio-pci.
		{"transport", enc(State{VCPUs: vcpus, IRQChips: threeChips(), Virtio: []virtio.TransportState{{Type: 2}}}), "another transport than this run's -virtio-transport pci"},
	} {
		if _, err := decodeState(tc.blob, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestStateRoundTrip: every field of a snapshot's machine state survives
// its encoding, and the encoding's layout is the one snapshot format
// snapshot.FormatVersion carries.
func TestStateRoundTrip(t *testing.T) {
	var st State
	packtest.Fill(&st)
	b, err := pack.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := pack.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("machine state changed in a round trip:\n got %+v\nwant %+v", back, st)
	}
	// Changing State's layout (a field added, removed, moved or
	// retyped, here or in a type it holds) changes the snapshot format:
	// bump snapshot.FormatVersion and record the new layout here.
	const layout, format = "51804ae0c57dfd3a", 5
	if got := packtest.Layout(State{}); got != layout || snapshot.FormatVersion != format {
		t.Errorf("machine.State's layout is %s (format %d); recorded: %s for format %d", got, snapshot.FormatVersion, layout, format)
	}
}

// FuzzDecodeState: a snapshot's state blob (checksummed, but written by
// whoever can write the snapshot) must decode or be refused, never panic
// or allocate past pack's budget.
func FuzzDecodeState(f *testing.F) {
	good, err := pack.Marshal(State{VCPUs: []VCPUState{{CPUID: []kvm.CPUIDEntry{{}}}}, IRQChips: threeChips()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	var full State
	packtest.Fill(&full)
	if b, err := pack.Marshal(full); err == nil {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b, Config{CPUs: 1})
		if err == nil && len(st.VCPUs) != 1 {
			t.Fatalf("accepted a state with %d vCPUs for 1", len(st.VCPUs))
		}
	})
}

// A disk's size in the manifest is the guest's capacity: a regular
// file's length, and for a block device its end, where stat says 0 (a
// restore given a smaller device than the snapshot's would otherwise
// pass the check).
func TestDiskSize(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 3*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := diskSize(img); err != nil || n != 3*4096 {
		t.Errorf("diskSize(regular file) = %d, %v; want %d", n, err, 3*4096)
	}
	if _, err := diskSize(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("diskSize of a missing file: no error")
	}
	// Any readable block device with sectors: /sys/block/NAME/size
	// counts 512-byte sectors.
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "size"))
		sectors, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		dev := filepath.Join("/dev", e.Name())
		if err != nil || perr != nil || sectors == 0 {
			continue
		}
		f, err := os.Open(dev) // a device cgroup may forbid it even to root
		if err != nil {
			continue
		}
		f.Close()
		if n, err := diskSize(dev); err != nil || n != sectors*512 {
			t.Errorf("diskSize(%s) = %d, %v; want %d", dev, n, err, sectors*512)
		}
		return
	}
	t.Log("no readable block device here: checked regular files only")
}

// threeChips are the interrupt controllers a saved state holds, in the
// order it saves them.
func threeChips() []kvm.IRQChip {
	return []kvm.IRQChip{{ChipID: kvm.IRQChipPICMaster}, {ChipID: kvm.IRQChipPICSlave}, {ChipID: kvm.IRQChipIOAPIC}}
}
