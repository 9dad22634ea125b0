package nested

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

func writeFile(t *testing.T, p, content string, perm os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImageContents(t *testing.T) {
	dir := t.TempDir()
	spec := imageSpec{
		Init:    writeFile(t, filepath.Join(dir, "l1init"), "INIT", 0o600),
		Modules: []string{writeFile(t, filepath.Join(dir, "m", "a.ko"), "A", 0o644), writeFile(t, filepath.Join(dir, "m", "kvm-amd.ko"), "K", 0o644)},
		Files: map[string]string{
			"/vmm":             writeFile(t, filepath.Join(dir, "vmm"), "VMM", 0o755),
			"/guest/bzImage":   writeFile(t, filepath.Join(dir, "bz"), "BZ", 0o644),
			"/guest/initrd.gz": writeFile(t, filepath.Join(dir, "rd"), "RD", 0o600),
		},
	}
	var buf bytes.Buffer
	if err := writeImage(&buf, spec); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]cpio.Record{}
	for _, r := range recs {
		got[r.Name] = r
	}
	content := func(name string) string {
		r, ok := got[name]
		if !ok {
			t.Fatalf("%s missing; archive has %v", name, slices.Collect(func(yield func(string) bool) {
				for _, r := range recs {
					if !yield(r.Name) {
						return
					}
				}
			}))
		}
		b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for name, want := range map[string]string{"init": "INIT", "vmm": "VMM", "guest/bzImage": "BZ", "guest/initrd.gz": "RD",
		"lib/modules/l1/a.ko": "A", "lib/modules/l1/kvm-amd.ko": "K"} {
		if c := content(name); c != want {
			t.Errorf("%s = %q, want %q", name, c, want)
		}
	}
	if m := got["init"].Mode; m != cpio.S_IFREG|0o755 {
		t.Errorf("init mode %o, want executable regardless of host mode", m)
	}
	if m := got["vmm"].Mode; m != cpio.S_IFREG|0o755 {
		t.Errorf("vmm mode %o, want host's 0755", m)
	}
	if m := got["guest"].Mode; m&cpio.S_IFMT != cpio.S_IFDIR {
		t.Errorf("guest not a directory: %o", m)
	}
	if c := got["dev/console"]; c.Mode&cpio.S_IFMT != cpio.S_IFCHR || c.Rmajor != 5 || c.Rminor != 1 {
		t.Errorf("dev/console = %v, want char 5:1", c.Info)
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp"} {
		if got[d].Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Errorf("%s missing or not a directory", d)
		}
	}
	var cfg proto.InitConfig
	if err := json.Unmarshal([]byte(content(strings.TrimPrefix(proto.InitConfigPath, "/"))), &cfg); err != nil {
		t.Fatal(err)
	}
	if want := []string{"/lib/modules/l1/a.ko", "/lib/modules/l1/kvm-amd.ko"}; !slices.Equal(cfg.Modules, want) {
		t.Errorf("module order %v, want %v", cfg.Modules, want)
	}
}

func TestImageRejectsBadPaths(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, filepath.Join(dir, "f"), "x", 0o644)
	for _, p := range []string{"relative", "/", "/init", "/dev/x", "/etc/l1init.json", "/lib"} {
		err := writeImage(io.Discard, imageSpec{Init: f, Files: map[string]string{p: f}})
		if err == nil {
			t.Errorf("L1 path %q accepted", p)
		}
	}
	if err := writeImage(io.Discard, imageSpec{Init: f, Files: map[string]string{"/x": dir}}); err == nil {
		t.Error("directory accepted as a file")
	}
}

func TestResolveModulesDep(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "modules.dep"), strings.Join([]string{
		"kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko kernel/drivers/crypto/ccp/ccp.ko",
		"kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko",
		"kernel/virt/lib/irqbypass.ko:",
		"kernel/drivers/crypto/ccp/ccp.ko: kernel/crypto/rng.ko",
		"kernel/crypto/rng.ko:",
	}, "\n"), 0o644)
	writeFile(t, filepath.Join(dir, "modules.builtin"), "kernel/crypto/rng.ko\n", 0o644)
	got, err := ResolveModules(dir, []string{"kvm_amd"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i], _ = filepath.Rel(dir, got[i])
	}
	want := []string{"kernel/arch/x86/kvm/kvm.ko", "kernel/virt/lib/irqbypass.ko", "kernel/drivers/crypto/ccp/ccp.ko", "kernel/arch/x86/kvm/kvm-amd.ko"}
	// irqbypass must precede kvm; check dependency order rather than one
	// particular topological order.
	pos := map[string]int{}
	for i, p := range got {
		pos[filepath.Base(p)] = i
	}
	if len(got) != 4 || pos["irqbypass.ko"] > pos["kvm.ko"] || pos["kvm.ko"] > pos["kvm-amd.ko"] || pos["ccp.ko"] > pos["kvm-amd.ko"] {
		t.Errorf("got %v, want an order of %v with dependencies first", got, want)
	}
	if _, err := ResolveModules(dir, []string{"nope"}); err == nil {
		t.Error("unknown module resolved")
	}
}

