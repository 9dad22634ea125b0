package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// phaseSegments maps each phase end, in boot order, to the name of the
// segment that ends there. A sample's segments are the spans between the
// phase ends it has; the last always ends at the ready marker.
var phaseSegments = []struct{ end, segment string }{
	{"exec+console", "exec"},                 // harness start -> vmm's main (plus console latency)
	{"restore", "restore"},                   // restored vmm: -> first KVM_RUN
	{"memory-ready", "vmm setup"},            // RAM, kernel load, vCPUs
	{"first-kvm-run", "vCPU start"},          // -> first KVM_RUN
	{"first-exit", "guest entry"},            // -> the guest's first exit
	{"container-setup", "namespaces+cgroup"}, // clone, mounts, pivot_root -> exec of init
	{"init-start", "kernel"},                 // -> our init's first instruction
	{"ready", "userland"},                    // -> the ready marker
}

// segmentsOf splits a sample into named spans (ms). A sample without
// phases is one span, "boot". A restored guest's last span is its job's
// start (the guest taking the job and running it), not a userland's.
func segmentsOf(s Sample) []Segment {
	if len(s.Phases) == 0 {
		return []Segment{{Name: "boot", Stat: Stat{Median: s.ReadyMS}}}
	}
	_, restored := s.Phases["restore"]
	var out []Segment
	prev := 0.0
	for _, p := range phaseSegments {
		end, ok := s.Phases[p.end]
		name := p.segment
		if p.end == "ready" {
			end, ok = s.ReadyMS, true
			if restored {
				name = "job start"
			}
		}
		if !ok || end < prev {
			continue
		}
		out = append(out, Segment{Name: name, Stat: Stat{Median: end - prev}})
		prev = end
	}
	return out
}

// Stat summarizes one figure over the rounds (milliseconds).
type Stat struct {
	N      int     `json:"n"`
	Min    float64 `json:"min_ms"`
	Median float64 `json:"median_ms"`
	Max    float64 `json:"max_ms"`
}

func statOf(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Stat{N: len(v), Min: v[0], Median: med, Max: v[len(v)-1]}
}

// Segment is one phase span of a system.
type Segment struct {
	Name string `json:"name"`
	Stat
}

// SystemReport is one system's figures.
type SystemReport struct {
	Name     string    `json:"name"`
	Ready    Stat      `json:"ready"`
	Segments []Segment `json:"segments"`
	// Cost is the boot's cost to ready, per metric (costMetrics).
	Cost []Figure `json:"cost,omitempty"`
}

// Ratio is a ratio of median times to ready.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// Report is the benchmark's result, as written with --json.
type Report struct {
	Mode     string `json:"mode"` // "direct" or "nested"
	Emulated bool   `json:"emulated"`
	Note     string `json:"note,omitempty"`
	Rounds   int    `json:"rounds"`
	Warmup   int    `json:"warmup"`
	Guest    Guest  `json:"guest"`
	Cmdline  string `json:"cmdline"`
	L1Boots  int    `json:"l1_boots,omitempty"`
	// SnapshotMS is how long vmm snapshot took, once per machine (per
	// L1 boot, nested), before the rounds.
	SnapshotMS []float64     `json:"snapshot_ms,omitempty"`
	Memory     *MemoryReport `json:"memory,omitempty"`
	// Failures are the boots that failed and were tried again.
	Failures []Failure      `json:"failures,omitempty"`
	Systems  []SystemReport `json:"systems"`
	Ratios   []Ratio        `json:"ratios"`
	// CostRatios are ratios of median costs (costRatioKeys) for the
	// same pairs, where both systems have them.
	CostRatios []Ratio  `json:"cost_ratios,omitempty"`
	Samples    []Sample `json:"samples"`
}

// ratioPairs are the ratios reported when both systems ran: vmm against
// each peer on the same kernel, a cold boot against a restore, and each
// VM against the container.
var ratioPairs = [][2]string{
	{"vmm-cloud", "qemu-pc"}, {"vmm-cloud", "qemu-microvm"}, {"vmm-cloud", "lkvm"},
	{"vmm-vmlinux", "qemu-pc"}, {"vmm-vmlinux-cold", "qemu-pc"}, {"vmm-cloud", "vmm-vmlinux"},
	{"vmm-cloud", "vmm-restore"}, {"vmm-distro", "qemu-distro"},
	{"vmm-cloud", "container"}, {"vmm-restore", "container"}, {"vmm-microvm", "container"},
	{"qemu-pc", "container"}, {"qemu-microvm", "container"},
}

