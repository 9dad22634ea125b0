package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/nested"
)

// snapshotDir is where the tests keep the snapshot in L1.
const snapshotDir = "/tmp/snap"

// restoreArgs is `vmm run -snapshot` of the default guest's snapshot.
func restoreArgs(flags []string, command ...string) []string {
	args := append([]string{"/vmm", "run", "-snapshot", snapshotDir}, flags...)
	return append(append(args, "--"), command...)
}

// TestSnapshot is issue 13's contract end to end: one snapshot serves
// jobs in a row and at once, each with its own status and output, its
// own random bytes and the host's clock, and -out and -share work as on a
// cold boot.
func TestSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	nested.Retry(t, ciConfig(t, nil), func(l *nested.L1) error {
		r, err := redirectExec(t.Context(), l, runTimeout, nil,
			"/vmm", "snapshot", "-kernel", "/guest/bzImage", "-initrd", "/guest/initrd.cpio", "-o", snapshotDir)
		if err != nil {
			return err
		}
		if r.Exit != 0 {
			return reportFailure(l, r, "vmm snapshot exited with status %d", r.Exit)
		}
		t.Logf("snapshot made in %.1fs", r.ElapsedMS/1000)
		run := func(flags, redirect []string, command ...string) (redirectReport, error) {
			return redirectExec(t.Context(), l, runTimeout, redirect, restoreArgs(flags, command...)...)
		}
		// In a row: each its own status and output.
		for i := 0; i < 20; i++ {
			r, err := run(nil, nil, "sh", "-c", fmt.Sprintf("echo job-$((%d*2)); exit %d", i, i))
			if err != nil {
				return err
			}
			if r.Exit != i || r.Stdout != fmt.Sprintf("job-%d\n", i*2) {
				return reportFailure(l, r, "restored job %d: status %d stdout %q", i, r.Exit, r.Stdout)
			}
			t.Logf("restored job %d in %.2fs", i, r.ElapsedMS/1000)
		}
		// At once.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := run(nil, nil, "sh", "-c", fmt.Sprintf("echo par-%d; exit %d", i, 10+i))
				if err == nil && (r.Exit != 10+i || r.Stdout != fmt.Sprintf("par-%d\n", i)) {
					err = reportFailure(l, r, "concurrent job %d: status %d stdout %q", i, r.Exit, r.Stdout)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		// Fresh randomness and the host's clock (with u-root's commands:
		// hexdump, and date's strftime without %s).
		var rnd []string
		for range 2 {
			r, err := run(nil, nil, "sh", "-c", "dd if=/dev/urandom bs=32 count=1 | hexdump; date -u '+%Y %m %d %H %M %S'")
			if err != nil {
				return err
			}
			host := time.Now().Unix()
			lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
			if r.Exit != 0 || len(lines) < 2 {
				return reportFailure(l, r, "random/date job: status %d", r.Exit)
			}
			dump := strings.Join(lines[:len(lines)-1], "\n")
			if n := hexBytes(dump); n < 32 {
				return reportFailure(l, r, "random job: %d bytes in the hexdump, want 32", n)
			}
			rnd = append(rnd, dump)
			var y, mo, d, h, mi, sec int
			if _, err := fmt.Sscanf(lines[len(lines)-1], "%d %d %d %d %d %d", &y, &mo, &d, &h, &mi, &sec); err != nil {
				return reportFailure(l, r, "guest date %q: %v", lines[len(lines)-1], err)
			}
			guest := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC).Unix()
			if guest < host-2-int64(r.ElapsedMS/1000) || guest > host+2 {
				return reportFailure(l, r, "guest clock %q, host %d", lines[len(lines)-1], host)
			}
		}
		if rnd[0] == rnd[1] {
			return fmt.Errorf("two restored jobs read the same bytes from /dev/urandom: %q", rnd[0])
		}
		// -out as on a cold boot.
		r, err = run([]string{"-out", "/tmp/results"}, []string{"-cat", "/tmp/results/n"}, "sh", "-c", "echo $((6*7)) > /out/n")
		if err != nil {
			return err
		}
		if r.Exit != 0 || r.Files["/tmp/results/n"] != "42\n" {
			return reportFailure(l, r, "-out after restore: status %d, file %q", r.Exit, r.Files["/tmp/results/n"])
		}
		// -share as on a cold boot: the job starts in /share, and what
		// it writes there is in L1's directory when vmm exits.
		r, err = run([]string{"-share", "/tmp"}, []string{"-cat", "/tmp/restored-result"},
			"sh", "-c", "pwd; echo restored-$((6*7)) > restored-result")
		if err != nil {
			return err
		}
		if r.Exit != 0 || r.Stdout != "/share\n" || r.Files["/tmp/restored-result"] != "restored-42\n" {
			return reportFailure(l, r, "-share after restore: status %d, stdout %q, file %q", r.Exit, r.Stdout, r.Files["/tmp/restored-result"])
		}
		// A refusal: other memory than the snapshot's.
		r, err = run([]string{"-m", "256M"}, nil, "true")
		if err != nil {
			return err
		}
		if r.Exit != 1 || !strings.Contains(r.Stderr, "snapshot has 512 MiB") {
			return reportFailure(l, r, "restore with other -m: status %d", r.Exit)
		}
		return nil
	})
}

// hexBytes counts the two-digit hex words in a hexdump.
func hexBytes(dump string) int {
	n := 0
	for _, f := range strings.Fields(dump) {
		if len(f) == 2 && strings.Trim(f, "0123456789abcdef") == "" {
			n++
		}
	}
	return n
}
