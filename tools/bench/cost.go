package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/vmm-dev/vmm/tools/kvmstats"
)

// Workload is one measured phase of a guest whose cost the report gives
// per unit of work: a MiB moved, a request, a file.
type Workload struct {
	Key  string // the figure key, or fs-files for the three file figures
	Name string
	Unit string
	FS   bool // the shared-directory workload's, which a run may leave out
}

// Workloads in table order. fs-files is one guest command that creates,
// stats and reads back every file, so its cost is per file over the three
// phases together.
var Workloads = []Workload{
	{Key: "blk-seq-read", Name: "virtio-blk sequential read", Unit: "MiB"},
	{Key: "blk-seq-write", Name: "virtio-blk sequential write", Unit: "MiB"},
	{Key: "blk-rand-read", Name: "virtio-blk 4 KiB random read", Unit: "request"},
	{Key: "tcp-guest-to-host", Name: "virtio-net TCP guest → host, TAP", Unit: "MiB"},
	{Key: "tcp-host-to-guest", Name: "virtio-net TCP host → guest, TAP", Unit: "MiB"},
	{Key: "tcp-user-guest-to-host", Name: "virtio-net TCP guest → host, user-mode network", Unit: "MiB"},
	{Key: "tcp-user-host-to-guest", Name: "virtio-net TCP host → guest, user-mode port forward", Unit: "MiB"},
	{Key: "fs-files", Name: "shared dir: create, stat and read back small files", Unit: "file", FS: true},
	{Key: "fs-seq-read", Name: "shared dir: sequential read", Unit: "MiB", FS: true},
	{Key: "fs-seq-reread", Name: "shared dir: sequential read again (guest RAM used before)", Unit: "MiB", FS: true},
}

// Cost is what one workload phase cost one VM in one round: the
// differences of KVM's per-VM counters and of the VMM process's CPU time
// between a sample just before the phase's command ran in the guest and
// one just after it finished, and the units of work the phase did.
type Cost struct {
	Units    float64           `json:"units"`
	Counters kvmstats.Counters `json:"counters"`
	CPU      kvmstats.CPU      `json:"cpu_ticks"` // kvmstats.TickMillis each
	// Threads are the threads' switches grouped by process and by what
	// each thread waited for at the end (kvmstats.Delta.Threads):
	// whose the switches are. They add up to CPU.Switches when both
	// samples listed their threads.
	Threads []kvmstats.ThreadSwitches `json:"threads,omitempty"`
	// Frames, for a network figure, are the packets the guest's card
	// counted over the phase; nil elsewhere, or when the guest could
	// not be asked.
	Frames *Frames `json:"guest_frames,omitempty"`
}

// Frames are the differences of a guest network card's packet counters
// (/sys/class/net/IF/statistics/rx_packets and tx_packets) around a
// phase. Linux's virtio-net counts one packet per frame the device moved,
// a TSO or GSO frame of up to 64 KiB as one, so frames per MiB say how
// large the frames a VMM's network handed the guest (and took from it)
// were: each frame is a round of descriptors, a notification or an
// interrupt, and, for vmm's user-mode network, a message between vmm
// and vmm-net.
type Frames struct {
	RX uint64 `json:"rx"`
	TX uint64 `json:"tx"`
}

// threadLine says whose c's context switches were, per unit of work:
// the groups with at least half a switch per unit.
func (c *Cost) threadLine() string {
	if c.Units <= 0 {
		return ""
	}
	var parts []string
	for _, g := range c.Threads {
		per := float64(g.Switches) / c.Units
		if per < 0.5 {
			continue
		}
		wait := g.Wait
		if wait == "" {
			wait = "unknown"
		}
		threads := "threads"
		if g.Threads == 1 {
			threads = "thread"
		}
		parts = append(parts, fmt.Sprintf("%s %s (%d %s) %s", g.Proc, wait, g.Threads, threads, FormatCost(per)))
	}
	if len(parts) == 0 {
		return ""
	}
	return "context switches per unit of work by thread, as it waited at the end: " + strings.Join(parts, ", ")
}

