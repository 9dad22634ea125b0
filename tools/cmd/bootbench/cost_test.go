package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/tools/distro"
	"github.com/vmm-dev/vmm/tools/kvmstats"
)

// smapsOf makes a /proc/PID/smaps text of mappings given as size and
// Rss in KiB; a quarter of each Rss is anonymous.
func smapsOf(maps ...[2]int64) string {
	var b strings.Builder
	addr := int64(0x7f0000000000)
	for _, m := range maps {
		end := addr + m[0]<<10
		fmt.Fprintf(&b, "%x-%x rw-p 00000000 00:00 0\nSize: %d kB\nRss: %d kB\nPss: %d kB\nAnonymous: %d kB\nVmFlags: rd wr mr mw me ac sd\n", addr, end, m[0], m[1], m[1], m[1]/4)
		addr = end + 4096
	}
	return b.String()
}

func TestOverheadKiB(t *testing.T) {
	const ram = 256 << 20
	tests := []struct {
		name, in   string
		want, anon int64
		bad        bool
	}{
		{"vmm: RAM and the rest", smapsOf([2]int64{4096, 3000}, [2]int64{256 << 10, 200 << 10}, [2]int64{65536, 1200}), 4200, 1050, false},
		// QEMU's RAM block is mapped with room for alignment.
		{"RAM mapping larger than the guest", smapsOf([2]int64{(256 << 10) + 2048, 100 << 10}, [2]int64{100, 40}), 40, 10, false},
		{"no RAM mapping", smapsOf([2]int64{4096, 3000}), 0, 0, true},
		{"empty", "", 0, 0, true},
		{"bad Rss", smapsOf([2]int64{4096, 3000}) + "Rss: x kB\n", 0, 0, true},
		{"bad Anonymous", smapsOf([2]int64{256 << 10, 1}, [2]int64{4096, 3000}) + "Anonymous: -1 kB\n", 0, 0, true},
		{"bad unit", strings.Replace(smapsOf([2]int64{4096, 3000}, [2]int64{256 << 10, 1}), "3000 kB", "3000 MB", 1), 0, 0, true},
		{"end before start", "7f0000002000-7f0000001000 rw-p 00000000 00:00 0\nRss: 4 kB\n", 0, 0, true},
		// Go's runtime reserves large inaccessible regions: not RAM.
		{"only a reservation that large", strings.Replace(smapsOf([2]int64{4096, 3000}, [2]int64{512 << 10, 0}), "rw-p", "---p", 2), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, anon, err := overheadKiB(strings.NewReader(tt.in), ram)
			if (err != nil) != tt.bad || got != tt.want || anon != tt.anon {
				t.Fatalf("overheadKiB = %d, %d, %v; want %d, %d, bad %v", got, anon, err, tt.want, tt.anon, tt.bad)
			}
		})
	}
}

