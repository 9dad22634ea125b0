package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/tools/nested"
)

// The tests of `vmm run` (issue 5, the CI-runner mode) and its soak and
// hostile-guest siblings run their programs in L1 under
// tools/e2e/cmd/redirect, which keeps vmm's stdout and stderr apart: the
// harness's job console and Exec both merge them, and telling them apart
// is the point of `vmm run`'s output contract.

// ciTools are the programs these tests put into L1 (or, for hostile,
// into L2 through -share), built once per test binary.
type ciTools struct {
	redirect, soak, hostile, ptyends string
}

var (
	ciToolsOnce sync.Once
	ciToolsVal  ciTools
	ciToolsErr  error
)

// ciBuild builds the tools into a directory of setup.dir, statically
// (CGO_ENABLED=0): L1 and the guest have no C library. Like l1Config it
// skips with -short, when TestMain prepares nothing.
func ciBuild(t *testing.T) ciTools {
	t.Helper()
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	ciToolsOnce.Do(func() {
		if setup.dir == "" {
			ciToolsErr = fmt.Errorf("e2e: setup.dir is empty: TestMain did not prepare the suite")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		_, thisFile, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(filepath.Dir(thisFile))) // tools/e2e/x.go -> the module root
		dir := filepath.Join(setup.dir, "ci-tools")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			ciToolsErr = err
			return
		}
		build := func(name string) string {
			out := filepath.Join(dir, name)
			cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./tools/e2e/cmd/"+name)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil && ciToolsErr == nil {
				ciToolsErr = fmt.Errorf("build %s: %v\n%s", name, err, b)
			}
			return out
		}
		ciToolsVal = ciTools{redirect: build("redirect"), soak: build("soak"), hostile: build("hostile"), ptyends: build("ptyends")}
	})
	if ciToolsErr != nil {
		t.Fatal(ciToolsErr)
	}
	return ciToolsVal
}

// ciConfig is l1Config (which skips with -short) plus redirect in L1 and
// the extra files given (L1 path -> host path).
func ciConfig(t *testing.T, extra map[string]string) nested.Config {
	t.Helper()
	c := l1Config(t)
	tools := ciBuild(t)
	files := maps.Clone(c.Files) // l1Config's map is not ours to change
	if files == nil {
		files = map[string]string{}
	}
	files["/bin/redirect"] = tools.redirect
	maps.Copy(files, extra)
	c.Files = files
	return c
}

// redirectReport mirrors tools/e2e/cmd/redirect's Report.
type redirectReport struct {
	Args      []string            `json:"args"`
	Stdout    string              `json:"stdout"`
	Stderr    string              `json:"stderr"`
	Exit      int                 `json:"exit"`
	Signal    int                 `json:"signal"`
	Sent      int                 `json:"sent"`
	TimedOut  bool                `json:"timed_out"`
	ElapsedMS float64             `json:"elapsed_ms"`
	Threads   []string            `json:"threads"`
	Files     map[string]string   `json:"files"`
	SHA256    map[string]string   `json:"sha256"`
	Glob      map[string][]string `json:"glob"`
	Error     string              `json:"error"`

	// klogMark is where L1's kernel log ended when the run started
	// (nested.L1.KernelLogMark): emulatorCrash weighs only what the
	// kernel wrote during the run.
	klogMark int64
	// run is the run as nested.ExecWatch watched it: what L1's CPUs
	// showed while its output stood still, for reportFailure.
	run *nested.WatchedExec
}

// String is what a failure shows: the command, how it ended, and the
// ends of both streams.
// A command redirect stopped also shows its threads as they were before
// the SIGQUIT and, from the goroutine dump, each goroutine's state and
// innermost function: the dump's tail alone is one goroutine's.
func (r redirectReport) String() string {
	s := fmt.Sprintf("%q: exit %d signal %d sent %d timed out %v after %.1fs\n--- stdout (tail) ---\n%s\n--- stderr (tail) ---\n%s\n---",
		r.Args, r.Exit, r.Signal, r.Sent, r.TimedOut, r.ElapsedMS/1000, tailLines(r.Stdout, 30), tailLines(r.Stderr, 40))
	if len(r.Threads) > 0 {
		s += "\n--- threads before the SIGQUIT ---\n" + strings.Join(r.Threads, "\n") + "\n---"
	}
	if g := goroutineSummary(r.Stderr); g != "" {
		s += "\n--- goroutines (state, innermost function) ---\n" + g + "\n---"
	}
	return s
}

