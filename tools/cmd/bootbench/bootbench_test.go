package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/tools/nested"
)

func TestSegmentsOf(t *testing.T) {
	tests := []struct {
		name string
		s    Sample
		want string // "name=ms,..."
	}{
		{"peer", Sample{ReadyMS: 3000}, "boot=3000"},
		{"container", Sample{ReadyMS: 15, Phases: map[string]float64{"container-setup": 4, "ready": 15}}, "namespaces+cgroup=4,userland=11"},
		{"vmm", Sample{ReadyMS: 1000, Phases: map[string]float64{
			"exec+console": 10, "vmm-start": 10, "memory-ready": 30, "first-kvm-run": 31, "first-exit": 35,
			"init-start": 800, "ready": 990, "poweroff": 1100, "vmm-exit": 1120}},
			"exec=10,vmm setup=20,vCPU start=1,guest entry=4,kernel=765,userland=200"},
		{"vmm without first exit", Sample{ReadyMS: 100, Phases: map[string]float64{"exec+console": 1, "memory-ready": 5, "init-start": 50}},
			"exec=1,vmm setup=4,kernel=45,userland=50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var parts []string
			for _, seg := range segmentsOf(tt.s) {
				parts = append(parts, seg.Name+"="+strings.TrimSuffix(strings.TrimRight(fmtFloat(seg.Median), "0"), "."))
			}
			if got := strings.Join(parts, ","); got != tt.want {
				t.Fatalf("segments %s, want %s", got, tt.want)
			}
		})
	}
}

func fmtFloat(v float64) string {
	b, _ := json.Marshal(math.Round(v*1000) / 1000)
	return string(b) + ".0"
}

func TestPhasesOf(t *testing.T) {
	stamps := []report.Stamp{
		{Phase: guestabi.VMMStart}, {Phase: guestabi.MemoryReady, Since: 20 * time.Millisecond},
		{Phase: guestabi.Ready, Since: 900 * time.Millisecond},
	}
	got := phasesOf(stamps, 950)
	want := map[string]float64{"exec+console": 50, "vmm-start": 50, "memory-ready": 70, "ready": 950}
	if len(got) != len(want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Fatalf("phase %s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
	if p := phasesOf(stamps[:2], 950); p != nil {
		t.Fatalf("without a ready stamp: %v, want nil", p)
	}
}

func TestSummarize(t *testing.T) {
	r := &Report{}
	for i, v := range []float64{300, 100, 200, 1000} { // median of 4: 250
		r.Samples = append(r.Samples, Sample{System: "vmm-cloud", Round: i, ReadyMS: v})
	}
	for i, v := range []float64{500, 400, 600} {
		r.Samples = append(r.Samples, Sample{System: "qemu-pc", Round: i, ReadyMS: v})
	}
	for i, v := range []float64{10, 5} {
		r.Samples = append(r.Samples, Sample{System: "container", Round: i, ReadyMS: v,
			Phases: map[string]float64{"container-setup": v / 2}})
	}
	r.summarize()
	if len(r.Systems) != 3 || r.Systems[0].Name != "vmm-cloud" || r.Systems[1].Name != "qemu-pc" || r.Systems[2].Name != "container" {
		t.Fatalf("systems %+v", r.Systems)
	}
	if s := r.Systems[0].Ready; s != (Stat{N: 4, Min: 100, Median: 250, Max: 1000}) {
		t.Fatalf("vmm stat %+v", s)
	}
	if s := r.Systems[2].Segments; len(s) != 2 || s[0].Name != "namespaces+cgroup" || s[0].Median != 3.75 {
		t.Fatalf("container segments %+v", s)
	}
	want := map[string]float64{"vmm-cloud / qemu-pc": 0.5, "vmm-cloud / container": 250 / 7.5, "qemu-pc / container": 500 / 7.5}
	if len(r.Ratios) != len(want) {
		t.Fatalf("ratios %+v", r.Ratios)
	}
	for _, q := range r.Ratios {
		if math.Abs(q.Value-want[q.Name]) > 1e-9 {
			t.Fatalf("ratio %s = %v, want %v", q.Name, q.Value, want[q.Name])
		}
	}
	var b strings.Builder
	r.WriteTable(&b)
	for _, s := range []string{"| vmm-cloud | boot | 100 ms | 250 ms | 1.00 s |", "| vmm-cloud / qemu-pc | 0.50x |", "| vmm-cloud / container | 33x |"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}

func TestSVG(t *testing.T) {
	r := &Report{Emulated: true, Rounds: 3, Guest: Guest{MiB: 256, CPUs: 1}}
	r.Samples = []Sample{
		{System: "vmm-cloud", ReadyMS: 900, Phases: map[string]float64{"exec+console": 5, "memory-ready": 50, "init-start": 700}},
		{System: "qemu-pc", ReadyMS: 3000},
		{System: "container", ReadyMS: 15, Phases: map[string]float64{"container-setup": 5}},
	}
	r.summarize()
	var b bytes.Buffer
	if err := r.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	rects, texts := 0, []string{}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b.String())
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if el.Name.Local == "rect" {
				rects++
			}
		case xml.CharData:
			texts = append(texts, string(el))
		}
	}
	all := strings.Join(texts, "|")
	for _, s := range []string{"vmm-cloud", "qemu-pc", "container", "only ratios count", "3.00 s", "15.0 ms", "kernel to init"} {
		if !strings.Contains(all, s) {
			t.Errorf("chart lacks %q", s)
		}
	}
	// Background, 4+1+2 segments, 6 legend swatches.
	if rects != 1+7+6 {
		t.Errorf("%d rects", rects)
	}
}

