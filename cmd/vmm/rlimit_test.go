package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vmm-dev/vmm/machine"
)

// rlimitChildEnv makes the test binary the child of TestRaiseFileLimit,
// whose limits it may change.
const rlimitChildEnv = "VMM_RLIMIT_CHILD"

// With shares, a vmm that may (root) raises its descriptor limit to
// fs.nr_open; without shares, or unprivileged, it leaves it.
func TestRaiseFileLimit(t *testing.T) {
	if what := os.Getenv(rlimitChildEnv); what != "" {
		var cfg machine.Config
		if what == "shares" {
			cfg.Shares = []machine.Share{{Dir: "/", Tag: "root"}}
		}
		// Start from the kernel's default, as under a bare init.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 1024, Max: 4096}); err != nil {
			t.Fatal(err)
		}
		raiseFileLimit(cfg)
		var r syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
		os.Stdout.WriteString("limit " + strconv.FormatUint(r.Cur, 10) + " " + strconv.FormatUint(r.Max, 10) + "\n")
		return
	}
	b, err := os.ReadFile(nrOpenPath)
	if err != nil {
		t.Skip(err)
	}
	nrOpen := strings.TrimSpace(string(b))
	for _, tc := range []struct{ what, want string }{
		{"shares", "limit " + nrOpen + " " + nrOpen},
		{"none", "limit 1024 4096"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRaiseFileLimit$")
		cmd.Env = append(os.Environ(), rlimitChildEnv+"="+tc.what)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.what, err, out)
		}
		want := tc.want
		if !hasCap(t, capSysResource) && tc.what == "shares" {
			want = "limit 1024 4096" // not allowed to raise it
		}
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("%s: %q, want %q", tc.what, out, want)
		}
	}
}

// capSysResource is CAP_SYS_RESOURCE (linux/capability.h), what raising
// a hard limit takes.
const capSysResource = 24

// hasCap reports whether this process has capability c in effect.
func hasCap(t *testing.T, c uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}
