package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/vmm-dev/vmm/tools/bench"
	"github.com/vmm-dev/vmm/tools/kvmstats"
)

// BootCost is what one boot cost the host up to the ready marker, read
// when the harness saw the marker: KVM's per-VM counters (all of the VM's
// life so far, since they start at zero), the VMM process's CPU time, and
// the VMM's resident memory outside guest RAM. Unlike the boot's time,
// these do not drift with the host's speed (tools/kvmstats).
type BootCost struct {
	Counters kvmstats.Counters `json:"counters"`
	CPU      kvmstats.CPU      `json:"cpu_ticks"` // kvmstats.TickMillis each
	// OverheadKiB is the process's Rss outside its guest-RAM mappings
	// (overheadKiB); AnonKiB the part of it that is anonymous memory, that
	// is the part not shared with other processes through the page cache
	// (what is left is mostly the binary's code and read-only data, which
	// every vmm process maps from the same file).
	OverheadKiB int64 `json:"overhead_kib"`
	AnonKiB     int64 `json:"anon_kib"`
}

// sampleCost reads pid's boot cost; ramMiB tells its guest RAM from the
// rest of its memory. An error leaves the sample without a cost (debugfs
// needs root; the process may be gone).
func sampleCost(pid, ramMiB int) (*BootCost, error) {
	p := kvmstats.DefaultPaths()
	if err := p.MountDebugfs(); err != nil {
		return nil, err
	}
	s, err := p.Take(pid)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kib, anon, err := overheadKiB(f, int64(ramMiB)<<20)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return &BootCost{Counters: s.Counters, CPU: s.CPU, OverheadKiB: kib, AnonKiB: anon}, nil
}

// overheadKiB sums the Rss of a /proc/PID/smaps (proc(5)) over every
// mapping but the guest's RAM: what a VMM costs in memory besides the
// guest's own. Guest RAM is a readable and writable mapping at least as
// large as the guest (vmm maps a guest of under 3 GiB as one region;
// QEMU's pc.ram block is one mapping of the RAM's size or a little more).
// Go's runtime also reserves regions that large, but inaccessible
// (PROT_NONE) and not resident, so they neither count as RAM nor add
// to the sum. anon sums their Anonymous lines the same way.
func overheadKiB(r io.Reader, ramBytes int64) (total, anon int64, err error) {
	sc := bufio.NewScanner(r)
	inRAM, mappings, ram := false, 0, 0
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil || end < start {
				return 0, 0, fmt.Errorf("smaps: malformed mapping line %q", line)
			}
			mappings++
			inRAM = int64(end-start) >= ramBytes && len(f) > 1 && strings.HasPrefix(f[1], "rw")
			if inRAM {
				ram++
			}
			continue
		}
		if (f[0] != "Rss:" && f[0] != "Anonymous:") || inRAM {
			continue
		}
		if len(f) != 3 || f[2] != "kB" {
			return 0, 0, fmt.Errorf("smaps: malformed line %q", line)
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || v < 0 {
			return 0, 0, fmt.Errorf("smaps: malformed line %q", line)
		}
		if f[0] == "Rss:" {
			total += v
		} else {
			anon += v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if mappings == 0 {
		return 0, 0, fmt.Errorf("smaps: no mappings")
	}
	if ram == 0 {
		return 0, 0, fmt.Errorf("smaps: no mapping of the guest's %d MiB", ramBytes>>20)
	}
	return total, anon, nil
}

// costMetric is one column of the boot cost table.
type costMetric struct {
	Key, Name string
	value     func(c *BootCost) (float64, bool)
}

// costMetrics are make bench's cost columns (tools/bench.Metrics: exits
// by reason, interrupts, emulated instructions, guest-RAM faults, CPU,
// context switches), per boot, then the VMM's memory outside guest RAM.
func costMetrics() []costMetric {
	var out []costMetric
	for _, m := range bench.Metrics {
		out = append(out, costMetric{Key: m.Key, Name: m.Name, value: func(c *BootCost) (float64, bool) {
			return m.Value(&bench.Cost{Units: 1, Counters: c.Counters, CPU: c.CPU})
		}})
	}
	return append(out, costMetric{Key: "overhead_mib", Name: "RSS outside guest RAM (MiB)", value: func(c *BootCost) (float64, bool) {
		return float64(c.OverheadKiB) / 1024, true
	}}, costMetric{Key: "anon_mib", Name: "of it anonymous (MiB)", value: func(c *BootCost) (float64, bool) {
		// Samples from before anon_kib was recorded have none.
		return float64(c.AnonKiB) / 1024, c.AnonKiB > 0
	}})
}

// Figure summarizes one cost metric of a system over its rounds.
type Figure struct {
	Key    string  `json:"key"`
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// costFigures summarizes the costs of ss's samples, one Figure per
// metric that any sample has.
func costFigures(ss []Sample) []Figure {
	var out []Figure
	for _, m := range costMetrics() {
		var v []float64
		for _, s := range ss {
			if s.Cost == nil {
				continue
			}
			if x, ok := m.value(s.Cost); ok {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			continue
		}
		st := statOf(v)
		out = append(out, Figure{Key: m.Key, N: st.N, Min: st.Min, Median: st.Median, Max: st.Max})
	}
	return out
}

// costRatioKeys are the metrics whose ratios the report gives next to the
// time ratios: all exits, the VMM's CPU time, its memory.
var costRatioKeys = []string{"exits", "cpu_ms", "overhead_mib", "anon_mib"}

// figure is s's median of the metric key, NaN when it has none.
func (s SystemReport) figure(key string) float64 {
	for _, f := range s.Cost {
		if f.Key == key {
			return f.Median
		}
	}
	return math.NaN()
}

// writeCostTable prints the median cost of a boot per system that has
// one.
func (r *Report) writeCostTable(w io.Writer) {
	ms := costMetrics()
	have := false
	for _, s := range r.Systems {
		have = have || len(s.Cost) > 0
	}
	for _, s := range r.Samples {
		if s.CostError != "" {
			fmt.Fprintf(w, "\nCosts not read for some boots, e.g. %s round %d: %s\n", s.System, s.Round+1, s.CostError)
			break
		}
	}
	if !have {
		return
	}
	fmt.Fprintln(w, "\n| cost of one boot to ready (median) | "+strings.Join(func() []string {
		var n []string
		for _, m := range ms {
			n = append(n, m.Name)
		}
		return n
	}(), " | ")+" |")
	fmt.Fprintln(w, "|---|"+strings.Repeat("---:|", len(ms)))
	for _, s := range r.Systems {
		if len(s.Cost) == 0 {
			continue
		}
		row := []string{s.Name}
		for _, m := range ms {
			row = append(row, bench.FormatCost(s.figure(m.Key)))
		}
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
}