// recap is the run's report again, short, for the end of a failure: a
// log that keeps only the end of a test's output (CI's record does) then
// still has the run's status, its last words before any goroutine dump
// (vmm's -timeout line, which says where the vCPUs were) and where the
// goroutines were, after L1's tails and backtraces.
func (r redirectReport) recap() string {
	before, _, _ := strings.Cut(withoutBackstopDump(r.Stderr), "SIGQUIT: quit")
	s := fmt.Sprintf("--- the run again, in short ---\n%q: exit %d signal %d timed out %v after %.1fs\n--- stdout (last 5 lines) ---\n%s\n--- stderr before any goroutine dump (last 15 lines) ---\n%s",
		r.Args, r.Exit, r.Signal, r.TimedOut, r.ElapsedMS/1000, tailLines(r.Stdout, 5), tailLines(before, 15))
	if g := goroutineSummary(r.Stderr); g != "" {
		s += "\n--- goroutines (last 25) ---\n" + tailLines(g, 25)
	}
	return s + "\n---"
}

// goroutineSummary condenses a Go goroutine dump to one line per
// goroutine: its header ("goroutine 7 [IO wait, 2 minutes]:") and the
// function below it.
func goroutineSummary(dump string) string {
	var out []string
	lines := strings.Split(dump, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "goroutine ") || !strings.HasSuffix(l, ":") {
			continue
		}
		fn := ""
		if i+1 < len(lines) {
			fn = strings.TrimSpace(lines[i+1])
		}
		out = append(out, strings.TrimSuffix(l, ":")+" "+fn)
	}
	return strings.Join(out, "\n")
}

// redirectExec runs args in L1 under redirect with its flags; timeout
// bounds the command (redirect then makes it dump its goroutines), and
// the wait for the report gets a minute more. The run is watched
// (nested.ExecWatch) through redirect's -progress file, with vmm's own
// -timeout among its deadlines if args give vmm one: a guest the
// emulator stalls is looked at while it stalls, which reportFailure
// needs if a timeout then ends the run. A report that never came by
// the deadline has had that look already.
func redirectExec(ctx context.Context, l *nested.L1, timeout time.Duration, flags []string, args ...string) (redirectReport, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	// One file per run: an L1 serves several, at once in TestSnapshot.
	progress := fmt.Sprintf("/tmp/redirect-progress-%016x", rand.Uint64())
	cmd := append([]string{"/bin/redirect", "-timeout", timeout.String(), "-progress", progress}, flags...)
	cmd = append(append(cmd, "--"), args...)
	w := nested.Watch{ProgressFile: progress, Deadlines: []time.Duration{timeout}}
	if d, ok := vmmTimeout(args); ok {
		w.Deadlines = append(w.Deadlines, d)
	}
	mark := l.KernelLogMark()
	run, err := l.ExecWatch(ctx, w, cmd...)
	r := redirectReport{klogMark: mark, run: run}
	if err != nil {
		return r, err
	}
	out := run.Output
	// The report is the last line; anything before it would be
	// redirect's own complaints.
	line := out[strings.LastIndex(strings.TrimRight(out, "\n"), "\n")+1:]
	if jerr := json.Unmarshal([]byte(line), &r); jerr != nil {
		return r, fmt.Errorf("redirect %q: no report (%v) in its output:\n%s\n--- L1 kernel log (tail) ---\n%s", args, jerr, out, l.KernelLogTail(30))
	}
	if r.Error != "" {
		return r, fmt.Errorf("redirect %q: %s", args, r.Error)
	}
	return r, nil
}

// vmmTimeout returns the -timeout that args (a command line that runs
// vmm, perhaps under a wrapper such as pipeends) give vmm, if any: the
// flags after the first argument named vmm, up to "--".
func vmmTimeout(args []string) (time.Duration, bool) {
	i := slices.IndexFunc(args, func(a string) bool { return path.Base(a) == "vmm" })
	if i < 0 {
		return 0, false
	}
	for j := i + 1; j < len(args) && args[j] != "--"; j++ {
		v, ok := "", false
		switch a := strings.TrimPrefix(args[j], "-"); {
		case a == "-timeout" || a == "timeout":
			if j+1 < len(args) {
				v, ok = args[j+1], true
			}
		case strings.HasPrefix(a, "-timeout=") || strings.HasPrefix(a, "timeout="):
			_, v, ok = strings.Cut(a, "=")
		}
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		return d, err == nil && d > 0
	}
	return 0, false
}

// reportFailure is an error with the report and L1's kernel log. A run
// a timeout ended (endedByTimeout) also gets what nested.ExecWatch saw
// of L1's CPUs while its output stood still, and wraps
// nested.ErrCPUHeld if one was held inside the guest then, which
// nested.Judge retries as the emulator's.
func reportFailure(l *nested.L1, r redirectReport, format string, args ...any) error {
	err := fmt.Errorf("%s\n%v", fmt.Sprintf(format, args...), r)
	if how := endedByTimeout(r); how != "" && r.run != nil {
		err = r.run.TimedOut(fmt.Errorf("%w\n(%s)", err, how)) // with L1's tails
	} else {
		err = fmt.Errorf("%w\n--- L1 kernel log (tail) ---\n%s\n---", err, l.KernelLogTail(30))
	}
	err = fmt.Errorf("%w\n%s", err, r.recap())
	why, whyNot := emulatorCrash(r, l.KernelLogSince(r.klogMark))
	if why != "" {
		return fmt.Errorf("%w (%s): %w", nested.ErrGuestCrashed, why, err)
	}
	if whyNot != "" {
		return fmt.Errorf("%w\n(not the emulator's: %s)", err, whyNot)
	}
	return err
}