// summarize fills the report's systems and ratios from its samples.
func (r *Report) summarize() {
	bySys := map[string][]Sample{}
	for _, s := range r.Samples {
		bySys[s.System] = append(bySys[s.System], s)
	}
	r.Systems = nil
	for _, name := range systemOrder {
		ss := bySys[name]
		if len(ss) == 0 {
			continue
		}
		sr := SystemReport{Name: name}
		var ready []float64
		segVals := map[string][]float64{}
		var segOrder []string
		for _, s := range ss {
			ready = append(ready, s.ReadyMS)
			for _, seg := range segmentsOf(s) {
				if _, ok := segVals[seg.Name]; !ok {
					segOrder = append(segOrder, seg.Name)
				}
				segVals[seg.Name] = append(segVals[seg.Name], seg.Median)
			}
		}
		sr.Ready = statOf(ready)
		sr.Cost = costFigures(ss)
		for _, n := range segOrder {
			sr.Segments = append(sr.Segments, Segment{Name: n, Stat: statOf(segVals[n])})
		}
		r.Systems = append(r.Systems, sr)
	}
	r.Ratios, r.CostRatios = nil, nil
	bySysReport := map[string]SystemReport{}
	for _, s := range r.Systems {
		bySysReport[s.Name] = s
	}
	for _, p := range ratioPairs {
		a, okA := bySysReport[p[0]]
		b, okB := bySysReport[p[1]]
		if !okA || !okB {
			continue
		}
		name := p[0] + " / " + p[1]
		if b.Ready.Median > 0 {
			r.Ratios = append(r.Ratios, Ratio{Name: name, Value: a.Ready.Median / b.Ready.Median})
		}
		for _, k := range costRatioKeys {
			if x, y := a.figure(k), b.figure(k); x >= 0 && y > 0 {
				r.CostRatios = append(r.CostRatios, Ratio{Name: name + ", " + k, Value: x / y})
			}
		}
	}
}

func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.1f ms", v)
	}
}

// WriteTable prints the report as markdown.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "Boot to `%s`: %d rounds after %d warm-up, guest %d MiB / %d vCPU, cmdline %q for every VM (vmm's default line, then -append) (%s mode)\n\n",
		readyMarker, r.Rounds, r.Warmup, r.Guest.MiB, r.Guest.CPUs, r.Cmdline, r.Mode)
	if r.Note != "" {
		fmt.Fprintf(w, "%s\n\n", r.Note)
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "%d boots failed and were tried again (at most %d tries per system and round):\n\n", len(r.Failures), bootAttempts)
		for _, f := range r.Failures {
			when := fmt.Sprintf("round %d", f.Round+1)
			if f.Round < 0 {
				when = "before the rounds"
			}
			fmt.Fprintf(w, "- %s, %s, attempt %d: %s\n", f.System, when, f.Attempt, f.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "| system | phase | min | median | max |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	for _, s := range r.Systems {
		for _, seg := range s.Segments {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", s.Name, seg.Name, fmtMS(seg.Min), fmtMS(seg.Median), fmtMS(seg.Max))
		}
		fmt.Fprintf(w, "| **%s** | **to ready** | %s | **%s** | %s |\n", s.Name, fmtMS(s.Ready.Min), fmtMS(s.Ready.Median), fmtMS(s.Ready.Max))
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\n| ratio of medians (to ready) | value |")
		fmt.Fprintln(w, "|---|---:|")
		for _, q := range r.Ratios {
			fmt.Fprintf(w, "| %s | %s |\n", q.Name, fmtRatio(q.Value))
		}
	}
	r.writeCostTable(w)
	if len(r.CostRatios) > 0 {
		fmt.Fprintln(w, "\n| ratio of median costs (exits and VMM CPU per boot, VMM memory outside guest RAM) | value |")
		fmt.Fprintln(w, "|---|---:|")
		for _, q := range r.CostRatios {
			fmt.Fprintf(w, "| %s | %s |\n", q.Name, fmtRatio(q.Value))
		}
	}
	if len(r.SnapshotMS) > 0 {
		var each []string
		for _, v := range r.SnapshotMS {
			each = append(each, fmtMS(v))
		}
		fmt.Fprintf(w, "\nvmm snapshot (made once per machine, outside the rounds): %s\n", strings.Join(each, ", "))
	}
	if m := r.Memory; m != nil {
		fmt.Fprintln(w)
		if m.Error != "" {
			fmt.Fprintf(w, "Memory (PSS) not measured: %s\n", strings.ReplaceAll(m.Error, "\n", " | "))
			return
		}
		fmt.Fprintln(w, "| memory, each VM idle in its job (PSS of its vmm) | MiB per VM |")
		fmt.Fprintln(w, "|---|---:|")
		fmt.Fprintf(w, "| %d restored VMs at once (sum / %d) | %.1f |\n", m.RestoredVMs, m.RestoredVMs, m.PerRestoredMiB)
		fmt.Fprintf(w, "| one cold-booted VM | %.1f |\n", m.ColdMiB)
		fmt.Fprintf(w, "| cold / restored | %s |\n", fmtRatio(m.ColdPerRestored))
	}
}

