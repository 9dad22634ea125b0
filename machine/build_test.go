package machine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/kvm"
)

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNewRejectsBadConfig checks that every mistake a user can make is
// reported, with what was wrong, before /dev/kvm is opened: these fail
// the same on a host without KVM.
func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, dir, "bzImage", testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}}))
	notKernel := writeFile(t, dir, "notes.txt", []byte("not a kernel"))
	initrd := writeFile(t, dir, "initrd.cpio", []byte("070701"))
	empty := writeFile(t, dir, "empty.cpio", nil)
	// A sparse initrd bigger than guest RAM: never read, only measured.
	huge := filepath.Join(dir, "huge.cpio")
	if f, err := os.Create(huge); err != nil {
		t.Fatal(err)
	} else if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	disk := newDisk(t)
	missing := filepath.Join(dir, "missing")

	ok := Config{Kernel: kernel, MemSize: 32 << 20, CPUs: 1}
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name  string
		cfg   Config
		want  string
		cause error
	}{
		{"no vCPU", with(func(c *Config) { c.CPUs = 0 }), "-smp 0: need at least one vCPU", nil},
		{"more vCPUs than APIC IDs", with(func(c *Config) { c.CPUs = 255 }), "-smp 255: vmm supports at most 254 vCPUs", nil},
		{"too little memory", with(func(c *Config) { c.MemSize = MinMemory - 1 }), "-m 15 MiB: need at least 16 MiB", nil},
		{"memory not in pages", with(func(c *Config) { c.MemSize = 300001 << 10 }), "-m 300001 KiB: guest memory must be a whole number of 4 KiB pages", nil},
		{"too little memory for this kernel", with(func(c *Config) { c.MemSize = MinMemory }),
			"guest memory too small for this kernel: it needs at least 17 MiB", nil},
		{"no kernel file", with(func(c *Config) { c.Kernel = missing }), "kernel: open " + missing, fs.ErrNotExist},
		{"kernel not a bzImage", with(func(c *Config) { c.Kernel = notKernel }), "kernel " + notKernel + ": ", nil},
		{"no initrd file", with(func(c *Config) { c.Initrd = missing }), "initrd: open " + missing, fs.ErrNotExist},
		{"initrd a directory", with(func(c *Config) { c.Initrd = dir }), "initrd: " + dir + ": is a directory, not a regular file", nil},
		{"initrd empty", with(func(c *Config) { c.Initrd = empty }), "initrd " + empty + ": empty file", nil},
		{"initrd bigger than memory", with(func(c *Config) { c.Initrd = huge }), "place initrd (64 MiB) in guest memory below 32 MiB (of 32 MiB)", nil},
		{"appended archive bigger than memory", with(func(c *Config) { c.Initrd = initrd; c.InitrdAppend = make([]byte, 40<<20) }),
			"place initrd (40 MiB) in guest memory below 32 MiB (of 32 MiB)", nil},
		{"command line too long", with(func(c *Config) { c.Cmdline = strings.Repeat("x", cmdlineMax) }),
			"kernel command line is 65536 bytes", nil},
		{"no disk file", with(func(c *Config) { c.Disks = []Disk{{Path: missing}} }), "disk: open " + missing, fs.ErrNotExist},
		{"more virtio devices than interrupt pins", with(func(c *Config) {
			for range maxVirtioDevices + 1 {
				c.Disks = append(c.Disks, Disk{Path: disk, ReadOnly: true})
			}
		}), "9 virtio devices (disks, network cards, shares): vmm supports at most 8 in all", nil},
		{"too many with the job's own devices", with(func(c *Config) {
			for range maxVirtioDevices - 2 {
				c.Disks = append(c.Disks, Disk{Path: disk, ReadOnly: true})
			}
			c.Disks = append(c.Disks, Disk{Path: disk, ReadOnly: true, Serial: guestabi.OutSerial})
			c.Shares = []Share{{Dir: dir, Tag: guestabi.JobShareTag}, {Dir: dir, Tag: guestabi.JobRootTag}}
		}), "9 virtio devices (disks, network cards, shares) (3 of them vmm's own for the job: the output and input ports, the -out disk or the -share and -rootfs slots): vmm supports at most 8 in all", nil},
		{"too many with the job's output port", with(func(c *Config) {
			for range maxVirtioDevices {
				c.Disks = append(c.Disks, Disk{Path: disk, ReadOnly: true})
			}
			c.JobOutput = io.Discard
		}), "9 virtio devices (disks, network cards, shares) (1 of them vmm's own for the job: the output and input ports, the -out disk or the -share and -rootfs slots): vmm supports at most 8 in all", nil},
		{"bad TAP name", with(func(c *Config) { c.NICs = []NIC{{Tap: "no/such/tap"}} }), "no/such/tap", nil},
		{"share directory missing", with(func(c *Config) { c.Shares = []Share{{Dir: missing, Tag: "s"}} }), missing, nil},
		{"share of a file", with(func(c *Config) { c.Shares = []Share{{Dir: disk, Tag: "s"}} }), disk, nil},
		{"share tag too long", with(func(c *Config) { c.Shares = []Share{{Dir: dir, Tag: strings.Repeat("t", 37)}} }), "virtio-fs tag", nil},
		{"two shares, one tag", with(func(c *Config) { c.Shares = []Share{{Dir: dir, Tag: "s"}, {Dir: dir, Tag: "s"}} }),
			`virtio-fs tag "s": used by two shares`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg)
			if err == nil {
				m.Close()
				t.Fatalf("New succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v\nwant it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), kvm.DevicePath) {
				t.Errorf("New: %v: opened %s before reporting a user error", err, kvm.DevicePath)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("New: %v does not wrap %v", err, tt.cause)
			}
		})
	}
}