// Metric is one per-unit column of the cost table.
type Metric struct {
	Key  string // a KVM counter's name, or cpu_ms, guest_ms, switches
	Name string
	// value is the phase's total, false if the sample lacks it.
	value func(c *Cost) (float64, bool)
}

func counter(key, name string) Metric {
	return Metric{Key: key, Name: name, value: func(c *Cost) (float64, bool) {
		v, ok := c.Counters[key]
		return float64(v), ok
	}}
}

// Metrics are the cost table's columns: every exit, the exits KVM counts
// by reason (port I/O and MMIO that reached the VMM's userspace, HLT,
// waiting for an interrupt window, a host interrupt), the interrupts
// injected, the instructions KVM emulated (each MMIO access, whether
// KVM or the VMM then handles it, and xAPIC accesses), the guest-RAM
// faults KVM's MMU handled (first touches of RAM the VMM has not backed
// yet, 4 KiB at a time unless it is backed by huge pages), the VMM
// process's CPU time (user plus system, all its threads) with the part
// of it the guest ran, and its threads' context switches (a wake-up per
// request from one thread to another shows there, however fast or slow
// the machine).
var Metrics = []Metric{
	counter("exits", "exits"),
	counter("io_exits", "I/O"),
	counter("mmio_exits", "MMIO"),
	counter("halt_exits", "HLT"),
	counter("irq_window_exits", "IRQ window"),
	counter("irq_exits", "host IRQ"),
	counter("irq_injections", "IRQs injected"),
	counter("insn_emulation", "emulated insns"),
	counter("pf_taken", "page faults"),
	{Key: "cpu_ms", Name: "CPU ms", value: func(c *Cost) (float64, bool) {
		return float64(c.CPU.Total() * kvmstats.TickMillis), true
	}},
	{Key: "guest_ms", Name: "of it guest ms", value: func(c *Cost) (float64, bool) {
		return float64(c.CPU.Guest * kvmstats.TickMillis), true
	}},
	// A sample without switches (a benchtool before they were
	// counted) has none to show; a VMM's phase always switches.
	{Key: "switches", Name: "ctx switches", value: func(c *Cost) (float64, bool) {
		return float64(c.CPU.Switches), c.CPU.Switches > 0
	}},
}

// FrameMetrics are the columns of the frames table: the guest's
// received and sent frames per unit of work, for the network figures.
var FrameMetrics = []Metric{
	{Key: "rx_frames", Name: "frames to the guest", value: func(c *Cost) (float64, bool) {
		if c.Frames == nil {
			return 0, false
		}
		return float64(c.Frames.RX), true
	}},
	{Key: "tx_frames", Name: "frames from the guest", value: func(c *Cost) (float64, bool) {
		if c.Frames == nil {
			return 0, false
		}
		return float64(c.Frames.TX), true
	}},
}

// Value is c's total of the metric, false when c lacks it. make
// bench-boot (tools/cmd/bootbench) uses the same columns for whole boots.
func (m Metric) Value(c *Cost) (float64, bool) { return m.value(c) }

// The metrics the main table shows next to each figure's time ratio.
const (
	metricExits = "exits"
	metricCPU   = "cpu_ms"
)

func metricByKey(key string) Metric {
	i := slices.IndexFunc(Metrics, func(m Metric) bool { return m.Key == key })
	return Metrics[i]
}

// perUnit is c's metric divided by its units; NaN when c is missing or
// lacks the metric.
func perUnit(c *Cost, m Metric) float64 {
	if c == nil || c.Units <= 0 {
		return math.NaN()
	}
	v, ok := m.value(c)
	if !ok {
		return math.NaN()
	}
	return v / c.Units
}

