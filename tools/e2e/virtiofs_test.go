package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/nested"
)

// The virtio-fs tests (issue 11): -share, -fs and -rootfs end to end,
// with tools/e2e/cmd/fstool at both ends. fstool is in L1 at /bin/fstool
// and reaches the guest through the share it tests (or a share of its
// own), so the guest runs it from virtio-fs.

// vmmDeadline is vmm's -timeout for a run redirect bounds with d: a
// minute less, so that a guest that hangs is stopped by vmm, whose line
// says where its vCPUs were (a kernel spinning with interrupts off, an
// idle one, a user program), rather than by redirect, which can only
// say that the run went on. CI once saw a share run hang so, with
// nothing on the guest's console (TestShareConfinement, 3c21cc9).
func vmmDeadline(d time.Duration) []string {
	return []string{"-timeout", (d - time.Minute).String()}
}

const (
	// bulkTimeout bounds a `vmm run` that moves the -share workload
	// through virtio-fs: each FUSE request is a round trip through
	// emulated nested SVM, 15-80 ms on a busy 2-core host (creating a
	// file takes three, ~120 ms; a 1 MiB write ~120 ms), so 1,001
	// files and 64 MiB take 3-8 minutes each way.
	bulkTimeout = 15 * time.Minute
	// shareTimeout bounds the other runs: a boot and a few hundred
	// requests.
	shareTimeout = 6 * time.Minute
	// l1Timeout bounds fstool's own work in L1.
	l1Timeout = 3 * time.Minute
	// shareFiles and shareBig are the -share workload: 1,000 small files
	// and one of 64 MiB.
	shareFiles = 1000
	shareBig   = 64 << 20
	// raceFor is how long the guest looks the swapped directory up, and
	// raceMax how long it goes on until it has seen both sides of the
	// swap (in four runs alone in L1, 2% to 39% of its reads found the
	// directory; CI's runner, with two L1s, has less to spare).
	raceFor = 20 * time.Second
	raceMax = 2 * time.Minute
)

var (
	fstoolOnce sync.Once
	fstoolPath string
	fstoolErr  error
)

// fstoolBuild builds tools/e2e/cmd/fstool statically into setup.dir,
// once per test binary; like l1Config it skips with -short.
func fstoolBuild(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	fstoolOnce.Do(func() {
		if setup.dir == "" {
			fstoolErr = fmt.Errorf("e2e: setup.dir is empty: TestMain did not prepare the suite")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		_, thisFile, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(filepath.Dir(thisFile)))
		fstoolPath = filepath.Join(setup.dir, "ci-tools", "fstool")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", fstoolPath, "./tools/e2e/cmd/fstool")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fstoolErr = fmt.Errorf("build fstool: %v\n%s", err, b)
		}
	})
	if fstoolErr != nil {
		t.Fatal(fstoolErr)
	}
	return fstoolPath
}

// fsConfig is ciConfig with fstool at /bin/fstool and the extra files.
func fsConfig(t *testing.T, extra map[string]string) nested.Config {
	t.Helper()
	files := map[string]string{"/bin/fstool": fstoolBuild(t)}
	for k, v := range extra {
		files[k] = v
	}
	return ciConfig(t, files)
}

// l1Run runs a command in L1 that must succeed and returns its output.
func l1Run(ctx context.Context, l *nested.L1, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, l1Timeout)
	defer cancel()
	out, code, err := l.Exec(ctx, args...)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("L1: %q: status %d:\n%s\n--- L1 kernel log (tail) ---\n%s", args, code, out, l.KernelLogTail(20))
	}
	return out, nil
}

// fsField returns the value after key in fstool's line prefixed with
// prefix ("write: files 1001 bytes ... manifest HEX ..."), or "".
func fsField(out, prefix, key string) string {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, prefix+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == key {
				return f[i+1]
			}
		}
	}
	return ""
}

func fsFieldInt(out, prefix, key string) int {
	n, err := strconv.Atoi(fsField(out, prefix, key))
	if err != nil {
		return -1
	}
	return n
}