func TestL1Lines(t *testing.T) {
	var b bytes.Buffer
	in := Sample{System: "vmm-microvm", Round: 3, ReadyMS: 123.5, Phases: map[string]float64{"ready": 120}}
	mem := MemoryReport{RestoredVMs: 10, RestoredPSSKiB: []int64{1, 2}, ColdPSSKiB: 3}
	emitLine(&b, "sample", in)
	emitLine(&b, "snapshot", snapshotLine{MS: 4200.5})
	emitLine(&b, "memory", mem)
	emitLine(&b, "failure", Failure{System: "qemu-pc", Round: 2, Attempt: 1, Error: "guest reset"})
	lines := strings.Split(b.String(), "\n")
	sample, snap, memLine, failLine := lines[0], lines[1], lines[2], lines[3]
	tests := []struct {
		name, out string
		check     func(o l1Output) bool
		err       string
	}{
		{"sample", "noise\r\n" + sample + "\r\n", func(o l1Output) bool {
			s := o.samples
			return len(s) == 1 && s[0].System == in.System && s[0].Round == 3 && s[0].ReadyMS == 123.5 && s[0].Phases["ready"] == 120
		}, ""},
		{"snapshot", snap + "\n", func(o l1Output) bool { return len(o.snapshotMS) == 1 && o.snapshotMS[0] == 4200.5 }, ""},
		{"memory", memLine + "\n", func(o l1Output) bool {
			return o.memory != nil && o.memory.RestoredVMs == 10 && len(o.memory.RestoredPSSKiB) == 2 && o.memory.ColdPSSKiB == 3
		}, ""},
		{"failure", failLine + "\r\n", func(o l1Output) bool {
			return len(o.failures) == 1 && o.failures[0] == Failure{System: "qemu-pc", Round: 2, Attempt: 1, Error: "guest reset"}
		}, ""},
		{"done", "x\nbootbench-done\r\n", func(o l1Output) bool { return o.done }, ""},
		{"error", "bootbench-error: boom | more\n", nil, "boom\nmore"},
		{"bad json", "bootbench-memory {\"restored_vms\": \"ten\"}\n", nil, "bootbench in L1: memory"},
		{"unparsable", "bootbench-sample [1]\n", nil, "unparsable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o l1Output
			err := o.parseLine(tt.out)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !tt.check(o) {
				t.Fatalf("parse %q: %+v, %v", tt.out, o, err)
			}
		})
	}
}

