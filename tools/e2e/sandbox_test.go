package e2e

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/vmm-dev/vmm/tools/nested"
)

// A running vmm is sandboxed (package sandbox): the kernel reports the
// seccomp filter mode and the no_new_privs bit for it, and the guest
// still runs commands under the filter. With -sandbox=off, neither.
func TestSandboxInProcStatus(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	for _, tt := range []struct {
		flags           []string
		seccomp, noNewP string
	}{
		{nil, "2", "1"},
		{[]string{"-sandbox=off"}, "0", "0"},
	} {
		t.Run(fmt.Sprintf("%q", tt.flags), func(t *testing.T) {
			nested.Retry(t, l1Config(t), func(l *nested.L1) error {
				j, err := l.Run(t.Context(), vmmArgs(append([]string{"-append", "quiet"}, tt.flags...)...), nested.StdinTTY)
				if err != nil {
					return err
				}
				if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
					return err
				}
				out, code, err := l.Exec(context.Background(), "/bin/l1tool", "procstatus", "vmm")
				if err != nil || code != 0 {
					return fmt.Errorf("procstatus vmm in L1: status %d, %v: %s", code, err, out)
				}
				for _, want := range []string{`Seccomp:\s+` + tt.seccomp + `\n`, `NoNewPrivs:\s+` + tt.noNewP + `\n`} {
					if !regexp.MustCompile(want).MatchString(out) {
						return fmt.Errorf("vmm's /proc/PID/status lacks %s:\n%s", want, out)
					}
				}
				if _, err := shell(j, "echo sandboxed-$((6*7))", regexp.MustCompile(`sandboxed-42`)); err != nil {
					return err
				}
				if err := j.Send("poweroff\n"); err != nil {
					return err
				}
				return waitExit(j, 0)
			})
		})
	}
}