// AddCost records one round's cost of a workload for a system; nil when
// the VM could not be sampled, so that rounds stay aligned.
func (r *Report) AddCost(system, workload string, c *Cost) {
	if r.Costs == nil {
		r.Costs = map[string]map[string][]*Cost{}
	}
	if r.Costs[system] == nil {
		r.Costs[system] = map[string][]*Cost{}
	}
	r.Costs[system][workload] = append(r.Costs[system][workload], c)
}

// PerUnit is a system's metric per unit of a workload in each round it
// was sampled.
func (r *Report) PerUnit(system, workload string, m Metric) []float64 {
	var out []float64
	for _, c := range r.Costs[system][workload] {
		if v := perUnit(c, m); !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// CostRatios are vmm's per-unit metric over QEMU's, one per round in
// which both were sampled and QEMU's is not zero.
func (r *Report) CostRatios(workload string, m Metric) []float64 {
	v, q := r.Costs[SysVMM][workload], r.Costs[SysQEMU][workload]
	var out []float64
	for i := 0; i < len(v) && i < len(q); i++ {
		a, b := perUnit(v[i], m), perUnit(q[i], m)
		if !math.IsNaN(a) && !math.IsNaN(b) && b != 0 {
			out = append(out, a/b)
		}
	}
	return out
}

// costOmitted says no round sampled w for either system.
func (r *Report) costOmitted(w Workload) bool {
	sampled := func(c *Cost) bool { return c != nil }
	return !slices.ContainsFunc(r.Costs[SysVMM][w.Key], sampled) && !slices.ContainsFunc(r.Costs[SysQEMU][w.Key], sampled)
}

// FormatCost prints a per-unit cost with three significant digits or so:
// per-MiB figures run from hundredths (HLT exits of a fast stream) to
// thousands (exits of a 4 KiB request loop).
func FormatCost(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// writeCostTable prints the cost table: per workload, a row per system
// with the medians of its per-unit metrics, and a row of the medians of
// the per-round vmm/QEMU ratios.
func (r *Report) writeCostTable(b *strings.Builder) {
	any := slices.ContainsFunc(Workloads, func(w Workload) bool { return !r.costOmitted(w) })
	if !any {
		return
	}
	b.WriteString("\nCost per unit of work: KVM's per-VM counters (debugfs kvm/<pid>-<fd>/) and the VMM's CPU time (utime+stime from /proc/<pid>/stat, guest time included, with the processes it started: vmm's vmm-net, QEMU's virtiofsd when it shares the directory) and its threads' context switches (/proc/<pid>/task/<tid>/status, the same processes), ")
	b.WriteString("each differenced around the phase's command in the running guest, divided by the MiB, requests or files it moved. Medians over the rounds; vmm/QEMU: median of the per-round ratios, below 1 favours vmm.\n\n")
	r.writeMetricRows(b, Metrics, func(w Workload) bool { return !r.costOmitted(w) })
}

// framed says some round counted w's frames, for either system.
func (r *Report) framed(w Workload) bool {
	has := func(c *Cost) bool { return c != nil && c.Frames != nil }
	return slices.ContainsFunc(r.Costs[SysVMM][w.Key], has) || slices.ContainsFunc(r.Costs[SysQEMU][w.Key], has)
}

// writeFrameTable prints the network figures' frames per unit of work
// (see Frames), in the cost table's layout.
func (r *Report) writeFrameTable(b *strings.Builder) {
	if !slices.ContainsFunc(Workloads, r.framed) {
		return
	}
	b.WriteString("\nFrames the guest's card counted (rx_packets and tx_packets in /sys/class/net, read before and after the phase; a TSO or GSO frame counts once), per unit of work: fewer frames per MiB are larger frames, each one a round of descriptors and notifications. Medians over the rounds; vmm/QEMU: median of the per-round ratios.\n\n")
	r.writeMetricRows(b, FrameMetrics, r.framed)
}

// writeMetricRows prints a table of metrics per unit of work: per
// workload it includes, a row per system with the medians of its
// per-unit values and a row of the medians of the per-round vmm/QEMU
// ratios.
func (r *Report) writeMetricRows(b *strings.Builder, metrics []Metric, include func(Workload) bool) {
	b.WriteString("| workload, per unit | system |")
	for _, m := range metrics {
		fmt.Fprintf(b, " %s |", m.Name)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(metrics)) + "\n")
	for _, w := range Workloads {
		if !include(w) {
			continue
		}
		for i, sys := range []string{SysVMM, SysQEMU} {
			label := " "
			if i == 0 {
				label = fmt.Sprintf(" %s, per %s ", w.Name, w.Unit)
			}
			fmt.Fprintf(b, "|%s| %s |", label, sys)
			for _, m := range metrics {
				fmt.Fprintf(b, " %s |", FormatCost(Median(r.PerUnit(sys, w.Key, m))))
			}
			b.WriteString("\n")
		}
		b.WriteString("| | vmm/QEMU |")
		for _, m := range metrics {
			s := "n/a"
			if rs := r.CostRatios(w.Key, m); len(rs) > 0 {
				s = fmt.Sprintf("%.2f", Median(rs))
			}
			fmt.Fprintf(b, " %s |", s)
		}
		b.WriteString("\n")
	}
}

// Failure is an attempt at one system's boot in a round that failed and
// was retried (or, after the last attempt, cost the round).
type Failure struct {
	Round   int    `json:"round"`
	System  string `json:"system"`
	Attempt int    `json:"attempt"`
	Error   string `json:"error"` // its first line
}

func (r *Report) writeFailures(b *strings.Builder) {
	if len(r.Failures) == 0 && len(r.Abandoned) == 0 {
		return
	}
	fmt.Fprintf(b, "\nFailed attempts (each retried in a fresh boot, at most %d attempts per system and round):\n", maxAttempts)
	for _, f := range r.Failures {
		fmt.Fprintf(b, "  round %d, %s, attempt %d: %s\n", f.Round, f.System, f.Attempt, f.Error)
	}
	if len(r.Abandoned) > 0 {
		fmt.Fprintf(b, "Rounds left out (a system failed every attempt): %v\n", r.Abandoned)
	}
}

// jsonCost is one workload's costs in the -json file.
type jsonCost struct {
	Key     string       `json:"key"`
	Name    string       `json:"name"`
	Unit    string       `json:"unit"`
	Metrics []jsonMetric `json:"per_unit"`
	// Raw are the differences per round; null for a round whose VM
	// could not be sampled.
	Raw map[string][]*Cost `json:"raw"`
}

type jsonMetric struct {
	Key    string     `json:"key"`
	VMM    jsonSystem `json:"vmm"`
	QEMU   jsonSystem `json:"qemu"`
	Ratio  *float64   `json:"ratio"`
	Ratios []float64  `json:"ratios"`
}

func (r *Report) jsonCosts() []jsonCost {
	var out []jsonCost
	for _, w := range Workloads {
		if r.costOmitted(w) {
			continue
		}
		c := jsonCost{Key: w.Key, Name: w.Name, Unit: w.Unit, Raw: map[string][]*Cost{
			"vmm": r.Costs[SysVMM][w.Key], "qemu": r.Costs[SysQEMU][w.Key]}}
		metrics := Metrics
		if r.framed(w) {
			metrics = append(slices.Clip(metrics), FrameMetrics...)
		}
		for _, m := range metrics {
			sys := func(name string) jsonSystem {
				s := r.PerUnit(name, w.Key, m)
				return jsonSystem{Median: optFloat(Median(s)), Samples: nonNil(s)}
			}
			rs := r.CostRatios(w.Key, m)
			c.Metrics = append(c.Metrics, jsonMetric{Key: m.Key, VMM: sys(SysVMM), QEMU: sys(SysQEMU),
				Ratio: optFloat(Median(rs)), Ratios: nonNil(rs)})
		}
		out = append(out, c)
	}
	return out
}