// checkRun is what every vmm run here must pass: the status wanted and
// no Go crash.
func checkRun(t *testing.T, l *nested.L1, r redirectReport, status int) error {
	if nested.GoCrash(r.Stderr) {
		return reportFailure(l, r, "vmm crashed%s", saveReport(t, r))
	}
	if r.Exit != status {
		return reportFailure(l, r, "vmm run exited with status %d, want %d%s", r.Exit, status, saveReport(t, r))
	}
	return nil
}

// saveReport writes the whole of a failed run's output (a goroutine dump
// is longer than the tails a failure shows) to a file that outlives the
// test, and says where.
func saveReport(t *testing.T, r redirectReport) string {
	f, err := os.CreateTemp("", "vmm-e2e-"+strings.ReplaceAll(t.Name(), "/", "-")+"-*.txt")
	if err != nil {
		return ""
	}
	defer f.Close()
	fmt.Fprintf(f, "%q: exit %d signal %d timed out %v after %.1fs\n--- stdout ---\n%s\n--- stderr ---\n%s\n", r.Args, r.Exit, r.Signal, r.TimedOut, r.ElapsedMS/1000, r.Stdout, r.Stderr)
	return " (all of its output: " + f.Name() + ")"
}

// A job writes 1,000 files and 64 MiB into a -share directory; once vmm
// has exited L1 sees every file with the SHA-256 the job computed from
// what it wrote, and a second job reads the same back.
func TestShareRoundTrip(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := fsConfig(t, nil)
	seed := strconv.FormatInt(time.Now().UnixNano(), 10)
	nested.Retry(t, c, func(l *nested.L1) error {
		ctx := t.Context()
		if _, err := l1Run(ctx, l, "/bin/fstool", "cp", "/bin/fstool", "/data/fstool"); err != nil {
			return err
		}
		// The job starts in /share: ./fstool is the copy on the share.
		// Two vCPUs and eight files at a time: requests overlap and
		// complete out of order, as in a parallel build, and the
		// round trips' latency overlaps too.
		r, err := redirectExec(ctx, l, bulkTimeout, nil, runArgs(append(vmmDeadline(bulkTimeout), "-smp", "2", "-share", "/data"),
			"./fstool", "write", "-j", "8", "-files", strconv.Itoa(shareFiles), "-big", strconv.Itoa(shareBig), "-seed", seed, "out")...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		wrote := fsField(r.Stdout, "write", "manifest")
		if n := fsFieldInt(r.Stdout, "write", "files"); n != shareFiles+1 || wrote == "" {
			return reportFailure(l, r, "the job wrote %d files (manifest %q), want %d", n, wrote, shareFiles+1)
		}
		t.Logf("job wrote %s files, %s bytes in %.1fs (vmm run %.1fs)", fsField(r.Stdout, "write", "files"), fsField(r.Stdout, "write", "bytes"),
			atof(fsField(r.Stdout, "write", "in")), r.ElapsedMS/1000)

		out, err := l1Run(ctx, l, "/bin/fstool", "hash", "/data/out")
		if err != nil {
			return err
		}
		if got := fsField(out, "hash", "manifest"); got != wrote || fsFieldInt(out, "hash", "other") != 0 {
			return fmt.Errorf("L1 sees manifest %s, the job wrote %s:\n%s", got, wrote, out)
		}
		if got, want := fsFieldInt(out, "hash", "bytes"), fsFieldInt(r.Stdout, "write", "bytes"); got != want {
			return fmt.Errorf("L1 sees %d bytes, the job wrote %d", got, want)
		}

		r, err = redirectExec(ctx, l, bulkTimeout, nil, runArgs(append(vmmDeadline(bulkTimeout), "-smp", "2", "-share", "/data"), "./fstool", "hash", "-j", "8", "out")...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		if got := fsField(r.Stdout, "hash", "manifest"); got != wrote {
			return reportFailure(l, r, "the second job reads manifest %s, the first wrote %s", got, wrote)
		}
		t.Logf("second job read them back in %.1fs (vmm run %.1fs)", atof(fsField(r.Stdout, "hash", "in")), r.ElapsedMS/1000)
		return nil
	})
}

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64)
	return f
}