func TestRestorePhases(t *testing.T) {
	stamp := func(p guestabi.Phase, msec float64) report.Stamp {
		return report.Stamp{Phase: p, Since: time.Duration(msec * float64(time.Millisecond))}
	}
	full := []report.Stamp{stamp(guestabi.VMMStart, 0), stamp(guestabi.FirstRun, 30), stamp(guestabi.FirstExit, 31), stamp(guestabi.VMMExit, 200)}
	tests := []struct {
		name         string
		stamps       []report.Stamp
		ready, exit  float64
		want         map[string]float64
		wantSegments string
	}{
		{"offset from the exit", full, 150, 210, map[string]float64{"exec+console": 10, "restore": 40, "ready": 150}, "exec=10,restore=30,job start=110"},
		{"exit seen before the stamp", full, 150, 190, map[string]float64{"exec+console": 0, "restore": 30, "ready": 150}, "exec=0,restore=30,job start=120"},
		{"no first run", []report.Stamp{stamp(guestabi.VMMStart, 0), stamp(guestabi.VMMExit, 200)}, 150, 210, nil, "boot=150"},
		{"no exit", full[:3], 150, 210, nil, "boot=150"},
		{"no boot timer", nil, 150, 210, nil, "boot=150"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := restorePhases(tt.stamps, tt.ready, tt.exit)
			if len(got) != len(tt.want) {
				t.Fatalf("phases %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-6 {
					t.Fatalf("phase %s = %v, want %v (all %v)", k, g, v, got)
				}
			}
			var parts []string
			for _, seg := range segmentsOf(Sample{ReadyMS: tt.ready, Phases: got}) {
				parts = append(parts, fmt.Sprintf("%s=%.0f", seg.Name, seg.Median))
			}
			if s := strings.Join(parts, ","); s != tt.wantSegments {
				t.Fatalf("segments %s, want %s", s, tt.wantSegments)
			}
		})
	}
}

func TestParsePSS(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		bad      bool
	}{
		{"rollup", "55d0c0a0e000-7ffd8a5f9000 ---p 00000000 00:00 0                          [rollup]\nRss:              262948 kB\nPss:               26492 kB\nPss_Anon:           1234 kB\nPss_File:          25258 kB\n", 26492, false},
		{"zero", "Pss: 0 kB\n", 0, false},
		{"no pss", "Rss: 12 kB\nPss_Anon: 3 kB\n", 0, true},
		{"other unit", "Pss: 12 MB\n", 0, true},
		{"not a number", "Pss: x kB\n", 0, true},
		{"negative", "Pss: -3 kB\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePSS(strings.NewReader(tt.in))
			if (err != nil) != tt.bad || got != tt.want {
				t.Fatalf("parsePSS = %d, %v; want %d, bad %v", got, err, tt.want, tt.bad)
			}
		})
	}
}

func TestMemorySummary(t *testing.T) {
	tests := []struct {
		name                  string
		m                     MemoryReport
		perRestored, cold, by float64
		table                 []string
	}{
		{"ten restored", MemoryReport{RestoredVMs: 10, RestoredPSSKiB: []int64{20480, 10240, 10240, 10240, 10240, 10240, 10240, 10240, 10240, 10240}, ColdPSSKiB: 153600},
			11, 150, 150.0 / 11, []string{"| 10 restored VMs at once (sum / 10) | 11.0 |", "| one cold-booted VM | 150.0 |", "| cold / restored | 14x |"}},
		{"no cold figure", MemoryReport{RestoredVMs: 2, RestoredPSSKiB: []int64{1024, 1024}}, 0, 0, 0, nil},
		{"failed", MemoryReport{RestoredVMs: 10, Error: "10 restored VMs: VM 3 of 10: boom\ntail"}, 0, 0, 0,
			[]string{"Memory (PSS) not measured: 10 restored VMs: VM 3 of 10: boom | tail"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m
			m.summarize()
			if math.Abs(m.PerRestoredMiB-tt.perRestored) > 1e-9 || math.Abs(m.ColdMiB-tt.cold) > 1e-9 || math.Abs(m.ColdPerRestored-tt.by) > 1e-9 {
				t.Fatalf("summary %+v, want %v/%v/%v", m, tt.perRestored, tt.cold, tt.by)
			}
			r := &Report{Memory: &m, SnapshotMS: []float64{4200, 3900}}
			var b strings.Builder
			r.WriteTable(&b)
			for _, s := range append(tt.table, "outside the rounds): 4.20 s, 3.90 s") {
				if !strings.Contains(b.String(), s) {
					t.Errorf("table lacks %q:\n%s", s, b.String())
				}
			}
		})
	}
}

