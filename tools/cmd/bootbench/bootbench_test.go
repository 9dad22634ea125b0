package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
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

func TestSampleLines(t *testing.T) {
	var b bytes.Buffer
	in := Sample{System: "vmm-microvm", Round: 3, ReadyMS: 123.5, Phases: map[string]float64{"ready": 120}}
	b.WriteString("noise\r\n")
	emitLine(&b, in)
	b.WriteString("bootbench-error: boom | more\nbootbench-done\n")
	ms := sampleRE.FindAllStringSubmatch(b.String(), -1)
	if len(ms) != 3 || ms[1][3] != "boom | more" || ms[2][1] != "done" {
		t.Fatalf("matches %q", ms)
	}
	var out Sample
	if err := json.Unmarshal([]byte(ms[0][2]), &out); err != nil {
		t.Fatal(err)
	}
	if out.System != in.System || out.Round != 3 || out.ReadyMS != 123.5 || out.Phases["ready"] != 120 {
		t.Fatalf("round trip: %+v", out)
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
	if smp.ReadyMS <= 0 || smp.Phases["ready"] != smp.ReadyMS || math.Abs(smp.Phases["init-start"]-(smp.ReadyMS-0.1)) > 1e-9 {
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
	}
	for _, tt := range tests {
		_, err := parseFlags(tt.args)
		if (err != nil) != tt.bad {
			t.Errorf("parseFlags(%q): %v", tt.args, err)
		}
	}
}
