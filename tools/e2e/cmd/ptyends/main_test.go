package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The steps against sh on this machine's own pseudo-terminals: what the
// report says must be what happened, or the end-to-end test that reads
// it checks nothing.
func TestRun(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx here")
	}
	// rawThenTrap puts the terminal in raw mode and puts it back (then
	// exits 7) on SIGTERM, as vmm does.
	// The trap is set before "ready", which the signal step waits for.
	const rawThenTrap = `S=$(stty -g); trap "stty $S; exit 7" TERM; stty raw -echo; echo ready; while :; do sleep 0.1; done`
	// rawThenDie leaves the terminal raw when killed.
	const rawThenDie = `stty raw -echo; echo ready; exec sleep 60`
	for _, tc := range []struct {
		name     string
		steps    []string
		cmd      string
		failed   string // prefix of Report.Failed, "" for none
		raw      []bool
		exit     int
		restored bool
		output   string
	}{
		{"typed line reaches the command", []string{"expect:ready", "mode", `send:"hello\n"`, "expect:got hello"},
			`echo ready; read x; echo got $x`, "", []bool{false}, 0, true, "got hello"},
		{"raw mode seen and restored", []string{"expect:ready", "mode", "signal:TERM"},
			rawThenTrap, "", []bool{true}, 7, true, "ready"},
		{"mode left raw is reported", []string{"expect:ready", "mode", "signal:KILL"},
			rawThenDie, "", []bool{true}, 128 + 9, false, "ready"},
		{"expect that never matches fails", []string{"expect:never", "mode"},
			`echo other; sleep 0.2`, "expect:never", nil, 0, true, "other"},
		{"Ctrl-C reaches a cooked terminal's command", []string{"expect:ready", `send:"\x03"`},
			`echo ready; exec sleep 60`, "", nil, 128 + 2, true, "ready"},
		{"bad send literal fails", []string{"send:hello"}, `sleep 0.2`, "send:hello", nil, 0, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(tc.steps, []string{"sh", "-c", tc.cmd}, 10*time.Second, 10*time.Second)
			if r.Error != "" {
				t.Fatalf("ptyends failed: %s", r.Error)
			}
			if tc.failed == "" && r.Failed != "" || !strings.HasPrefix(r.Failed, tc.failed) {
				t.Errorf("Failed = %q, want prefix %q", r.Failed, tc.failed)
			}
			if len(r.Raw) != len(tc.raw) || (len(r.Raw) > 0 && r.Raw[0] != tc.raw[0]) {
				t.Errorf("Raw = %v, want %v", r.Raw, tc.raw)
			}
			if r.Exit != tc.exit {
				t.Errorf("Exit = %d, want %d", r.Exit, tc.exit)
			}
			if r.Restored != tc.restored {
				t.Errorf("Restored = %v, want %v (c_lflag %#x before, %#x after)", r.Restored, tc.restored, r.Before, r.After)
			}
			if !strings.Contains(r.Output, tc.output) {
				t.Errorf("Output = %q, want it to contain %q", r.Output, tc.output)
			}
		})
	}
}

// A command still running -exit-timeout after the steps is killed and
// reported as -1, not as the signal that killed it.
func TestRunKillsLateCommand(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx here")
	}
	start := time.Now()
	r := run(nil, []string{"sleep", "30"}, time.Second, 300*time.Millisecond)
	if r.Error != "" || r.Exit != -1 {
		t.Errorf("error %q, exit %d; want none and -1", r.Error, r.Exit)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v: the late command held ptyends", took)
	}
}