func fmtRatio(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0fx", v)
	}
	return fmt.Sprintf("%.2fx", v)
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// segmentColors gives each kind of span one color across all bars.
var segmentColors = map[string]string{
	"exec":              "#9e9e9e",
	"vmm setup":         "#1f77b4",
	"vCPU start":        "#17becf",
	"guest entry":       "#bcbd22",
	"kernel":            "#ff7f0e",
	"userland":          "#2ca02c",
	"namespaces+cgroup": "#9467bd",
	"boot":              "#d62728",
	"restore":           "#8c564b",
	"job start":         "#e377c2",
}

// segmentText explains each span in the chart's legend.
var segmentText = map[string]string{
	"exec":              "exec, Go start, console",
	"vmm setup":         "vmm: RAM, kernel load, vCPUs",
	"vCPU start":        "to first KVM_RUN",
	"guest entry":       "to the guest's first exit",
	"kernel":            "kernel to init",
	"userland":          "init to ready",
	"namespaces+cgroup": "clone, mounts, pivot_root",
	"boot":              "whole boot (no phase data)",
	"restore":           "vmm: snapshot restored, to first KVM_RUN",
	"job start":         "restored guest takes the job, job prints",
}

// WriteSVG draws one horizontal bar per system, its median segments
// stacked, on a linear axis, with the median time to ready at its end.
func (r *Report) WriteSVG(w io.Writer) error {
	// The distro's boot is another guest (768 MiB, 2 vCPUs, systemd)
	// and ten times as long: on this chart's scale it would flatten
	// every other bar. The table has it.
	sys := slices.DeleteFunc(slices.Clone(r.Systems), func(s SystemReport) bool { return strings.HasSuffix(s.Name, "-distro") })
	const (
		left, right = 130.0, 110.0
		plotW       = 640.0
		barH, gap   = 26.0, 14.0
		top         = 56.0
	)
	maxV := 0.0
	for _, s := range sys {
		maxV = math.Max(maxV, s.Ready.Median)
	}
	if maxV <= 0 {
		maxV = 1
	}
	tick := niceTick(maxV / 5)
	axisMax := math.Ceil(maxV/tick) * tick
	scale := plotW / axisMax
	var used []string
	for _, s := range sys {
		for _, seg := range s.Segments {
			if !slices.Contains(used, seg.Name) {
				used = append(used, seg.Name)
			}
		}
	}
	plotH := float64(len(sys))*(barH+gap) + gap
	legendY := top + plotH + 40
	height := legendY + float64(len(used))*18 + 20
	width := left + plotW + right

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := fmt.Sprintf("Boot to ready: median of %d rounds, %d MiB / %d vCPU", r.Rounds, r.Guest.MiB, r.Guest.CPUs)
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, xmlEscape(title))
	sub := "measured directly on KVM"
	if r.Emulated {
		sub = "nested under QEMU TCG: absolute times are emulated, only ratios count"
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="40" fill="#555">%s</text>`+"\n", left, xmlEscape(sub))
	for v := 0.0; v <= axisMax+tick/2; v += tick {
		x := left + v*scale
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, top, x, top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`+"\n", x, top+plotH+16, xmlEscape(fmtMS(v)))
	}
	for i, s := range sys {
		y := top + gap + float64(i)*(barH+gap)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+barH/2+4, xmlEscape(s.Name))
		x := left
		for _, seg := range s.Segments {
			wd := seg.Median * scale
			fmt.Fprintf(&b, `<rect x="%.2f" y="%.1f" width="%.2f" height="%.0f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
				x, y, math.Max(wd, 0), barH, colorOf(seg.Name), xmlEscape(s.Name), xmlEscape(seg.Name), xmlEscape(fmtMS(seg.Median)))
			x += wd
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", math.Max(x, left)+6, y+barH/2+4, xmlEscape(fmtMS(s.Ready.Median)))
	}
	for i, n := range used {
		y := legendY + float64(i)*18
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/>`+"\n", left, y-10, colorOf(n))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s: %s</text>`+"\n", left+18, y, xmlEscape(n), xmlEscape(segmentText[n]))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func colorOf(seg string) string {
	if c, ok := segmentColors[seg]; ok {
		return c
	}
	return "#7f7f7f"
}

// niceTick rounds a tick interval up to 1, 2 or 5 times a power of ten.
func niceTick(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