func TestResolveModulesModinfo(t *testing.T) {
	dir := testKernel(t).ModulesDir
	got, err := ResolveModules(dir, []string{"kvm-amd"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, filepath.Base(p))
	}
	if want := []string{"irqbypass.ko", "kvm.ko", "kvm-amd.ko"}; !slices.Equal(names, want) {
		t.Errorf("got %v, want %v", names, want)
	}
}

func TestJobSchedDefault(t *testing.T) {
	for _, tc := range []struct {
		field, env, want string
	}{
		{"", "", "rr"},
		{"", "cfs", "cfs"},
		{"rr", "cfs", "rr"},
		{"cfs", "", "cfs"},
	} {
		t.Setenv(JobSchedEnv, tc.env)
		if got := (Config{JobSched: tc.field}).withDefaults().JobSched; got != tc.want {
			t.Errorf("JobSched %q with $%s=%q: got %q, want %q", tc.field, JobSchedEnv, tc.env, got, tc.want)
		}
	}
}

func TestStartRejectsUnknownJobSched(t *testing.T) {
	_, err := Start(context.Background(), Config{Kernel: "/nonexistent", QEMU: "true", JobSched: "fifo"})
	if err == nil || !strings.Contains(err.Error(), `"fifo"`) {
		t.Fatalf("Start with JobSched fifo: %v, want an error naming it", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	c := Config{Kernel: "/k/bzImage", MemoryMiB: 3072, CPUs: 2, Append: "foo=1"}.withDefaults()
	args := qemuArgs(c, qemuSpec{Initrd: "/w/initrd", KernelLog: "/w,x/kernel.log"})
	s := strings.Join(args, " ")
	for _, want := range []string{
		"-accel tcg", "-cpu EPYC,+svm", "-smp 2", "-m 3072", "-nodefaults", "-no-user-config",
		"-display none", "-no-reboot", "-kernel /k/bzImage", "-initrd /w/initrd",
		"-chardev socket,id=con,fd=3 -serial chardev:con",
		"-chardev socket,id=ctl,fd=4 -serial chardev:ctl",
		"-chardev file,id=klog,path=/w,,x/kernel.log -serial chardev:klog",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("args lack %q: %s", want, s)
		}
	}
	i := slices.Index(args, "-append")
	if i < 0 || !strings.HasPrefix(args[i+1], "console=ttyS2 ") || !strings.HasSuffix(args[i+1], " foo=1") {
		t.Errorf("bad -append in %q", args)
	}
	if !strings.Contains(args[i+1], " l1init.jobsched=rr ") {
		t.Errorf("-append lacks the default job policy: %q", args[i+1])
	}
	// Serial order defines ttyS0..2 in the guest.
	var serials []string
	for i, a := range args {
		if a == "-serial" {
			serials = append(serials, args[i+1])
		}
	}
	if want := []string{"chardev:con", "chardev:ctl", "chardev:klog"}; !slices.Equal(serials, want) {
		t.Errorf("serial order %v, want %v", serials, want)
	}
}

func TestProtoRoundTrip(t *testing.T) {
	binary := []byte("out\x00\x01\xff\r\n{\"op\":\"x\"}\n")
	msgs := []proto.Msg{
		{Op: proto.OpRun, ID: 7, Args: []string{"/vmm", "-kernel", "a b"}, Stdin: proto.StdinTTY, Rows: 24, Cols: 80},
		{Op: proto.OpExit, ID: 7, Code: 0},
		{Op: proto.OpResult, ID: 8, Code: 130, Output: binary},
	}
	var stream bytes.Buffer
	stream.WriteString("\x00garbage from before raw mode\r\n\n")
	for _, m := range msgs {
		b, err := proto.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
			t.Fatalf("encoding of %v is not one line: %q", m, b)
		}
		if m.Op == proto.OpExit && !bytes.Contains(b, []byte(`"code":0`)) {
			t.Errorf("exit status 0 omitted: %s", b)
		}
		stream.Write(b)
	}
	r := proto.NewReader(&stream)
	var skipped int
	r.Skipped = func([]byte, error) { skipped++ }
	for _, want := range msgs {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		wb, _ := json.Marshal(want)
		gb, _ := json.Marshal(got)
		if !bytes.Equal(wb, gb) {
			t.Errorf("got %s, want %s", gb, wb)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("end of stream: %v", err)
	}
	if skipped != 1 {
		t.Errorf("skipped %d lines, want 1", skipped)
	}
	if _, err := proto.Decode([]byte(`{"id":1}`)); err == nil {
		t.Error("message without op accepted")
	}
}

func TestWatchdog(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := watchdog{timeout: 10 * time.Second}
	if _, f := w.expired(t0.Add(time.Hour)); f {
		t.Error("unarmed watchdog fired")
	}
	w.arm(t0)
	if _, f := w.expired(t0.Add(9 * time.Second)); f {
		t.Error("fired early")
	}
	w.activity(t0.Add(9 * time.Second))
	if _, f := w.expired(t0.Add(18 * time.Second)); f {
		t.Error("activity did not reset the timer")
	}
	if d, f := w.expired(t0.Add(19 * time.Second)); !f || d != 10*time.Second {
		t.Errorf("expired = %v %v, want 10s true", d, f)
	}
	w.arm(t0.Add(19 * time.Second)) // nested arm keeps the old silence
	if _, f := w.expired(t0.Add(19 * time.Second)); !f {
		t.Error("second arm reset the silence")
	}
	w.disarm()
	w.disarm()
	if _, f := w.expired(t0.Add(time.Hour)); f {
		t.Error("disarmed watchdog fired")
	}
	w.arm(t0.Add(time.Hour)) // first arm starts a fresh period
	if _, f := w.expired(t0.Add(time.Hour + time.Second)); f {
		t.Error("re-armed watchdog fired on old silence")
	}
	if p := (&watchdog{timeout: time.Hour}).pollInterval(); p != time.Second {
		t.Errorf("poll interval %v", p)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\r\nb\r\nc\r\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"a\nb\nc", 1, "c"},
		{"", 3, ""},
	} {
		if got := lastLines([]byte(tc.in), tc.n); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	tb := newTailBuffer(4)
	tb.Write([]byte("0123456789\nab"))
	if got := tb.Lines(1); got != "ab" {
		t.Errorf("tail buffer = %q", got)
	}
}

func TestDisks(t *testing.T) {
	c := Config{Kernel: "/k", Disks: []Disk{{Path: "/img/a,b.raw"}, {Path: "/img/ro.raw", ReadOnly: true}}}.withDefaults()
	args := qemuArgs(c, qemuSpec{Initrd: "/w/initrd", KernelLog: "/w/klog"})
	var drives, devices []string
	for i, a := range args {
		switch a {
		case "-drive":
			drives = append(drives, args[i+1])
		case "-device":
			devices = append(devices, args[i+1])
		}
	}
	wantDrives := []string{
		"file=/img/a,,b.raw,if=none,id=disk0,format=raw,cache=writeback",
		"file=/img/ro.raw,if=none,id=disk1,format=raw,cache=writeback,readonly=on",
	}
	wantDevices := []string{"virtio-blk-pci,drive=disk0,serial=nested-disk0", "virtio-blk-pci,drive=disk1,serial=nested-disk1"}
	if !slices.Equal(drives, wantDrives) || !slices.Equal(devices, wantDevices) {
		t.Errorf("drives %q devices %q, want %q %q", drives, devices, wantDrives, wantDevices)
	}
	if got, want := c.modules(), []string{"kvm-amd", "virtio_pci", "virtio_blk"}; !slices.Equal(got, want) {
		t.Errorf("modules with disks %v, want %v", got, want)
	}
	if got, want := (Config{Modules: []string{"kvm-amd", "tun"}}).modules(), []string{"kvm-amd", "tun"}; !slices.Equal(got, want) {
		t.Errorf("modules without disks %v, want %v", got, want)
	}
	if args := qemuArgs(Config{Kernel: "/k"}.withDefaults(), qemuSpec{}); slices.Contains(args, "-drive") {
		t.Errorf("drive without disks: %q", args)
	}

	for i, want := range map[int]string{0: "/dev/vda", 1: "/dev/vdb", 25: "/dev/vdz", 26: "/dev/vdaa", 27: "/dev/vdab", 701: "/dev/vdzz", 702: "/dev/vdaaa"} {
		if got := DiskPath(i); got != want {
			t.Errorf("DiskPath(%d) = %s, want %s", i, got, want)
		}
	}

	// The agent learns which disks to wait for.
	dir := t.TempDir()
	var buf bytes.Buffer
	spec := imageSpec{Init: writeFile(t, filepath.Join(dir, "init"), "I", 0o755), Devices: []string{"/dev/vda", "/dev/vdb"}}
	if err := writeImage(&buf, spec); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	var cfg proto.InitConfig
	for _, r := range recs {
		if r.Name == strings.TrimPrefix(proto.InitConfigPath, "/") {
			b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(cfg.Devices, spec.Devices) {
		t.Errorf("init config devices %v, want %v", cfg.Devices, spec.Devices)
	}
}

// GuestCrash knows the emulator's two ways of killing a guest, and never
// blames it for a Go crash.
func TestGuestCrash(t *testing.T) {
	tests := []struct {
		out  string
		want string
	}{
		{"$ ls\nvmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN) (registers lost: ...)\n", "vmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN)"},
		{"vmm: vCPU 12: guest triple fault (KVM_EXIT_SHUTDOWN) at RIP=0x1000\n", "vmm: vCPU 12: guest triple fault (KVM_EXIT_SHUTDOWN)"},
		{"[  337.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks"},
		{"rcu: INFO: rcu_preempt self-detected stall on CPU\n", "rcu: INFO: rcu_preempt self-detected stall on CPU"},
		{"vmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN)\npanic: runtime error\n", ""},
		{"vmm: vCPU 0: guest triple fault (KVM_EXIT_SHUTDOWN)\ngoroutine 1 [running]:\n", ""},
		{"vmm: vCPU 0: guest halted with interrupts off\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := GuestCrash(tt.out); got != tt.want {
			t.Errorf("GuestCrash(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}
