// Package report is the text form of a boot timer's stamps: the lines
// `vmm -boot-timer` prints at exit and the boot benchmark reads back from
// vmm's stderr. It is apart from the device (package boottimer) because
// its readers are tools that parse another process's output, which need
// the format and not the device.
package report

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/vmm-dev/vmm/guestabi"
)

// Stamp is one phase and when it happened, relative to the VMM's start.
type Stamp struct {
	Phase guestabi.Phase
	Since time.Duration
}

// linePrefix starts every report line, so the lines can be picked out of
// a VMM's stderr among its other messages.
const linePrefix = "boot-timer: "

// Format is one report line: "boot-timer: init-start 812.345ms".
// Milliseconds with microsecond resolution read well for boots of a few
// milliseconds (a container) to tens of seconds (nested TCG) alike.
func (s Stamp) Format() string {
	return fmt.Sprintf("%s%s %.3fms", linePrefix, s.Phase, float64(s.Since)/float64(time.Millisecond))
}

// ParseLine reads one report line. ok is false for lines that are not
// boot-timer lines at all; err is set for boot-timer lines that are
// malformed.
func ParseLine(line string) (s Stamp, ok bool, err error) {
	rest, found := strings.CutPrefix(strings.TrimRight(line, "\r\n"), linePrefix)
	if !found {
		return Stamp{}, false, nil
	}
	name, val, found := strings.Cut(rest, " ")
	if !found {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: want PHASE DURATION", line)
	}
	p, err := guestabi.ParsePhase(name)
	if err != nil {
		return Stamp{}, true, err
	}
	ms, found := strings.CutSuffix(val, "ms")
	if !found {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: duration not in ms", line)
	}
	f, err := strconv.ParseFloat(ms, 64)
	if err != nil || !(f >= 0 && f <= float64(1<<62)/float64(time.Millisecond)) {
		return Stamp{}, true, fmt.Errorf("boot-timer line %q: bad duration", line)
	}
	return Stamp{Phase: p, Since: time.Duration(f * float64(time.Millisecond))}, true, nil
}

// ParseReport collects the stamps among a VMM's output lines, ignoring
// the other lines.
func ParseReport(r io.Reader) ([]Stamp, error) {
	var out []Stamp
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		s, ok, err := ParseLine(sc.Text())
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}