// emulatorCrash says why a failed run counts as the emulator's crash of
// the guest, or "" if it does not. A run vmm ended counts if the guest
// died in one of the ways nested.GuestCrash knows (which also rules out
// a Go crash) and vmm stayed up to say so, with its own status for a
// guest fault or a -timeout. A run redirect had to stop counts only as
// stalledPastDeadline says; whyNot then says what it lacked. klog is
// what L1's kernel wrote during the run. Either way nested.Judge retries
// it only with L1's own kernel log showing the emulator at fault; for a
// CPU held in KVM_RUN that is the same stall report, the one piece of
// evidence that stands for both.
func emulatorCrash(r redirectReport, klog string) (why, whyNot string) {
	if r.TimedOut {
		return stalledPastDeadline(r.Stderr, klog)
	}
	if r.Signal != 0 || (r.Exit != 1 && r.Exit != 124) {
		return "", ""
	}
	return nested.GuestCrash(r.Stderr), ""
}

// endedByTimeout says how a timeout ended the run, or "" if none did, or
// if a Go program in it crashed (which no held CPU explains): vmm's own
// -timeout (status 124; a wrapper such as pipeends passes it on), or
// redirect's, which stopped the command. The goroutines vmm prints when
// its machine did not stop after its -timeout are no crash
// (withoutBackstopDump): a vCPU the emulator holds in KVM_RUN is one
// way for the stop to hang.
func endedByTimeout(r redirectReport) string {
	before, after, _ := strings.Cut(withoutBackstopDump(r.Stderr), "SIGQUIT: quit")
	switch {
	case nested.GoCrash(before) || panicRE.MatchString(after):
		return ""
	case r.TimedOut:
		return "redirect's -timeout stopped the run"
	case r.Signal == 0 && r.Exit == 124:
		return "the run ended with vmm's -timeout status, 124"
	}
	return ""
}

// backstopLineRE is vmm's line when its machine did not stop after its
// -timeout or a signal (cmd/vmm's backstop); "; its goroutines:" and
// the dump follow it, then the line again.
var backstopLineRE = regexp.MustCompile(`vmm: [^\n]*; the machine did not stop within \S+ after that: exiting without it`)

// withoutBackstopDump returns stderr without the goroutine dump of vmm's
// backstop, which is vmm's report of what held its stop up: it exits
// anyway with the status it had to give. The line stays.
func withoutBackstopDump(stderr string) string {
	const intro = "; its goroutines:\n"
	m := backstopLineRE.FindStringIndex(stderr)
	if m == nil || !strings.HasPrefix(stderr[m[1]:], intro) {
		return stderr
	}
	line, rest := stderr[m[0]:m[1]], stderr[m[1]+len(intro):]
	end := strings.Index(rest, line)
	if end < 0 {
		return stderr[:m[1]] + "\n" // the dump ran to the end (vmm's exit cut it short)
	}
	return stderr[:m[1]] + rest[end+len(line):]
}

// vcpu0Place is how vmm's -timeout line ends for a guest of one vCPU:
// where it was (machine.VCPUPlace), whichever of those it was.
const vcpu0Place = "; vCPU 0 was at RIP=0x[0-9a-f]+ in the guest's (kernel|user space), (halted|running), interrupts (on|off)"

var (
	// vmmDeadlineRE is vmm's line when its own -timeout stops the guest.
	vmmDeadlineRE = regexp.MustCompile(`(?m)^vmm: guest stopped: -timeout \S+ reached`)
	// panicRE is a Go program's panic or fatal error, which a goroutine
	// dump after SIGQUIT is not.
	panicRE = regexp.MustCompile(`(?m)^(panic: |fatal error: )`)
)