// TestIdlePSS runs idle "VMs" that are cat itself: the harness's
// marker comes back through its stdin and stdout, and its PSS is real.
func TestIdlePSS(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat")
	}
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("no smaps_rollup")
	}
	pss, err := idlePSS(context.Background(), 3, func() []string { return []string{cat} })
	if err != nil {
		t.Fatal(err)
	}
	if len(pss) != 3 {
		t.Fatalf("pss %v", pss)
	}
	for _, p := range pss {
		if p <= 0 {
			t.Fatalf("pss %v", pss)
		}
	}
	// A "VM" whose job never echoes: the deadline (here the context's)
	// ends the wait, and the error says which one.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	silent := fakeScript(t, "exec sleep 60\n")
	if _, err := idlePSS(ctx, 2, func() []string { return []string{silent} }); err == nil || !strings.Contains(err.Error(), "VM 1 of 2") {
		t.Fatalf("err %v", err)
	}
	dies := fakeScript(t, "echo no kvm >&2; exit 1\n")
	if _, err := idlePSS(context.Background(), 1, func() []string { return []string{dies} }); err == nil || !strings.Contains(err.Error(), "no kvm") {
		t.Fatalf("err %v", err)
	}
}

func TestCompleteRounds(t *testing.T) {
	s := func(r int) Sample { return Sample{Round: r} }
	tests := []struct {
		ss   []Sample
		n    int
		want int
	}{
		{nil, 2, 0},
		{[]Sample{s(0), s(0), s(1)}, 2, 1},
		{[]Sample{s(0), s(0), s(1), s(1)}, 2, 2},
		{[]Sample{s(0), s(1), s(1)}, 2, 0},
		{[]Sample{s(0)}, 0, 0},
	}
	for _, tt := range tests {
		if got := completeRounds(tt.ss, tt.n); got != tt.want {
			t.Errorf("completeRounds(%v, %d) = %d, want %d", tt.ss, tt.n, got, tt.want)
		}
	}
}

