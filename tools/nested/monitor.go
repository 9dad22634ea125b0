package nested

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// qemuMonitorFD is the child file descriptor of QEMU's human monitor
// (HMP), ExtraFiles[2]: like the serial ports, one end of a socketpair.
const qemuMonitorFD = 5

// A frozen L1 has two possible culprits that look the same from its
// serial ports: the emulator itself stopping (QEMU's main loop stuck, so
// its monitor does not answer either; what ../shared/NOTES.md records),
// or L1's kernel stuck with its CPUs running (a lockup every CPU of L1
// ends up in, which a program in L1, vmm included, might provoke through
// KVM). The watchdog asks the monitor before it kills QEMU, twice, a
// moment apart: whether QEMU answers, whether L1 is running, and where
// each of L1's CPUs is, so a freeze's report tells the two apart.

// monitorProbes is how many times the watchdog asks; the RIPs of two
// answers show whether L1's CPUs move.
const monitorProbes = 2

// probeMonitor asks QEMU's monitor for L1's run state and CPU registers
// and returns a summary for the freeze report. wait bounds each probe.
func probeMonitor(mon net.Conn, wait time.Duration) string {
	if mon == nil {
		return "no monitor"
	}
	var parts []string
	for i := range monitorProbes {
		if i > 0 {
			time.Sleep(wait / 2)
		}
		out, answered := monitorCommand(mon, "info status\ninfo registers -a\n", wait)
		if !answered {
			parts = append(parts, fmt.Sprintf("probe %d: QEMU's monitor did not answer within %v", i+1, wait))
			break
		}
		parts = append(parts, fmt.Sprintf("probe %d: %s", i+1, summarizeMonitor(out)))
	}
	return strings.Join(parts, "; ")
}

// monitorCommand writes cmds and reads what the monitor prints until it
// has answered every command (a prompt after each) or wait runs out.
func monitorCommand(mon net.Conn, cmds string, wait time.Duration) (string, bool) {
	deadline := time.Now().Add(wait)
	mon.SetDeadline(deadline)
	defer mon.SetDeadline(time.Time{})
	// Drop what earlier probes or the banner left unread.
	var junk [4096]byte
	mon.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	for {
		if _, err := mon.Read(junk[:]); err != nil {
			break
		}
	}
	mon.SetDeadline(deadline)
	if _, err := mon.Write([]byte(cmds)); err != nil {
		return "", false
	}
	want := strings.Count(cmds, "\n")
	var buf bytes.Buffer
	chunk := make([]byte, 8192)
	for bytes.Count(buf.Bytes(), []byte(monitorPrompt)) < want {
		n, err := mon.Read(chunk)
		buf.Write(chunk[:n])
		if err != nil {
			break
		}
	}
	answered := bytes.Contains(buf.Bytes(), []byte("VM status"))
	return buf.String(), answered
}

// monitorPrompt is what HMP prints when it is ready for a command.
const monitorPrompt = "(qemu) "

var (
	monitorStatusRE = regexp.MustCompile(`VM status: [a-z-]+( \([a-z-]+\))?`)
	monitorCPURE    = regexp.MustCompile(`(?m)^CPU#(\d+)`)
	monitorRIPRE    = regexp.MustCompile(`[RE]IP=([0-9a-f]+)`) // EIP outside long mode
	monitorCPLRE    = regexp.MustCompile(`CPL=(\d)`)
	monitorHaltRE   = regexp.MustCompile(`HLT=(\d)`)
)

// summarizeMonitor reduces `info status` and `info registers -a` to one
// line: the run state and each CPU's RIP and privilege level, halted or
// not. With nested SVM a CPU in guest mode shows its guest's registers:
// L1 runs with nokaslr, so its kernel is at 0xffffffff81000000 and up,
// and an L2 kernel's KASLR most likely puts it elsewhere.
func summarizeMonitor(out string) string {
	status := monitorStatusRE.FindString(out)
	if status == "" {
		status = "no VM status"
	}
	var cpus []string
	locs := monitorCPURE.FindAllStringSubmatchIndex(out, -1)
	for i, loc := range locs {
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		regs := out[loc[0]:end]
		s := "CPU" + out[loc[2]:loc[3]]
		if m := monitorRIPRE.FindStringSubmatch(regs); m != nil {
			s += " RIP=" + m[1]
		}
		if m := monitorCPLRE.FindStringSubmatch(regs); m != nil {
			s += " CPL=" + m[1]
		}
		if m := monitorHaltRE.FindStringSubmatch(regs); m != nil && m[1] == "1" {
			s += " halted"
		}
		cpus = append(cpus, s)
	}
	return status + ", " + strings.Join(cpus, ", ")
}

// monitorWait bounds one probe: a few seconds, less with the short freeze
// timeouts of the harness's own tests.
func monitorWait(freeze time.Duration) time.Duration {
	return min(3*time.Second, max(freeze/4, 50*time.Millisecond))
}