// stalledPastDeadline is emulatorCrash for a run redirect stopped. It
// never counts if a Go program in the pipeline crashed before
// redirect's SIGQUIT made them dump their goroutines, or panicked after.
// Otherwise it counts on either of two proofs that the emulator stalled
// the run:
//   - L1's kernel reported, during the run (klog holds only what it
//     wrote since the run started), one of its CPUs held inside the
//     guest, in KVM_RUN (nested.VCPUStall). The harness pins all of
//     vmm's threads to one L1 CPU, so if that is the one held, vmm's
//     timer cannot fire, nor its stop finish, nor its line be printed,
//     until the emulator lets go. In CI's runs of
//     TestRunPipedStdin/smp2 that stalled, L1's log showed a CPU so;
//     the latest (12c1a60) was not retried, and L1's log ended in a
//     backtrace through KVM_RUN (the part CI kept does not say whether
//     a CPU's or a blocked task's).
//   - The guest's console showed the stall nested.GuestCrash knows
//     before the SIGQUIT, and vmm printed that it reached its own
//     -timeout: vmm acting on its deadline, late, as in a CI run of
//     61173a3, where its line came after the SIGQUIT.
//
// A vmm that ignores its deadline, or has none, is never retried on an
// L1 whose CPUs were not held in its guest during the run. One whose CPU
// was held for a while and that then hung by itself would be; the
// suite's retry budget bounds that, and a hang of vmm's own comes back
// on the retry.
func stalledPastDeadline(stderr, klog string) (why, whyNot string) {
	before, after, _ := strings.Cut(stderr, "SIGQUIT: quit")
	if nested.GoCrash(before) || panicRE.MatchString(after) {
		return "", "a Go program crashed"
	}
	if held := nested.VCPUStall(klog); held != "" {
		return "L1's CPU held in KVM_RUN: " + held, ""
	}
	guest := nested.GuestCrash(before)
	deadline := vmmDeadlineRE.MatchString(stderr)
	if guest != "" && deadline {
		return guest, ""
	}
	return "", fmt.Sprintf("redirect stopped the run; vmm reported reaching its -timeout: %v; guest stall before the SIGQUIT: %q; L1 CPU held in KVM_RUN: none", deadline, guest)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runTimeout bounds one `vmm run` of the default guest in L1: a nested
// boot takes 5-15 s, the same again when the CPU is shared.
const runTimeout = 3 * time.Minute

// runArgs is `vmm run` of the default guest with extra flags before the
// command.
func runArgs(flags []string, command ...string) []string {
	args := append([]string{"/vmm", "run", "-kernel", "/guest/bzImage", "-initrd", "/guest/initrd.cpio"}, flags...)
	return append(append(args, "--"), command...)
}

// runDisk is TestRun's disk in L1, of runDiskSize zero bytes.
const (
	runDisk     = "/disk.img"
	runDiskSize = 1 << 20
)

// runCase is one `vmm run` in a fresh L1 and what it must produce.
type runCase struct {
	name     string
	files    map[string]string // extra L1 files: L1 path -> host path
	redirect []string          // redirect's flags: -cat, -glob, -signal ...
	flags    []string          // vmm run's flags
	command  []string
	status   int
	check    func(r redirectReport) error // further checks; nil for none
}

// TestRun is `vmm run`'s contract end to end (README, "Running a job"):
// the job's status is vmm's status, its stdout is vmm's stdout and its
// stderr goes to vmm's stderr, -share and -out carry files in and out,
// a -disk is written through,
// and the statuses of its own (124 timeout, 125 no status, 128+N
// signal) each come with a message.
func TestRun(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	for _, tc := range runCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			nested.Retry(t, ciConfig(t, tc.files), func(l *nested.L1) error {
				return checkRunCase(t, l, tc, runArgs(tc.flags, tc.command...))
			})
		})
	}
}