// TestFreshL1: an L1 that froze, running or booting, gets the remaining
// rounds in a fresh one (the run of 2026-12-06 20:51 ended at its first
// L1, frozen after loading virtio_blk, "L1 agent not ready within 2m0s");
// any other end of an L1 run ends the benchmark.
func TestFreshL1(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("run: %w: job console and control channel silent for 30s", nested.ErrFrozen), true},
		{fmt.Errorf("nested: %w within 2m0s", nested.ErrNotReady), true},
		{fmt.Errorf("nested: %w: QEMU exited", nested.ErrL1Exited), false},
		{nested.ErrClosed, false},
		{errors.New("bootbench in L1: vmm-cloud failed 3 tries"), false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := freshL1(tt.err); got != tt.want {
			t.Errorf("freshL1(%q) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// fakeVMM writes a shell script that behaves like vmm -boot-timer on a
// console: marker on stdout, "poweroff" read from stdin, the report on
// stderr at exit.
func fakeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBootVM(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	vmm := fakeScript(t, `echo "booting"
printf 'noise vmm-guest: ready\r\n'
read cmd
[ "$cmd" = poweroff ] || exit 3
echo "boot-timer: vmm-start 0.000ms" >&2
echo "boot-timer: init-start 0.000ms" >&2
echo "boot-timer: ready 0.100ms" >&2
`)
	// The script's stamps are below any real fork+exec of sh, so the
	// measured time to ready is never shorter than the reported one (a
	// 2 ms stamp once was, on a fast run, and the offset clamped to 0).
	smp, err := boot(context.Background(), System{Name: "vmm-cloud", Kind: KindVMM, Args: []string{vmm}})
	if err != nil {
		t.Fatal(err)
	}
	// The phases are the reported stamps plus an offset in float64
	// milliseconds, so "ready" equals ReadyMS only to rounding (it
	// once came out 0.4703419999999999 against 0.470342).
	if smp.ReadyMS <= 0 || math.Abs(smp.Phases["ready"]-smp.ReadyMS) > 1e-9 || math.Abs(smp.Phases["init-start"]-(smp.ReadyMS-0.1)) > 1e-9 {
		t.Fatalf("sample %+v", smp)
	}

	peer := fakeScript(t, "echo vmm-guest: ready; exec sleep 60\n")
	start := time.Now()
	smp, err = boot(context.Background(), System{Name: "qemu-pc", Kind: KindPeer, Args: []string{peer}})
	if err != nil {
		t.Fatal(err)
	}
	if smp.Phases != nil || time.Since(start) > 30*time.Second {
		t.Fatalf("peer sample %+v after %v (not killed?)", smp, time.Since(start))
	}

	dies := fakeScript(t, "echo kernel panic; echo oops >&2; exit 1\n")
	_, err = boot(context.Background(), System{Name: "bad", Kind: KindPeer, Args: []string{dies}})
	if err == nil || !strings.Contains(err.Error(), "exited before the ready marker") || !strings.Contains(err.Error(), "kernel panic") || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("err %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	silent := fakeScript(t, "exec sleep 60\n")
	if _, err := boot(ctx, System{Name: "silent", Kind: KindPeer, Args: []string{silent}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's deadline", err)
	}
}

func TestBootJob(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	tests := []struct {
		name, script string
		err          string
		phases       bool
	}{
		// Stamps as a restore's: the marker 100 ms in, the first
		// KVM_RUN halfway there, the exit stamped 50 ms after the
		// marker, so the exit-matched offset puts the restore before
		// the marker as long as the script's real exit comes less than
		// 100 ms after its marker (at once here: a sleep there made a
		// loaded machine's run fail).
		{"restored", `sleep 0.1
echo vmm-guest: ready
echo "boot-timer: vmm-start 0.000ms" >&2
echo "boot-timer: first-kvm-run 50.000ms" >&2
echo "boot-timer: vmm-exit 150.000ms" >&2
`, "", true},
		{"no boot timer", "echo vmm-guest: ready\n", "", false},
		{"job fails", "echo vmm-guest: ready; echo refused >&2; exit 1\n", "refused", false},
		{"no marker", "echo snapshot was made by another vmm >&2; exit 1\n", "another vmm", false},
		{"never exits", "echo vmm-guest: ready; exec sleep 60\n", "still running", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "never exits" && testing.Short() {
				t.Skip("waits for the exit timeout")
			}
			smp, err := boot(context.Background(), System{Name: "vmm-restore", Kind: KindJob, Args: []string{fakeScript(t, tt.script)}})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if smp.ReadyMS <= 0 || (smp.Phases != nil) != tt.phases {
				t.Fatalf("sample %+v", smp)
			}
			if tt.phases && (smp.Phases["ready"] != smp.ReadyMS || smp.Phases["restore"] < smp.Phases["exec+console"] || smp.Phases["restore"] > smp.ReadyMS) {
				t.Fatalf("phases %+v", smp.Phases)
			}
		})
	}
}

func TestSystems(t *testing.T) {
	l := Layout{VMM: "/vmm", BootTimer: true, CloudKernel: "/k", Initrd: "/i", WorkDir: "/w"}
	sys, err := systems(l, Guest{MiB: 256, CPUs: 1}, []string{"vmm-restore", "vmm-cloud"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/vmm run -snapshot /w/snapshot -m 256 -smp 1 -boot-timer -- echo vmm-guest: ready",
		"/vmm -kernel /k -initrd /i -m 256 -smp 1 -append quiet -boot-timer",
	}
	for i, s := range sys {
		if got := strings.Join(s.Args, " "); got != want[i] {
			t.Errorf("%s: %s, want %s", s.Name, got, want[i])
		}
	}
	if sys[0].Kind != KindJob || sys[1].Kind != KindVMM {
		t.Errorf("kinds %v %v", sys[0].Kind, sys[1].Kind)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		bad  bool
	}{
		{nil, false},
		{[]string{"-runs", "3", "-json", "x.json", "-svg", "x.svg"}, false},
		{[]string{"--runs=0"}, true},
		{[]string{"-mode", "fast"}, true},
		{[]string{"-boot-timer", "maybe"}, true},
		{[]string{"-mem", "16"}, true},
		{[]string{"stray"}, true},
		{[]string{"-memory-vms", "0"}, false},
		{[]string{"-memory-vms", "-1"}, true},
	}
	for _, tt := range tests {
		_, err := parseFlags(tt.args)
		if (err != nil) != tt.bad {
			t.Errorf("parseFlags(%q): %v", tt.args, err)
		}
	}
}