// -fs DIR,ro: every change the guest tries fails with EROFS although it
// mounts the share read-write, DIR is byte-identical afterwards, and
// nothing outside DIR is reachable: not through symlinks DIR holds
// (abs -> /, up -> .., leak -> ../secret/token), not through .., not
// through `ln -s / x` on the writable share beside it, and not while L1
// swaps a directory of DIR with a symlink to the secret as the guest
// looks it up.
func TestShareConfinement(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := fsConfig(t, nil)
	nested.Retry(t, c, func(l *nested.L1) error {
		ctx := t.Context()
		out, err := l1Run(ctx, l, "/bin/fstool", "populate", "/ro", "/secret")
		if err != nil {
			return err
		}
		secret := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "secret:"))
		if !strings.HasPrefix(secret, "secret-") {
			return fmt.Errorf("populate: %q", out)
		}
		if _, err := l1Run(ctx, l, "/bin/fstool", "cp", "/bin/fstool", "/tools/fstool"); err != nil {
			return err
		}
		tree := func() (string, error) {
			out, err := l1Run(ctx, l, "/bin/fstool", "tree", "/ro")
			d := fsField(out, "tree", "digest")
			if err == nil && d == "" {
				err = fmt.Errorf("fstool tree: %q", out)
			}
			return d, err
		}
		before, err := tree()
		if err != nil {
			return err
		}
		leaked := func(r redirectReport) bool {
			return strings.Contains(r.Stdout, secret) || strings.Contains(r.Stderr, secret)
		}

		// The read-only share and the escapes, from it and from the
		// writable share holding fstool.
		flags := append(vmmDeadline(shareTimeout), "-share", "/tools", "-fs", "/ro,tag=ro,ro")
		r, err := redirectExec(ctx, l, shareTimeout, nil, runArgs(flags, "sh", "-c",
			"./fstool readonly /mnt/ro ro && ./fstool escape /mnt/ro /share")...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		if !strings.Contains(r.Stdout, "readonly: all ") {
			return reportFailure(l, r, "not every change was refused with EROFS")
		}
		if leaked(r) {
			return reportFailure(l, r, "the guest read the secret outside the share")
		}
		if !strings.Contains(r.Stdout, "escape: made /share/x -> /") {
			return reportFailure(l, r, "the guest could not make its symlink to / on the writable share")
		}
		for _, line := range strings.Split(r.Stdout, "\n") {
			if strings.HasPrefix(line, "escape: ") || strings.HasPrefix(line, "readonly: ") {
				t.Log(line)
			}
		}
		after, err := tree()
		if err != nil {
			return err
		}
		if after != before {
			return fmt.Errorf("/ro changed under a read-only share: tree digest %s, was %s", after, before)
		}
		if out, err := l1Run(ctx, l, "/bin/fstool", "stat", "/tools/x", "/x"); err != nil || strings.Count(out, "absent") != 2 {
			return fmt.Errorf("the guest's symlink is left behind or made outside the share: %q %v", out, err)
		}

		// The swap: L1 exchanges /ro/d (a directory holding "inside")
		// and /ro/l (a symlink to /secret) as fast as it can while the
		// guest opens d/token, with fresh lookups every few reads.
		r, err = redirectExec(ctx, l, shareTimeout, nil,
			append([]string{"/bin/fstool", "exec", "-swap", "/ro:d:l", "--"},
				runArgs(flags, "./fstool", "race", "-for", raceFor.String(), "-max", raceMax.String(), "-mount", "ro", "/mnt/ro")...)...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		t.Logf("%s; %s", strings.TrimSpace(grepLine(r.Stdout, "race: reads")), strings.TrimSpace(grepLine(r.Stderr, "fstool exec:")))
		if leaked(r) || fsFieldInt(r.Stdout, "race", "other") != 0 {
			return reportFailure(l, r, "the guest read something other than the share's token during the swaps")
		}
		var swaps int
		fmt.Sscanf(grepLine(r.Stderr, "fstool exec:"), "fstool exec: %d swaps", &swaps)
		reads, inside := fsFieldInt(r.Stdout, "race", "reads"), fsFieldInt(r.Stdout, "race", "inside")
		if swaps == 0 || inside <= 0 || inside == reads {
			return reportFailure(l, r, "no race: %d swaps, %d of %d reads found the directory", swaps, inside, reads)
		}
		after, err = tree()
		if err != nil {
			return err
		}
		if after != before {
			return fmt.Errorf("/ro is not as it was after the swaps: tree digest %s, was %s", after, before)
		}
		return nil
	})
}

