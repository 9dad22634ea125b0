package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Figure is one number the benchmark measures for each system.
type Figure struct {
	Key  string // stable name for JSON
	Name string // table label
	Unit string
	// Time says the figure is a duration: lower is better, and a
	// vmm/QEMU ratio below 1 means vmm is faster.
	Time bool
	// FS marks the shared-directory workload's figures, which a run
	// may leave out (Params.FSFiles 0): the report then omits them.
	FS bool
	// Cost is the Workload whose cost per unit the table shows next
	// to the figure.
	Cost string
}

// Figures in table order. Throughputs are in MiB/s (2^20 bytes per
// second), as vmm-iotool reports them.
var Figures = []Figure{
	{Key: "blk-seq-read", Name: "virtio-blk sequential read", Unit: "MiB/s", Cost: "blk-seq-read"},
	{Key: "blk-seq-write", Name: "virtio-blk sequential write", Unit: "MiB/s", Cost: "blk-seq-write"},
	{Key: "blk-rand-read", Name: "virtio-blk 4 KiB random read", Unit: "IOPS", Cost: "blk-rand-read"},
	{Key: "tcp-guest-to-host", Name: "virtio-net TCP guest → host, TAP", Unit: "MiB/s", Cost: "tcp-guest-to-host"},
	{Key: "tcp-host-to-guest", Name: "virtio-net TCP host → guest, TAP", Unit: "MiB/s", Cost: "tcp-host-to-guest"},
	{Key: "tcp-user-guest-to-host", Name: "virtio-net TCP guest → host, user-mode network (vmm usernet, QEMU slirp)", Unit: "MiB/s", Cost: "tcp-user-guest-to-host"},
	{Key: "tcp-user-host-to-guest", Name: "virtio-net TCP host → guest, user-mode network's port forward", Unit: "MiB/s", Cost: "tcp-user-host-to-guest"},
	{Key: "fs-create", Name: "shared dir: create small files", Unit: "s", Time: true, FS: true, Cost: "fs-files"},
	{Key: "fs-stat", Name: "shared dir: stat them", Unit: "s", Time: true, FS: true, Cost: "fs-files"},
	{Key: "fs-read", Name: "shared dir: read them back", Unit: "s", Time: true, FS: true, Cost: "fs-files"},
	{Key: "fs-seq-read", Name: "shared dir: sequential read", Unit: "s", Time: true, FS: true, Cost: "fs-seq-read"},
	{Key: "fs-seq-reread", Name: "shared dir: sequential read again (guest RAM used before)", Unit: "s", Time: true, FS: true, Cost: "fs-seq-reread"},
}

// Systems compared, in table column order; the ratio is the first over
// the second.
const (
	SysVMM  = "vmm"
	SysQEMU = "QEMU"
)

// Report is a finished benchmark run.
type Report struct {
	Date   time.Time
	Nested bool // ran inside an L1 under TCG with emulated AMD-V
	Rounds int
	Params Params
	Env    string // what ran where, one line
	// QEMUShare is how QEMU shared the directory (QEMUShare); vmm's is
	// its virtio-fs. Empty: no share.
	QEMUShare string
	Duration  time.Duration // the whole measurement, L1 boot included
	// Samples[system][figure key] holds one value per round, in round
	// order.
	Samples map[string]map[string][]float64
	// Costs[system][workload key] holds one cost per round, aligned
	// with Samples (nil for a phase whose VM could not be sampled).
	Costs map[string]map[string][]*Cost
	// Failures are the attempts that failed and were retried; Abandoned
	// the rounds (1-based) left out because a system failed every
	// attempt.
	Failures  []Failure
	Abandoned []int
}

// Add records one round's value of a figure for a system.
func (r *Report) Add(system, figure string, v float64) {
	if r.Samples == nil {
		r.Samples = map[string]map[string][]float64{}
	}
	if r.Samples[system] == nil {
		r.Samples[system] = map[string][]float64{}
	}
	r.Samples[system][figure] = append(r.Samples[system][figure], v)
}

// Median of xs; NaN for none. The benchmark reports medians because a
// nested run has outliers (a TCG hiccup, a host neighbour) that would drag
// a mean.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Ratios are vmm's value over QEMU's for a figure, one per round: the two
// runs of a round are back to back, so a ratio within a round is spared
// most of the drift of a shared, nested machine between rounds.
func (r *Report) Ratios(figure string) []float64 {
	v, q := r.Samples[SysVMM][figure], r.Samples[SysQEMU][figure]
	var out []float64
	for i := 0; i < len(v) && i < len(q); i++ {
		if q[i] != 0 {
			out = append(out, v[i]/q[i])
		}
	}
	return out
}