// runCases are TestRun's cases; TestSnapshot runs them on a restored
// guest too.
func runCases(t *testing.T) []runCase {
	t.Helper()
	shareDir := t.TempDir()
	token := fmt.Sprintf("share-token-%d", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(shareDir, "input.txt"), []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A disk the job writes; its image's SHA-256 afterwards must be
	// that of the job's line over zeros.
	diskImage := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(diskImage, make([]byte, runDiskSize), 0o644); err != nil {
		t.Fatal(err)
	}
	wantDisk := make([]byte, runDiskSize)
	copy(wantDisk, "disk-42\n")
	wantDiskSum := sha256Hex(wantDisk)
	cases := []runCase{
		{
			name: "status-and-streams",
			// $GOROOT: u-root's init used to set GOROOT=/go, which
			// a -rootfs job's own go command then refused.
			// The job's open file limit (vmm-init raises init's 1,024)
			// and /etc/hosts go to stderr.
			// vmm's stderr is a pipe here, so the job's is too, not
			// the console's terminal: byte for byte, and not a tty.
			command: []string{"sh", "-c", "echo out-$((40+2))$GOROOT; echo err-$((6*7)) >&2; [ -t 2 ] || echo err-not-a-tty >&2; grep 'open files' /proc/self/limits >&2; cat /etc/hosts >&2; echo host-$(hostname) >&2; exit 3"},
			status:  3,
			check: func(r redirectReport) error {
				// Arithmetic, so an echo of the command line cannot
				// pass for the job's output.
				if r.Stdout != "out-42\n" {
					return fmt.Errorf("stdout %q, want exactly the job's \"out-42\\n\"", r.Stdout)
				}
				if strings.Contains(r.Stderr, "u-root") {
					return fmt.Errorf("the job's stderr carries u-root init's banner")
				}
				if !strings.Contains(r.Stderr, "err-42") {
					return fmt.Errorf("the job's stderr line err-42 is not on vmm's stderr")
				}
				if !strings.Contains(r.Stderr, "err-42\nerr-not-a-tty\n") {
					return fmt.Errorf("the job's stderr is not a pipe copied byte for byte (a terminal's \\r\\n, or isatty true): %q", grepLine(r.Stderr, "err-"))
				}
				// grep, a Go program (u-root's), raises its own soft
				// limit to the hard one as every Go program does, so
				// the soft limit it shows is at least the job's.
				f := strings.Fields(grepLine(r.Stderr, "Max open files"))
				if len(f) < 5 || f[4] != "1048576" {
					return fmt.Errorf("the job's open file limit %q, want a hard limit of 1048576", f)
				}
				if soft, err := strconv.Atoi(f[3]); err != nil || soft < 65536 {
					return fmt.Errorf("the job's open file limit %q, want a soft limit of 65536 or more", f)
				}
				if !strings.Contains(r.Stderr, "127.0.0.1\tlocalhost") {
					return fmt.Errorf("the job's /etc/hosts does not name localhost")
				}
				// Named, and the name resolves (not the kernel's "(none)").
				if !strings.Contains(r.Stderr, "host-vmm\n") || !strings.Contains(r.Stderr, "127.0.1.1\tvmm") {
					return fmt.Errorf("the guest's host name is not vmm, named in /etc/hosts: %q, %q", grepLine(r.Stderr, "host-"), grepLine(r.Stderr, "127.0.1.1"))
				}
				return nil
			},
		},
		{
			name:     "share-and-out",
			files:    map[string]string{"/in/input.txt": filepath.Join(shareDir, "input.txt")},
			redirect: []string{"-cat", "/tmp/results/result", "-cat", "/tmp/results/sub/n", "-cat", "/tmp/results/link", "-glob", "/tmp/vmm-out-*", "-glob", "/tmp/results/*"},
			flags:    []string{"-share", "/in", "-out", "/tmp/results"},
			// The job starts in /share; it copies the shared file out
			// and writes a result of its own in a subdirectory, then
			// prints the share's readahead (vmm-init raises it to
			// 1 MiB; its backing device is named after the mount's
			// major:minor, mountinfo's third field). Of its three
			// special files only the link that stays in /out comes
			// back; the other two are named on stderr.
			command: []string{"sh", "-c", "pwd; cp input.txt /out/result && mkdir /out/sub && echo $(cat input.txt)-$((7*6)) > /out/sub/n && " +
				"ln -s sub/n /out/link && ln -s /etc/passwd /out/evil && mknod /out/pipe p && " +
				`cat /sys/class/bdi/$(while read -r id parent majmin rest; do case "$rest" in "/ /share "*) echo $majmin;; esac; done < /proc/self/mountinfo)/read_ahead_kb`},
			status: 0,
			check: func(r redirectReport) error {
				if r.Stdout != "/share\n1024\n" {
					return fmt.Errorf("stdout %q, want the job's working directory /share and the share's readahead, 1024 KiB", r.Stdout)
				}
				if got, want := r.Files["/tmp/results/result"], token+"\n"; got != want {
					return fmt.Errorf("-out result %q, want the shared file's %q", got, want)
				}
				if got, want := r.Files["/tmp/results/sub/n"], token+"-42\n"; got != want {
					return fmt.Errorf("-out sub/n %q, want %q", got, want)
				}
				if g := r.Glob["/tmp/vmm-out-*"]; len(g) != 0 {
					return fmt.Errorf("scratch disks left behind: %q", g)
				}
				if got, want := r.Files["/tmp/results/link"], token+"-42\n"; got != want {
					return fmt.Errorf("-out link (to sub/n) reads %q, want %q", got, want)
				}
				if got, want := strings.Join(r.Glob["/tmp/results/*"], " "), "/tmp/results/link /tmp/results/result /tmp/results/sub"; got != want {
					return fmt.Errorf("-out holds %s, want %s (no link to /etc/passwd, no FIFO)", got, want)
				}
				for _, w := range []string{"vmm: -out: evil: skipped", "vmm-init: -out: pipe: skipped"} {
					if !strings.Contains(r.Stderr, w) {
						return fmt.Errorf("stderr does not say %q", w)
					}
				}
				return nil
			},
		},
		{
			name:     "disk",
			files:    map[string]string{runDisk: diskImage},
			redirect: []string{"-sha256", runDisk},
			flags:    []string{"-disk", runDisk},
			command:  []string{"sh", "-c", "echo disk-$((6*7)) > /dev/vda && sync && head -c 8 /dev/vda"},
			status:   0,
			check: func(r redirectReport) error {
				if r.Stdout != "disk-42\n" {
					return fmt.Errorf("read back %q from the disk, want \"disk-42\\n\"", r.Stdout)
				}
				if got := r.SHA256[runDisk]; got != wantDiskSum {
					return fmt.Errorf("the disk image's SHA-256 is %s, want %s (the job's line over zeros)", got, wantDiskSum)
				}
				return nil
			},
		},
		{
			name:    "not-found",
			command: []string{"/no/such/command"},
			status:  127,
		},
		{
			name:    "poweroff-without-status",
			command: []string{"poweroff"},
			status:  125,
			check: func(r redirectReport) error {
				if !regexp.MustCompile(`vmm: guest stopped \(poweroff\) without reporting the job's exit status`).MatchString(r.Stderr) {
					return fmt.Errorf("no message about the missing status on stderr")
				}
				return nil
			},
		},
		{
			// A job that panics the guest's kernel: run's panic=-1
			// reboots it, and the run ends with 125 and the panic on
			// stderr. Until 2026-12-06 the kernel (Debian's:
			// CONFIG_PANIC_TIMEOUT=0) spun for ever after the panic
			// and the run waited for -timeout or a signal. sysrq's
			// trigger file works for root whatever kernel.sysrq says.
			name:    "kernel-panic",
			command: []string{"sh", "-c", "echo c > /proc/sysrq-trigger; sleep 600"},
			status:  125,
			check: func(r redirectReport) error {
				if !strings.Contains(r.Stderr, "Kernel panic") {
					return fmt.Errorf("no kernel panic on stderr")
				}
				if !regexp.MustCompile(`vmm: guest stopped \(reboot\) without reporting the job's exit status \(vmm run's guest reboots on a kernel panic`).MatchString(r.Stderr) {
					return fmt.Errorf("no message about the missing status on stderr")
				}
				return nil
			},
		},
		{
			name: "timeout",
			// The job announces itself so the log shows whether the
			// timeout hit during the boot or the job; both must give 124.
			flags:   []string{"-timeout", "30s"},
			command: []string{"sh", "-c", "echo job-started; sleep 600"},
			status:  124,
			check: func(r redirectReport) error {
				// One line, ending with where the vCPU was: asleep
				// in the guest's kernel, or the job's shell between
				// its commands.
				if !regexp.MustCompile(`(?m)^vmm: guest stopped: -timeout 30s reached` + vcpu0Place + `$`).MatchString(r.Stderr) {
					return fmt.Errorf("no -timeout message saying where the vCPU was on stderr")
				}
				return nil
			},
		},
		{
			name: "sigterm-while-booting",
			// The signal goes when the kernel's banner reaches the
			// console (loglevel=7 undoes run's quiet): vmm installed
			// its handler before building the machine, the kernel is
			// booting, and the job is seconds away. A fixed delay was a
			// guess at the emulator's speed and once came after the
			// guest was ready. -boot-timer's report shows how far it
			// got.
			redirect: []string{"-signal", "15", "-on", "Linux version"},
			flags:    []string{"-boot-timer", "-append", "loglevel=7"},
			command:  []string{"sh", "-c", "echo job-started"},
			status:   128 + 15,
			check: func(r redirectReport) error {
				if r.Signal != 0 || r.Sent != 15 {
					return fmt.Errorf("vmm did not handle SIGTERM itself (killed by signal %d, SIGTERM sent: %v)", r.Signal, r.Sent == 15)
				}
				if !strings.Contains(r.Stderr, "vmm: stopped by terminated") {
					return fmt.Errorf("no message about the signal on stderr")
				}
				if strings.Contains(r.Stdout, "job-started") {
					return fmt.Errorf("the job ran: the signal came after the boot, not during it")
				}
				stamps, err := report.ParseReport(strings.NewReader(r.Stderr))
				if err != nil {
					return err
				}
				for _, s := range stamps {
					if s.Phase == guestabi.Ready {
						return fmt.Errorf("the guest reached %v before the signal: not stopped while booting", s.Phase)
					}
				}
				return nil
			},
		},
	}
	return cases
}

// checkRunCase runs vmm with args in L1 under redirect and checks what
// tc says it must produce.
func checkRunCase(t *testing.T, l *nested.L1, tc runCase, args []string) error {
	r, err := redirectExec(t.Context(), l, runTimeout, tc.redirect, args...)
	if err != nil {
		return err
	}
	t.Logf("vmm run %q: status %d in %.1fs; stdout %q", tc.command, r.Exit, r.ElapsedMS/1000, tailLines(r.Stdout, 3))
	if stamps, _ := report.ParseReport(strings.NewReader(r.Stderr)); len(stamps) > 0 {
		var phases []string
		for _, s := range stamps {
			phases = append(phases, fmt.Sprintf("%v %.1fs", s.Phase, s.Since.Seconds()))
		}
		t.Logf("boot timer: %s", strings.Join(phases, ", "))
	}
	if r.Exit != tc.status {
		return reportFailure(l, r, "vmm run exited with status %d, want %d", r.Exit, tc.status)
	}
	if nested.GoCrash(r.Stderr) {
		return reportFailure(l, r, "vmm crashed")
	}
	if tc.check != nil {
		if err := tc.check(r); err != nil {
			return reportFailure(l, r, "%v", err)
		}
	}
	return nil
}

// Only a guest death vmm reported itself counts as the emulator's, or a
// stall vmm's own deadline caught but could not end, or one L1's kernel
// saw holding its CPU in KVM_RUN (stalledPastDeadline).
func TestEmulatorCrash(t *testing.T) {
	triple := "vmm: vCPU 1: guest triple fault (KVM_EXIT_SHUTDOWN) at RIP=0xfff0\n"
	stall := "[  337.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\nvmm: guest stopped: -timeout 3m0s reached\n"
	// dump is how a Go program (pipeends) answers redirect's SIGQUIT.
	dump := "SIGQUIT: quit\nPC=0x485981 m=0 sigcode=0\n\ngoroutine 7 gp=0x2b10dffa3860 m=nil [cleanup wait]:\nruntime.gopark(0x0?)\n"
	// held is L1's kernel log with its CPU held in KVM_RUN; other is an
	// L1 stall anywhere else.
	held := "[  306.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[  327.3] NMI backtrace for cpu 1\n[  327.3]  kvm_arch_vcpu_ioctl_run+0xdb7/0x1750 [kvm]\n"
	other := "[  306.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[  327.3]  ext4_file_write_iter+0x1/0x2\n"
	tests := []struct {
		name string
		r    redirectReport
		klog string
		want bool
	}{
		{"triple fault", redirectReport{Exit: 1, Stderr: triple}, "", true},
		{"stall then timeout", redirectReport{Exit: 124, Stderr: stall}, "", true},
		{"self-detected stall", redirectReport{Exit: 124, Stderr: "rcu: INFO: rcu_preempt self-detected stall on CPU\n"}, "", true},
		{"vmm panicked too", redirectReport{Exit: 2, Stderr: triple + "panic: boom\n"}, "", false},
		{"goroutine dump", redirectReport{Exit: 1, Stderr: triple + "goroutine 1 [running]:\n"}, "", false},
		{"vmm hung", redirectReport{Exit: -1, TimedOut: true, Stderr: "[  337.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"}, "", false},
		{"vmm hung, L1 stalled elsewhere", redirectReport{Exit: -1, TimedOut: true, Stderr: "[  337.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n" + dump}, other, false},
		{"stall, deadline reached, stop stuck", redirectReport{Exit: 2, TimedOut: true, Stderr: stall + dump}, "", true},
		{"stall, vmm's deadline line after the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: "[  337.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n" + dump + "vmm: guest stopped: -timeout 4m0s reached\n"}, "", true},
		{"stall only after the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: dump + stall}, "", false},
		{"deadline reached, panicked after the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: stall + dump + "panic: boom\n"}, "", false},
		{"deadline reached, no stall", redirectReport{Exit: 2, TimedOut: true, Stderr: "vmm: guest stopped: -timeout 4m0s reached\n" + dump}, "", false},
		{"panicked before the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: stall + "panic: boom\n" + dump}, "", false},
		{"L1's CPU held, no line from vmm", redirectReport{Exit: 2, TimedOut: true, Stderr: "[  300.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n" + dump}, held, true},
		{"L1's CPU held, guest silent", redirectReport{Exit: 2, TimedOut: true, Stderr: dump}, held, true},
		{"L1's CPU held, panicked after the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: dump + "panic: boom\n"}, held, false},
		{"L1's CPU held, crashed before the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: "fatal error: all goroutines are asleep\n" + dump}, held, false},
		{"killed by a signal", redirectReport{Exit: -1, Signal: 9, Stderr: triple}, held, false},
		{"job failed", redirectReport{Exit: 3, Stderr: triple}, held, false},
		{"plain timeout", redirectReport{Exit: 124, Stderr: "vmm: guest stopped: -timeout 3m0s reached\n"}, "", false},
		{"other vmm error", redirectReport{Exit: 1, Stderr: "vmm: KVM_RUN vCPU 0: bad address\n"}, "", false},
	}
	for _, tt := range tests {
		why, whyNot := emulatorCrash(tt.r, tt.klog)
		if got := why != ""; got != tt.want {
			t.Errorf("%s: emulatorCrash = %q, want counted %v", tt.name, why, tt.want)
		}
		if tt.r.TimedOut && !tt.want && whyNot == "" {
			t.Errorf("%s: a timed-out run not counted says nothing of why", tt.name)
		}
	}
}

func TestGoroutineSummary(t *testing.T) {
	dump := `SIGQUIT: quit
PC=0x46f01c m=0 sigcode=0

goroutine 1 gp=0x1 m=nil [semacquire, 2 minutes]:
sync.runtime_Semacquire(0x183aad4f8638?)
	/usr/local/go/src/runtime/sema.go:71 +0x25
main.main()

goroutine 7 [IO wait]:
internal/poll.runtime_pollWait(0x7fbe169a5f40, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
`
	want := "goroutine 1 gp=0x1 m=nil [semacquire, 2 minutes] sync.runtime_Semacquire(0x183aad4f8638?)\n" +
		"goroutine 7 [IO wait] internal/poll.runtime_pollWait(0x7fbe169a5f40, 0x72)"
	if got := goroutineSummary(dump); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := goroutineSummary("vmm: guest stopped\n"); got != "" {
		t.Errorf("no dump: got %q", got)
	}
}

// vmmTimeout finds vmm's own -timeout in a command line, under a
// wrapper or not, and not a flag of the job's after "--".
func TestVMMTimeout(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want time.Duration
		ok   bool
	}{
		{"run", runArgs([]string{"-smp", "1", "-timeout", "4m0s"}, "head", "-c", "65536"), 4 * time.Minute, true},
		{"under pipeends", append([]string{"/bin/pipeends", "-stdin-bytes", "65536", "--"}, runArgs([]string{"-timeout", "4m0s"}, "cat")...), 4 * time.Minute, true},
		{"no run subcommand", vmmArgs("-append", "quiet", "-timeout", "5m"), 5 * time.Minute, true},
		{"with =", runArgs([]string{"--timeout=30s"}, "true"), 30 * time.Second, true},
		{"none", runArgs(nil, "true"), 0, false},
		{"the job's", runArgs(nil, "timeout", "-timeout", "3s", "true"), 0, false},
		{"never", runArgs([]string{"-timeout", "0"}, "true"), 0, false},
		{"not a duration", runArgs([]string{"-timeout", "soon"}, "true"), 0, false},
		{"no vmm", []string{"/bin/fstool", "-timeout", "3m"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := vmmTimeout(tt.args); got != tt.want || ok != tt.ok {
				t.Errorf("vmmTimeout(%q) = %v, %v; want %v, %v", tt.args, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// A run ended by a timeout, vmm's (124) or redirect's, gets the looks at
// L1's CPUs; one where a Go program crashed, or that ended otherwise,
// does not.
func TestEndedByTimeout(t *testing.T) {
	dump := "SIGQUIT: quit\nPC=0x485981 m=0 sigcode=0\n\ngoroutine 7 gp=0x2b10dffa3860 m=nil [cleanup wait]:\n"
	// backstop is what cmd/vmm's backstop prints.
	line := "vmm: guest stopped: -timeout 4m0s reached; the machine did not stop within 10s after that: exiting without it"
	backstop := "\r\n" + line + "; its goroutines:\ngoroutine 1 [running]:\nmain.main()\n\ngoroutine 7 [syscall]:\nsyscall.Syscall()\n\n" + line + "\n"
	tests := []struct {
		name string
		r    redirectReport
		want bool
	}{
		{"vmm's -timeout", redirectReport{Exit: 124, Stderr: "vmm: guest stopped: -timeout 4m0s reached\n"}, true},
		{"redirect's -timeout", redirectReport{Exit: 2, TimedOut: true, Stderr: dump}, true},
		{"redirect's -timeout, panicked after the dump", redirectReport{Exit: 2, TimedOut: true, Stderr: dump + "panic: boom\n"}, false},
		{"vmm crashed, then 124", redirectReport{Exit: 124, Stderr: "fatal error: all goroutines are asleep\n"}, false},
		{"vmm's backstop after its -timeout", redirectReport{Exit: 124, Stderr: "[ 90.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\r\n" + backstop + "job-side line\n"}, true},
		{"vmm's backstop, its dump cut short", redirectReport{Exit: 124, Stderr: strings.Split(backstop, "goroutine 7")[0]}, true},
		{"vmm panicked, then its backstop", redirectReport{Exit: 124, Stderr: "panic: boom\n" + backstop}, false},
		{"a goroutine dump after the backstop's", redirectReport{Exit: 124, Stderr: backstop + "goroutine 1 [running]:\n"}, false},
		{"killed by a signal", redirectReport{Exit: -1, Signal: 9}, false},
		{"job's status", redirectReport{Exit: 3}, false},
		{"success", redirectReport{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := endedByTimeout(tt.r) != ""; got != tt.want {
				t.Errorf("endedByTimeout = %q, want one: %v", endedByTimeout(tt.r), tt.want)
			}
		})
	}
}

// The recap at the end of a failure keeps the run's last words and the
// goroutines' places, not the dump between them.
func TestRecap(t *testing.T) {
	r := redirectReport{
		Args: []string{"/vmm", "run"}, Exit: 124, ElapsedMS: 300000,
		Stdout: "one\ntwo\n",
		Stderr: "[    1.0] booting\nvmm: guest stopped: -timeout 5m0s reached; vCPU 0 was at RIP=0xffffffff81000000 in the guest's kernel, running, interrupts off\n" +
			"SIGQUIT: quit\nPC=0x485981 m=0 sigcode=0\n\ngoroutine 7 gp=0x2b10dffa3860 m=nil [cleanup wait]:\nruntime.gopark(0x0?)\n\truntime/proc.go:435 +0xce\n",
	}
	got := r.recap()
	for _, want := range []string{
		`["/vmm" "run"]: exit 124 signal 0 timed out false after 300.0s`,
		"one\ntwo\n",
		"interrupts off\n---",
		"goroutine 7 gp=0x2b10dffa3860 m=nil [cleanup wait] runtime.gopark(0x0?)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("recap lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "PC=0x485981") || strings.Contains(got, "proc.go") {
		t.Errorf("recap has the dump itself:\n%s", got)
	}
}