func TestSummarizeCosts(t *testing.T) {
	cost := func(exits, cpuTicks, kib int64) *BootCost {
		return &BootCost{Counters: kvmstats.Counters{"exits": exits, "io_exits": exits / 2}, CPU: kvmstats.CPU{User: cpuTicks}, OverheadKiB: kib}
	}
	r := &Report{Samples: []Sample{
		{System: "vmm-cloud", ReadyMS: 100, Cost: cost(1000, 10, 4096)},
		{System: "vmm-cloud", ReadyMS: 100, Cost: cost(3000, 30, 6144)},
		{System: "vmm-cloud", ReadyMS: 100, CostError: "no KVM VM"},
		{System: "qemu-pc", ReadyMS: 200, Cost: cost(4000, 80, 51200)},
		{System: "container", ReadyMS: 5},
	}}
	r.summarize()
	want := map[string]float64{
		"vmm-cloud / qemu-pc, exits":        0.5,  // 2000 / 4000
		"vmm-cloud / qemu-pc, cpu_ms":       0.25, // 200 ms / 800 ms
		"vmm-cloud / qemu-pc, overhead_mib": 0.1,  // 5 MiB / 50 MiB
	}
	if len(r.CostRatios) != len(want) {
		t.Fatalf("cost ratios %+v", r.CostRatios)
	}
	for _, q := range r.CostRatios {
		if math.Abs(q.Value-want[q.Name]) > 1e-9 {
			t.Errorf("%s = %v, want %v", q.Name, q.Value, want[q.Name])
		}
	}
	if v := r.Systems[0].figure("io_exits"); v != 1000 {
		t.Errorf("vmm-cloud io_exits median %v, want 1000", v)
	}
	if len(r.Systems[2].Cost) != 0 {
		t.Errorf("container has costs %+v", r.Systems[2].Cost)
	}
	var b strings.Builder
	r.WriteTable(&b)
	for _, s := range []string{
		"| vmm-cloud | 2000 | 1000 |",
		"| qemu-pc | 4000 | 2000 |",
		"| vmm-cloud / qemu-pc, exits | 0.50x |",
		"| vmm-cloud / qemu-pc, overhead_mib | 0.10x |",
		"Costs not read for some boots, e.g. vmm-cloud round 1: no KVM VM",
	} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
	_, costs, _ := strings.Cut(b.String(), "cost of one boot")
	if strings.Contains(costs, "| container |") {
		t.Errorf("container, which has no cost, listed in the cost table:\n%s", costs)
	}
}

// A boot that fails is tried again and reported, up to bootAttempts
// times; one that always fails ends with its error.
func TestBootRetried(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, tt := range []struct {
		name      string
		failFirst int // boots that die before the marker
		wantErr   bool
		wantFails int
	}{
		{"first try", 0, false, 0},
		{"third try", 2, false, 2},
		{"never", 5, true, bootAttempts - 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			count := filepath.Join(t.TempDir(), "count")
			peer := fakeScript(t, fmt.Sprintf(`n=$(cat %[1]s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %[1]s
if [ $n -le %[2]d ]; then echo "guest reset $n"; exit 1; fi
echo vmm-guest: ready; exec sleep 60
`, count, tt.failFirst))
			var fails []Failure
			var log strings.Builder
			smp, err := bootRetried(context.Background(), System{Name: "qemu-pc", Kind: KindPeer, Args: []string{peer}}, 4, &log, func(f Failure) { fails = append(fails, f) })
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && smp.ReadyMS <= 0 {
				t.Errorf("sample %+v", smp)
			}
			if len(fails) != tt.wantFails {
				t.Fatalf("failures %+v, want %d", fails, tt.wantFails)
			}
			for i, f := range fails {
				if f.System != "qemu-pc" || f.Round != 4 || f.Attempt != i+1 || !strings.Contains(f.Error, "exited before the ready marker") || strings.Contains(f.Error, "\n") {
					t.Errorf("failure %d: %+v", i, f)
				}
			}
			b, _ := os.ReadFile(count)
			if want := min(tt.failFirst+1, bootAttempts); strings.TrimSpace(string(b)) != fmt.Sprint(want) {
				t.Errorf("booted %s times, want %d", b, want)
			}
		})
	}
	r := &Report{Failures: []Failure{{System: "qemu-pc", Round: 1, Attempt: 1, Error: "qemu-pc: exited before the ready marker"}, {System: "vmm-vmlinux", Round: -1, Attempt: 2, Error: "boom"}}}
	var b strings.Builder
	r.WriteTable(&b)
	for _, s := range []string{"2 boots failed and were tried again", "- qemu-pc, round 2, attempt 1: qemu-pc: exited before the ready marker", "- vmm-vmlinux, before the rounds, attempt 2: boom"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}