// Ratio is the median of Ratios; NaN when a system was not measured.
func (r *Report) Ratio(figure string) float64 {
	return Median(r.Ratios(figure))
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// formatRatio is the median ratio and, over several rounds, their range.
func formatRatio(rs []float64) string {
	if len(rs) == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%.2f", Median(rs))
	if len(rs) > 1 {
		s += fmt.Sprintf(" (%.2f-%.2f)", slices.Min(rs), slices.Max(rs))
	}
	return s
}

// WriteMarkdown prints the header lines, the table and each round's raw
// values (the spread says how far to trust a ratio).
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	share := ""
	if r.QEMUShare != "" {
		share = "; shared directory: vmm's virtio-fs against " + r.QEMUShare
	}
	fmt.Fprintf(&b, "vmm vs QEMU (-accel kvm, userspace virtio-blk-pci and virtio-net-pci, vhost=off; user-mode networking: vmm's usernet against QEMU's slirp%s), same guest kernel and initramfs; %d interleaved rounds, medians; %s\n",
		share, r.Rounds, r.Date.Format("2006-01-02 15:04 MST"))
	if len(r.Params.VMMFlags) > 0 {
		fmt.Fprintf(&b, "vmm ran with %s added to its command line.\n", strings.Join(r.Params.VMMFlags, " "))
	}
	if len(r.Abandoned) > 0 {
		fmt.Fprintf(&b, "Only %d of the %d rounds completed (see the failed attempts below).\n", r.Rounds-len(r.Abandoned), r.Rounds)
	}
	if r.Nested {
		b.WriteString("Ran nested: both VMMs inside one L1 guest under QEMU TCG with emulated AMD-V. Absolute numbers are not meaningful, only the vmm/QEMU ratios.\n")
	} else {
		b.WriteString("Ran directly on this host's /dev/kvm.\n")
	}
	if r.Env != "" {
		fmt.Fprintf(&b, "%s\n", r.Env)
	}
	fmt.Fprintf(&b, "Sizes: %s\n\n", r.Params.describe())
	b.WriteString("vmm and QEMU columns: medians over the rounds. vmm/QEMU: median of the per-round ratios (range in parentheses).\n")
	b.WriteString("Rates (MiB/s, IOPS): higher is better, a ratio above 1 favours vmm. Times (s): lower is better, a ratio below 1 favours vmm.\n\n")
	b.WriteString("exits/op and CPU/op vmm/QEMU: the same ratios of the cost per MiB, request or file of the figure's workload (see the cost table below; for the three file figures, of the whole file workload).\n\n")
	b.WriteString("| figure | vmm | QEMU | vmm/QEMU | exits/op vmm/QEMU | CPU/op vmm/QEMU |\n|---|---:|---:|---:|---:|---:|\n")
	for _, f := range Figures {
		if r.omitted(f) {
			continue
		}
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %s | %s |\n", f.Name, f.Unit,
			formatValue(Median(r.Samples[SysVMM][f.Key])), formatValue(Median(r.Samples[SysQEMU][f.Key])), formatRatio(r.Ratios(f.Key)),
			formatRatio(r.CostRatios(f.Cost, metricByKey(metricExits))), formatRatio(r.CostRatios(f.Cost, metricByKey(metricCPU))))
	}
	r.writeCostTable(&b)
	r.writeFrameTable(&b)
	b.WriteString("\nPer round (vmm / QEMU):\n")
	for _, f := range Figures {
		if r.omitted(f) {
			continue
		}
		fmt.Fprintf(&b, "  %-22s vmm %s / QEMU %s\n", f.Key, formatList(r.Samples[SysVMM][f.Key]), formatList(r.Samples[SysQEMU][f.Key]))
	}
	r.writeFailures(&b)
	if r.Duration > 0 {
		fmt.Fprintf(&b, "\nTotal time %s.\n", r.Duration.Round(time.Second))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// omitted says f is a shared-directory figure this run left out.
func (r *Report) omitted(f Figure) bool {
	return f.FS && r.Samples[SysVMM][f.Key] == nil && r.Samples[SysQEMU][f.Key] == nil
}

func formatList(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = formatValue(x)
	}
	return strings.Join(s, " ")
}

// jsonReport is the -json file: everything in the table plus the raw
// samples, for tracking ratios across commits.
type jsonReport struct {
	Date      time.Time    `json:"date"`
	Nested    bool         `json:"nested"`
	Rounds    int          `json:"rounds"`
	Params    Params       `json:"params"`
	Env       string       `json:"env,omitempty"`
	QEMUShare string       `json:"qemu_share,omitempty"`
	DurationS float64      `json:"duration_s"`
	Figures   []jsonFigure `json:"figures"`
	Costs     []jsonCost   `json:"costs"`
	Failures  []Failure    `json:"failures"`
	Abandoned []int        `json:"abandoned_rounds"`
}

type jsonFigure struct {
	Key   string     `json:"key"`
	Name  string     `json:"name"`
	Unit  string     `json:"unit"`
	Cost  string     `json:"cost"` // the key of its workload in costs
	VMM   jsonSystem `json:"vmm"`
	QEMU  jsonSystem `json:"qemu"`
	Ratio *float64   `json:"ratio"` // median of Ratios; null when not measured
	// Ratios are vmm/QEMU per round.
	Ratios []float64 `json:"ratios"`
}

type jsonSystem struct {
	Median  *float64  `json:"median"`
	Samples []float64 `json:"samples"`
}

func nonNil(xs []float64) []float64 {
	if xs == nil {
		return []float64{}
	}
	return xs
}

func optFloat(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// MarshalJSON gives the -json layout.
func (r *Report) MarshalJSON() ([]byte, error) {
	j := jsonReport{Date: r.Date, Nested: r.Nested, Rounds: r.Rounds, Params: r.Params, Env: r.Env, QEMUShare: r.QEMUShare, DurationS: r.Duration.Seconds(),
		Costs: r.jsonCosts(), Failures: r.Failures, Abandoned: r.Abandoned}
	if j.Failures == nil {
		j.Failures = []Failure{}
	}
	if j.Abandoned == nil {
		j.Abandoned = []int{}
	}
	for _, f := range Figures {
		sys := func(name string) jsonSystem {
			s := r.Samples[name][f.Key]
			return jsonSystem{Median: optFloat(Median(s)), Samples: nonNil(s)}
		}
		j.Figures = append(j.Figures, jsonFigure{Key: f.Key, Name: f.Name, Unit: f.Unit, Cost: f.Cost,
			VMM: sys(SysVMM), QEMU: sys(SysQEMU), Ratio: optFloat(r.Ratio(f.Key)), Ratios: nonNil(r.Ratios(f.Key))})
	}
	return json.MarshalIndent(j, "", "  ")
}