// TestNewWithoutKVM checks that a valid configuration gets as far as
// /dev/kvm, and that a host without it is told what to do.
func TestNewWithoutKVM(t *testing.T) {
	if _, err := os.Stat(kvm.DevicePath); err == nil {
		t.Skipf("%s exists: this test is for hosts without KVM", kvm.DevicePath)
	}
	dir := t.TempDir()
	cfg := Config{
		Kernel:  writeFile(t, dir, "bzImage", testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}})),
		Initrd:  writeFile(t, dir, "initrd.cpio", []byte("07070")),
		MemSize: 64 << 20, CPUs: 2, Disks: []Disk{{Path: newDisk(t)}},
	}
	_, err := New(cfg)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), kvm.DevicePath+": ") ||
		!strings.Contains(err.Error(), "KVM is not available") {
		t.Errorf("New: %v, want %s missing, with advice", err, kvm.DevicePath)
	}
}

func TestLoadPlacesInitrdAndAppendedArchive(t *testing.T) {
	dir := t.TempDir()
	initrd := []byte("07070") // 5 bytes: the appended archive must start at 8
	appended := []byte("070701appended")
	tests := []struct {
		name     string
		initrd   []byte // nil for none
		appended []byte
		want     []byte // guest memory from the initrd address
	}{
		{"initrd only", initrd, nil, initrd},
		{"appended archive 4-byte aligned after the initrd", initrd, appended, append(append(append([]byte{}, initrd...), 0, 0, 0), appended...)},
		{"appended archive without an initrd", nil, appended, appended},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{
				Kernel:  writeFile(t, dir, "bzImage", testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}})),
				MemSize: 64 << 20, CPUs: 1, InitrdAppend: tt.appended,
			}
			if tt.initrd != nil {
				cfg.Initrd = writeFile(t, dir, "initrd.cpio", tt.initrd)
			}
			m, err := load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got, err := m.mem.Slice(m.layout.initrdAddr, uint64(len(tt.want)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("memory at the initrd %q, want %q", got, tt.want)
			}
			// The zero page tells the kernel the whole span.
			zp, err := m.mem.Slice(zeroPageAddr, 4096)
			if err != nil {
				t.Fatal(err)
			}
			le := binary.LittleEndian
			if addr, size := uint64(le.Uint32(zp[0x218:])), le.Uint32(zp[0x21c:]); addr != m.layout.initrdAddr || size != uint32(len(tt.want)) {
				t.Errorf("zero page: initrd %#x+%d, want %#x+%d", addr, size, m.layout.initrdAddr, len(tt.want))
			}
		})
	}
}

func TestExplainOpen(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fs.ErrNotExist, "KVM is not available on this machine"},
		{fs.ErrPermission, "add your user to the group owning /dev/kvm"},
		{errors.New("EBUSY"), "EBUSY"},
	}
	for _, tt := range tests {
		got := explainOpen(tt.err)
		if !errors.Is(got, tt.err) || !strings.Contains(got.Error(), tt.want) {
			t.Errorf("explainOpen(%v) = %v, want it to wrap the cause and say %q", tt.err, got, tt.want)
		}
	}
}

func TestEventFD(t *testing.T) {
	e, err := newEventFD()
	if err != nil {
		t.Fatal(err)
	}
	// Kicks coalesce: two signals, one wake-up, then nothing pending.
	e.Signal()
	e.Trigger()
	if err := e.Wait(); err != nil {
		t.Fatal(err)
	}
	if e.buf != [8]byte{2} {
		t.Errorf("counter read %v, want 2", e.buf)
	}
	// A Wait now parks in the netpoller: nothing is pending.
	if err := e.f.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := e.Wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Wait after the signals were consumed: %v, want it to block", err)
	}
	if err := e.f.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Close wakes a parked Wait: a device worker must not outlive its
	// eventfd.
	woke := make(chan error, 1)
	go func() { woke <- e.Wait() }()
	time.Sleep(10 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err == nil {
			t.Error("Wait on a closed eventfd succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake a waiting Wait")
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestBootState checks the register state firmware would leave, which
// the kernel relies on without checking.
func TestBootState(t *testing.T) {
	f := bootFPU()
	// FNINIT (Intel SDM vol. 1 §8.1.5): FCW 0x37F; MXCSR reset value
	// 0x1F80 (vol. 1 §10.2.3.1), every SSE exception masked.
	if f.FCW != 0x37f || f.MXCSR != 0x1f80 {
		t.Errorf("FPU FCW %#x MXCSR %#x, want 0x37f 0x1f80", f.FCW, f.MXCSR)
	}
	got := map[uint32]uint64{}
	for _, e := range bootMSRs() {
		if _, dup := got[e.Index]; dup {
			t.Errorf("MSR %#x set twice", e.Index)
		}
		got[e.Index] = e.Data
	}
	for msr, want := range map[uint32]uint64{
		msrMTRRDefType: 1<<11 | 6, // MTRRs on, default type write-back
		msrMiscEnable:  1,         // fast strings
		msrLSTAR:       0,
		msrSTAR:        0,
	} {
		if v, ok := got[msr]; !ok || v != want {
			t.Errorf("MSR %#x = %#x (set %v), want %#x", msr, v, ok, want)
		}
	}
}