// grepLine returns the first line of s starting with prefix, or "".
func grepLine(s, prefix string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// rootTree is a root file system for -rootfs: this machine's bash and
// sha256sum (Debian's, dynamically linked), the libraries ldd names at
// the paths ldd names them, and a marker file, as L1 files under root.
// It returns the files and the marker's SHA-256.
func rootTree(t *testing.T, root string) (map[string]string, string) {
	t.Helper()
	files := map[string]string{}
	for _, prog := range []string{"/bin/bash", "/usr/bin/sha256sum"} {
		if _, err := os.Stat(prog); err != nil {
			t.Skipf("no %s on this machine to build a root file system from: %v", prog, err)
		}
		files[root+prog] = prog
		out, err := exec.Command("ldd", prog).Output()
		if err != nil {
			t.Fatalf("ldd %s: %v", prog, err)
		}
		for _, m := range regexp.MustCompile(`(?m)(?:=>\s*|^\s*)(/\S+)\s+\(0x`).FindAllStringSubmatch(string(out), -1) {
			files[root+m[1]] = m[1]
		}
	}
	var tok [16]byte
	rand.Read(tok[:])
	marker := filepath.Join(t.TempDir(), "marker")
	content := []byte("marker " + hex.EncodeToString(tok[:]) + "\n")
	if err := os.WriteFile(marker, content, 0o644); err != nil {
		t.Fatal(err)
	}
	files[root+"/usr/share/marker"] = marker
	return files, sha256Hex(content)
}

// vmm run -rootfs R runs Debian's bash from R, with its libraries from
// R, and returns its status; what the job writes to /usr goes to the
// overlay, and R is byte-identical afterwards. The job's /dev has what
// scripts expect (/dev/fd for process substitution, /dev/shm). Then the CI recipe,
// -rootfs /: the job sees L1's own files and starts in vmm's working
// directory with vmm's PATH.
func TestRootfs(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	files, markerSum := rootTree(t, "/R")
	files["/work/ci/input"] = files["/R/usr/share/marker"]
	// A working directory in L1's /run, which the job's root gets
	// fresh: the job starts in / instead, and is told why.
	files["/run/e2e-cwd/input"] = files["/R/usr/share/marker"]
	// R's own /etc/hosts, which the job sees with the guest's name
	// added (in the overlay: R is unchanged).
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost r-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files["/R/etc/hosts"] = hosts
	c := fsConfig(t, files)
	nested.Retry(t, c, func(l *nested.L1) error {
		ctx := t.Context()
		tree := func() (string, error) {
			out, err := l1Run(ctx, l, "/bin/fstool", "tree", "/R")
			d := fsField(out, "tree", "digest")
			if err == nil && d == "" {
				err = fmt.Errorf("fstool tree: %q", out)
			}
			return d, err
		}
		before, err := tree()
		if err != nil {
			return err
		}
		r, err := redirectExec(ctx, l, shareTimeout, nil, runArgs([]string{"-rootfs", "/R"}, "bash", "-c",
			`echo "bash $BASH_VERSION"; sha256sum /usr/share/marker; echo overlay-$((6*7)) > /usr/new && echo "$(</usr/new)"; echo "cwd $PWD"; `+
				`read x < <(echo procsub-$((6*7))); echo "$x"; [ -d /dev/shm ] && echo shm-ok; `+
				// An orphan: its parent subshell exits at once, so
				// it goes to the guest's PID 1 (vmm-init), which
				// must reap it. The second read returns when the
				// orphan has ended (it held the pipe); a zombie keeps
				// its /proc entry and the loop runs out. GOROOT:
				// u-root's init set it to /go.
				`{ read -r o; read -r _; } < <( ( bash -c : & echo $! ) ); n=0; `+
				`while [ -e /proc/$o ] && [ $n -lt 100000 ]; do n=$((n+1)); done; `+
				`[ $n -lt 100000 ] && echo orphan-reaped; echo "goroot=$GOROOT."; `+
				// The guest's name, added to R's /etc/hosts.
				`echo "hostname $HOSTNAME"; while read -r a b; do [ "$b" = "localhost r-host" ] && echo hosts-r; [ "$a $b" = "127.0.1.1 vmm" ] && echo hosts-vmm; done < /etc/hosts; exit 7`)...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 7); err != nil {
			return err
		}
		t.Logf("bash in -rootfs /R: %q in %.1fs", r.Stdout, r.ElapsedMS/1000)
		for _, want := range []string{"bash 5.", markerSum + "  /usr/share/marker", "overlay-42", "cwd /\n", "procsub-42", "shm-ok", "orphan-reaped", "goroot=.", "hostname vmm\n", "hosts-r\nhosts-vmm\n"} {
			if !strings.Contains(r.Stdout, want) {
				return reportFailure(l, r, "the job's output lacks %q", want)
			}
		}
		after, err := tree()
		if err != nil {
			return err
		}
		if after != before {
			return fmt.Errorf("/R changed under -rootfs: tree digest %s, was %s", after, before)
		}
		if out, err := l1Run(ctx, l, "/bin/fstool", "stat", "/R/usr/new"); err != nil || !strings.Contains(out, "absent") {
			return fmt.Errorf("the job's write to /usr reached R: %q %v", out, err)
		}

		// The CI recipe: vmm run -rootfs / in the checkout, here
		// /work/ci. fstool by name: the job has L1's PATH.
		r, err = redirectExec(ctx, l, shareTimeout, nil, append([]string{"/bin/fstool", "exec", "-C", "/work/ci", "--"},
			runArgs([]string{"-rootfs", "/"}, "fstool", "seq", "cwd", ",", "hash", ".", ",", "tree", "/R")...)...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		if !strings.Contains(r.Stdout, "cwd: /work/ci\n") {
			return reportFailure(l, r, "the job did not start in vmm's working directory /work/ci")
		}
		if got := fsField(r.Stdout, "hash", "files"); got != "1" {
			return reportFailure(l, r, "the job sees %s files in /work/ci, want 1", got)
		}
		if got := fsField(r.Stdout, "tree", "digest"); got != before {
			return reportFailure(l, r, "the job sees /R as %s, L1 as %s", got, before)
		}
		t.Logf("-rootfs /: %q in %.1fs", r.Stdout, r.ElapsedMS/1000)

		// Started in a directory the guest does not have: before
		// 2026-12-07 the job's chdir failed after the fork, reported
		// as its command not found (127).
		r, err = redirectExec(ctx, l, shareTimeout, nil, append([]string{"/bin/fstool", "exec", "-C", "/run/e2e-cwd", "--"},
			runArgs([]string{"-rootfs", "/"}, "fstool", "cwd")...)...)
		if err != nil {
			return err
		}
		if err := checkRun(t, l, r, 0); err != nil {
			return err
		}
		if !strings.Contains(r.Stdout, "cwd: /\n") || !strings.Contains(r.Stderr, "vmm-init: the job starts in /: /run/e2e-cwd is not a directory in the guest") {
			return reportFailure(l, r, "a job started in L1's /run/e2e-cwd: stdout %q, want cwd / and a line saying why", r.Stdout)
		}
		return nil
	})
}