// The kernel-cache and distro systems are built from the layout: the
// cache directories apart, the distro's disk and marker, the same size
// and command line for vmm and QEMU.
func TestSystemsCacheAndDistro(t *testing.T) {
	l := Layout{VMM: "/vmm", CloudKernel: "/k", Initrd: "/i", WorkDir: "/w", QEMU: "/qemu", QEMUCPU: "host",
		Distro: &DistroLayout{Kernel: "/d/vmlinuz", Initrd: "/d/initrd.img", Disk: "/dev/vda"}}
	sys, err := systems(l, Guest{MiB: 256, CPUs: 1}, []string{"vmm-vmlinux", "vmm-vmlinux-cold", "vmm-distro", "qemu-distro"})
	if err != nil {
		t.Fatal(err)
	}
	warm, cold, vd, qd := sys[0], sys[1], sys[2], sys[3]
	if got := strings.Join(warm.Args, " "); !strings.HasSuffix(got, "-kernel-cache /w/kernel-cache-warm") || warm.FillsDir != "/w/kernel-cache-warm" || warm.EmptyDir != "" {
		t.Errorf("vmm-vmlinux: %s, fills %q, empties %q", got, warm.FillsDir, warm.EmptyDir)
	}
	if got := strings.Join(cold.Args, " "); !strings.HasSuffix(got, "-kernel-cache /w/kernel-cache-cold") || cold.EmptyDir != "/w/kernel-cache-cold" || cold.FillsDir != "" {
		t.Errorf("vmm-vmlinux-cold: %s, fills %q, empties %q", got, cold.FillsDir, cold.EmptyDir)
	}
	if want := "/vmm -kernel /d/vmlinuz -initrd /d/initrd.img -append root=/dev/vda ro quiet -disk /dev/vda -m 768 -smp 2"; strings.Join(vd.Args, " ") != want {
		t.Errorf("vmm-distro: %s, want %s", strings.Join(vd.Args, " "), want)
	}
	q := strings.Join(qd.Args, " ")
	for _, s := range []string{"-m 768 -smp 2", "-append console=ttyS0 cryptomgr.notests root=/dev/vda ro quiet", "file=/dev/vda,", "-no-reboot"} {
		if !strings.Contains(q, s) {
			t.Errorf("qemu-distro lacks %q: %s", s, q)
		}
	}
	for _, s := range []System{vd, qd} {
		if s.Marker != distro.Marker || s.ExitLine != distro.PowerOffLine || s.RAMMiB != 768 {
			t.Errorf("%s: marker %q, exit line %q, RAM %d", s.Name, s.Marker, s.ExitLine, s.RAMMiB)
		}
	}
	l.Distro = nil
	if _, err := systems(l, Guest{MiB: 256, CPUs: 1}, []string{"vmm-distro"}); err == nil {
		t.Error("vmm-distro without a distro image was accepted")
	}
}

// A peer that powers itself off after its marker is waited for, not
// killed, and the boot ends with the process; one that exits without its
// power-off line, or with an error, fails the boot.
func TestBootExitLine(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, tt := range []struct {
		name, after string
		err         string
	}{
		{"powers off", "sleep 0.3; echo 'reboot: Power down'; touch DONE", ""},
		{"exits silently", "touch DONE", "without printing"},
		{"fails", "touch DONE; exit 3", "exit status 3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := filepath.Join(t.TempDir(), "done")
			peer := fakeScript(t, "echo 'vmm-distro: multi-user.target reached'; "+strings.ReplaceAll(tt.after, "DONE", done)+"\n")
			smp, err := boot(context.Background(), System{Name: "qemu-distro", Kind: KindPeer, Marker: distro.Marker, ExitLine: distro.PowerOffLine, Args: []string{peer}})
			if tt.err == "" && (err != nil || smp.ReadyMS <= 0) {
				t.Fatalf("sample %+v, err %v", smp, err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
			if _, err := os.Stat(done); err != nil {
				t.Errorf("the peer was killed before it finished: %v", err)
			}
		})
	}
}
