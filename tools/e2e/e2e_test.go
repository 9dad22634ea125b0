// Package e2e boots real Linux guests with vmm and checks what a user
// sees. On a machine without /dev/kvm (ours, CI's) every boot runs inside
// a nested L1 guest (package nested); the guest is Debian's cloud kernel
// with our u-root initramfs (package guest). The tests are skipped with
// -short, which is how `go test -short ./...` stays quick.
package e2e

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/guest"
	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/tools/e2e/cmd/ptyends/report"
	"github.com/vmm-dev/vmm/tools/nested"
)

// Parallel tests: every nested test boots its own L1 and shares nothing
// with the others but the read-only files TestMain prepares, so they run
// side by side (go test's -parallel, GOMAXPROCS by default). Since the L1
// agent pins each job to one L1 CPU, an L1 keeps about one host core busy,
// so a 2-core host runs two of them at once with little loss each: the
// suite took 17.3 minutes one test at a time and 10 minutes two at a
// time (602-603 s, two full runs, 0 retries each).

// Deadlines for guest waits. Nested boots run under TCG, so these are
// generous; the harness's watchdog catches a frozen L1 much sooner.
const (
	bootTimeout = 3 * time.Minute
	cmdTimeout  = time.Minute
	exitTimeout = 2 * time.Minute
	// freezeTimeout is shorter than all of the above.
	freezeTimeout = 30 * time.Second
)

// readyMarker is what our guest init prints once its devices' drivers are
// loaded and the shell is about to start.
var readyMarker = regexp.MustCompile(`vmm-guest: ready`)

// env is what every test needs, built once by TestMain.
type env struct {
	vmm       string // static vmm binary
	l1tool    string // the L1 agent binary, whose tool modes tests run in L1
	l1        *guest.KernelFiles
	cloud     *guest.KernelFiles
	generic   *guest.KernelFiles
	initramfs string
	gzipped   string // the same initramfs, gzip-compressed
	// iotoolInitramfs is the initramfs with vmm-iotool (guest.AddIotool),
	// for the tests that drive it.
	iotoolInitramfs string
	crasher         string // a bzImage whose 64-bit entry is ud2 with no IDT
	dir             string
}

var setup env // set once in TestMain, read-only afterwards

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped with -short")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vmm-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	if err := prepare(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: setup:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func prepare(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	setup.dir = dir
	setup.vmm = filepath.Join(dir, "vmm")
	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(thisFile))) // tools/e2e/x.go -> the module root
	if err := nested.BuildVMM(ctx, root, setup.vmm); err != nil {
		return err
	}
	setup.l1tool = filepath.Join(dir, "l1tool")
	if err := nested.BuildInit(ctx, setup.l1tool); err != nil {
		return err
	}
	var err error
	if setup.cloud, err = guest.FetchKernel(ctx, "cloud", ""); err != nil {
		return err
	}
	if setup.generic, err = guest.FetchKernel(ctx, "generic", ""); err != nil {
		return err
	}
	setup.l1 = setup.cloud
	setup.initramfs = filepath.Join(dir, "initrd.cpio")
	if err := guest.BuildInitramfs(ctx, guest.InitramfsOptions{Out: setup.initramfs, Kernel: setup.cloud, TempDir: dir}); err != nil {
		return err
	}
	setup.iotoolInitramfs = filepath.Join(dir, "initrd-iotool.cpio")
	if err := guest.AddIotool(ctx, setup.initramfs, setup.iotoolInitramfs); err != nil {
		return err
	}
	setup.crasher = filepath.Join(dir, "crasher")
	if err := os.WriteFile(setup.crasher, testkernel.Build(testkernel.Options{Entry64: []byte{0x0f, 0x0b}}), 0o644); err != nil {
		return err
	}
	setup.gzipped = setup.initramfs + ".gz"
	return gzipFile(setup.initramfs, setup.gzipped)
}

// gzipFile writes a gzip-compressed copy of src: distro initramfs images
// are compressed, and vmm must hand any format through untouched.
func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return fmt.Errorf("gzip %s: %w", src, err)
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return fmt.Errorf("gzip %s: %w", src, err)
	}
	return out.Close()
}

// l1Config puts vmm, both guest kernels and the initramfs into L1.
func l1Config(t *testing.T) nested.Config {
	if testing.Short() {
		t.Skip("boots nested guests")
	}
	files := map[string]string{
		"/vmm":               setup.vmm,
		"/bin/l1tool":        setup.l1tool,
		"/guest/bzImage":     setup.cloud.BzImage,
		"/guest/generic":     setup.generic.BzImage,
		"/guest/initrd.cpio": setup.initramfs,
		"/guest/initrd.gz":   setup.gzipped,
		"/guest/crasher":     setup.crasher,
	}
	maps.Copy(files, nested.Helpers(setup.vmm))
	return nested.Config{
		Kernel:     setup.l1.BzImage,
		ModulesDir: setup.l1.ModulesDir,
		Files:      files,
		// The agent beats every 2 s, so 30 s of silence means L1 froze
		// (QEMU TCG's nested SVM does that now and then). It must be
		// shorter than every deadline below, so a freeze is reported as
		// one, and retried, rather than as a test timing out.
		FreezeTimeout: freezeTimeout,
	}
}

// vmmArgs is the mission's command line inside L1, plus extra flags.
func vmmArgs(extra ...string) []string {
	return append([]string{"/vmm", "-kernel", "/guest/bzImage", "-initrd", "/guest/initrd.cpio"}, extra...)
}

// iotoolConfig is l1Config with the initramfs that has vmm-iotool in
// place of the default one (at the same path, so vmmArgs and runArgs
// boot it), for the tests that drive vmm-iotool: the default, like a
// `vmm run` user's, has none.
func iotoolConfig(t *testing.T) nested.Config {
	c := l1Config(t)
	c.Files["/guest/initrd.cpio"] = setup.iotoolInitramfs
	return c
}

// shell sends a command line and waits for a pattern in its output.
func shell(j *nested.Job, cmd string, want *regexp.Regexp) (string, error) {
	if err := j.Send(cmd + "\n"); err != nil {
		return "", err
	}
	return j.Expect(want, cmdTimeout)
}

// waitExit waits for vmm to end and checks its status.
func waitExit(j *nested.Job, want int) error {
	code, err := j.Wait(exitTimeout)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("vmm exited with status %d, want %d", code, want)
	}
	return nil
}

// The mission: the default guest boots to u-root's shell on the serial
// console, runs commands typed on a terminal, and exit ends vmm with
// status 0.
func TestBootToShellAndPoweroff(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), vmmArgs(), nested.StdinTTY)
		if err != nil {
			return err
		}
		if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
			return err
		}
		// The arithmetic proves the shell ran the command; an echo of
		// the typed line would not contain 42.
		if _, err := shell(j, "echo hi-$((6*7))", regexp.MustCompile(`hi-42`)); err != nil {
			return err
		}
		if _, err := shell(j, "ls /; echo ls-done", regexp.MustCompile(`(?s)bin.*ls-done`)); err != nil {
			return err
		}
		// exit ends the console's shell, and vmm-init then powers the
		// guest off: vmm ends with status 0.
		if err := j.Send("exit\n"); err != nil {
			return err
		}
		return waitExit(j, 0)
	})
}

// -smp 2 -m 768M: the guest sees two CPUs (ACPI MADT on a kernel without
// MP tables) and that much memory.
func TestSMPAndMemory(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), vmmArgs("-smp", "2", "-m", "768M", "-append", "quiet"), nested.StdinTTY)
		if err != nil {
			return err
		}
		if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
			return err
		}
		if _, err := shell(j, "cat /proc/cpuinfo; echo cpuinfo-done", regexp.MustCompile(`(?s)processor\s*:\s*1\b.*cpuinfo-done`)); err != nil {
			return fmt.Errorf("second CPU not in /proc/cpuinfo: %w", err)
		}
		out, err := shell(j, "cat /proc/meminfo", regexp.MustCompile(`MemTotal:\s*(\d+) kB`))
		if err != nil {
			return err
		}
		kb, _ := strconv.Atoi(regexp.MustCompile(`MemTotal:\s*(\d+) kB`).FindStringSubmatch(out)[1])
		// The kernel keeps some for itself: expect 90-100% of 768 MiB.
		if kb > 768*1024 || kb < 768*1024*9/10 {
			return fmt.Errorf("MemTotal %d kB, want about 768 MiB", kb)
		}
		if err := j.Send("poweroff\n"); err != nil {
			return err
		}
		return waitExit(j, 0)
	})
}

// 4 GiB of RAM straddles the 32-bit MMIO hole, so part of it lives above
// 4 GiB; the initramfs is gzip-compressed, a format our builder does not
// produce but the kernel unpacks. The kernel comes through an empty
// kernel cache: the vmm-unpack helper beside vmm decompresses it into the
// cache, and vmm boots that vmlinux at startup_64, which the guest shows
// as a kernel text not moved by KASLR (the bzImage's decompressor would
// have moved it).
func TestMemoryAboveHoleAndGzipInitrd(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := l1Config(t)
	c.MemoryMiB = 6 << 10 // vmm refuses more guest RAM than its host has
	nested.Retry(t, c, func(l *nested.L1) error {
		j, err := l.Run(t.Context(), []string{"/vmm", "-kernel", "/guest/bzImage", "-initrd", "/guest/initrd.gz", "-m", "4G", "-append", "quiet", "-kernel-cache", "/tmp/kernel-cache"}, nested.StdinTTY)
		if err != nil {
			return err
		}
		out, err := j.Expect(readyMarker, bootTimeout)
		if err != nil {
			return err
		}
		if strings.Contains(out, "kernel cache") {
			return fmt.Errorf("vmm said something about the kernel cache:\n%s", out)
		}
		// __START_KERNEL_map + LOAD_PHYSICAL_ADDR: the vmlinux's own
		// link address.
		text := regexp.MustCompile(`([0-9a-f]{16}) T _text\b`)
		out, err = shell(j, "grep \" T _text$\" /proc/kallsyms", text)
		if err != nil {
			return err
		}
		if addr := text.FindStringSubmatch(out)[1]; addr != "ffffffff81000000" {
			return fmt.Errorf("the guest's kernel text is at %s, not where the vmlinux is linked: the cached vmlinux was not booted", addr)
		}
		memTotal := regexp.MustCompile(`MemTotal:\s*(\d+) kB`)
		out, err = shell(j, "cat /proc/meminfo", memTotal)
		if err != nil {
			return err
		}
		kb, _ := strconv.Atoi(memTotal.FindStringSubmatch(out)[1])
		if kb > 4<<20 || kb < 4<<20*9/10 {
			return fmt.Errorf("MemTotal %d kB, want about 4 GiB", kb)
		}
		if err := j.Send("poweroff\n"); err != nil {
			return err
		}
		return waitExit(j, 0)
	})
}

// Debian's generic kernel (a different config from the cloud one) boots
// with the same initramfs; its modules do not match, which our init
// reports and survives.
func TestGenericKernel(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		// Its payload is xz with the x86 BCJ filter, which vmm-unpack
		// decodes: with a kernel cache, vmm fills it and boots the
		// vmlinux, quietly. (The test checks the quiet and the boot,
		// not that the cache was used.)
		j, err := l.Run(t.Context(), []string{"/vmm", "-kernel", "/guest/generic", "-initrd", "/guest/initrd.cpio", "-append", "quiet", "-kernel-cache", "/tmp/kernel-cache"}, nested.StdinTTY)
		if err != nil {
			return err
		}
		out, err := j.Expect(readyMarker, bootTimeout)
		if err != nil {
			return err
		}
		if strings.Contains(out, "kernel cache") {
			return fmt.Errorf("vmm said something about the kernel cache:\n%s", out)
		}
		if _, err := shell(j, "uname -r", regexp.MustCompile(`6\.\d+\.\d+-\d+-amd64`)); err != nil {
			return err
		}
		if err := j.Send("poweroff\n"); err != nil {
			return err
		}
		return waitExit(j, 0)
	})
}

// stdin as a pipe (a CI job feeding commands): input is forwarded, and a
// reboot from the guest also ends vmm with status 0.
func TestStdinPipeAndReboot(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), vmmArgs("-append", "quiet"), nested.StdinPipe)
		if err != nil {
			return err
		}
		if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
			return err
		}
		if _, err := shell(j, "echo piped-$((2+3))", regexp.MustCompile(`piped-5`)); err != nil {
			return err
		}
		if err := j.Send("reboot\n"); err != nil {
			return err
		}
		return waitExit(j, 0)
	})
}

// stdin at EOF from the start (/dev/null) does not stop the guest; on a
// terminal (a pty that tools/e2e/cmd/ptyends makes vmm's controlling
// terminal, as a login shell would) vmm runs in raw mode, so Ctrl-C
// interrupts the guest's command and not vmm, Ctrl-A x quits with status
// 0, and the terminal's mode is exactly what it was once vmm has exited,
// after Ctrl-A x and after SIGTERM alike.
func TestNullStdinAndTerminal(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, ciConfig(t, map[string]string{"/bin/ptyends": ciBuild(t).ptyends}), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), vmmArgs("-append", "quiet"), nested.StdinNull)
		if err != nil {
			return err
		}
		if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
			return err
		}
		// Nothing to type into: the guest must still be alive and the
		// shell prompt up.
		if err := killJob(l, j); err != nil {
			return err
		}
		for _, tc := range []struct {
			name  string
			steps []string
			exit  int
		}{
			{"Ctrl-C then Ctrl-A x", []string{
				"expect:" + readyMarker.String(), "mode",
				// The guest's sleep is running once its echo is out
				// (the pause covers the shell's fork); without
				// Ctrl-C reaching it, the uptime never comes.
				`send:"echo sleep-start; sleep 600\n"`, `expect:sleep-start\r?\n`, "pause:2s",
				`send:"\x03"`, `send:"cat /proc/uptime\n"`, `expect:\d+\.\d+ \d+\.\d+`,
				`send:"\x01x"`,
			}, 0},
			{"SIGTERM", []string{"expect:" + readyMarker.String(), "mode", "signal:TERM"}, 128 + 15},
		} {
			// Three expects of at most 2 minutes and the 1-minute
			// wait for vmm's exit fit in redirect's 8 minutes, so a
			// failure always comes with ptyends' report.
			args := append(append([]string{"/bin/ptyends", "-step-timeout", "2m", "-exit-timeout", "1m"}, tc.steps...), "--")
			args = append(args, vmmArgs("-append", "quiet", "-timeout", "5m")...)
			r, err := redirectExec(t.Context(), l, 8*time.Minute, nil, args...)
			if err != nil {
				return err
			}
			var p report.Report
			out := strings.TrimRight(r.Stdout, "\n")
			if err := json.Unmarshal([]byte(out[strings.LastIndex(out, "\n")+1:]), &p); err != nil {
				return reportFailure(l, r, "%s: no report from ptyends: %v", tc.name, err)
			}
			// vmm's console and messages went to the pty, not to
			// redirect's report, so what tells an emulator crash
			// (which the harness retries) from a defect is there.
			fail := func(format string, args ...any) error {
				err := reportFailure(l, r, tc.name+": "+format, args...)
				if line := nested.GuestCrash(p.Output); line != "" && !errors.Is(err, nested.ErrGuestCrashed) {
					return fmt.Errorf("%w (%s): %w", nested.ErrGuestCrashed, line, err)
				}
				return err
			}
			switch {
			case p.Error != "":
				return fail("ptyends: %s", p.Error)
			case p.Failed != "":
				return fail("step %s; the terminal's output ends:\n%s", p.Failed, p.Output)
			case len(p.Raw) != 1 || !p.Raw[0]:
				return fail("the terminal was not in raw mode while the guest ran (%v)", p.Raw)
			case p.Exit != tc.exit:
				return fail("vmm exited with status %d, want %d (-1: still running after the steps, killed); the terminal's output ends:\n%s", p.Exit, tc.exit, p.Output)
			case !p.Restored:
				return fail("the terminal's mode was not restored: c_lflag %#x before, %#x after", p.Before, p.After)
			}
		}
		return nil
	})
}

// killJob stops a vmm that has no stdin with SIGTERM, which must end it
// with 128+15 after stopping the guest.
func killJob(l *nested.L1, j *nested.Job) error {
	out, code, err := l.Exec(context.Background(), "/bin/l1tool", "signal", "15", "vmm")
	if err != nil || code != 0 {
		return fmt.Errorf("kill vmm in L1: status %d, %v: %s", code, err, out)
	}
	return waitExit(j, 128+15)
}

// Bad command lines inside L1, where /dev/kvm exists: one line naming the
// problem and a non-zero status.
func TestBadCommandLines(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		tests := []struct {
			args   []string
			status int
			want   *regexp.Regexp
		}{
			{[]string{"/vmm", "-kernel", "/nonexistent"}, 1, regexp.MustCompile(`vmm: kernel: open /nonexistent: no such file`)},
			{[]string{"/vmm", "-kernel", "/guest/initrd.cpio"}, 1, regexp.MustCompile(`vmm: kernel /guest/initrd.cpio: .*`)},
			{[]string{"/vmm", "-kernel", "/guest/bzImage", "-m", "0"}, 2, regexp.MustCompile(`vmm: -m "0": .*`)},
			{[]string{"/vmm", "-kernel", "/guest/bzImage", "-smp", "0"}, 2, regexp.MustCompile(`vmm: -smp 0: .*`)},
			{[]string{"/vmm", "-kernel", "/guest/bzImage", "-smp", "100000"}, 2, regexp.MustCompile(`vmm: -smp 100000: vmm supports at most 254 vCPUs`)},
			{[]string{"/vmm", "-kernel", "/guest/bzImage", "-hda", "/guest/initrd.cpio"}, 2, regexp.MustCompile(`vmm: unknown flag: -hda`)},
		}
		for _, tt := range tests {
			j, err := l.Run(t.Context(), tt.args, nested.StdinNull)
			if err != nil {
				return err
			}
			if _, err := j.Expect(tt.want, cmdTimeout); err != nil {
				return fmt.Errorf("%v: %w", tt.args, err)
			}
			if err := waitExit(j, tt.status); err != nil {
				return fmt.Errorf("%v: %w", tt.args, err)
			}
		}
		return nil
	})
}

// A guest that crashes (its first instruction is invalid and there is no
// IDT, so the CPU triple-faults) ends vmm with status 1 and a message:
// with its registers, or, on AMD (the nested mode), where KVM resets the
// vCPU before reporting the shutdown, saying they are lost. If
// vmm hangs instead, SIGQUIT makes it print its goroutines, so the
// failure shows where.
func TestCrashingGuest(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), []string{"/vmm", "-kernel", "/guest/crasher"}, nested.StdinNull)
		if err != nil {
			return err
		}
		if _, err := j.Expect(regexp.MustCompile(`vmm: vCPU 0: guest triple fault \(KVM_EXIT_SHUTDOWN\)( at RIP=| \(registers lost: KVM resets the vCPU)`), cmdTimeout); err != nil {
			if errors.Is(err, nested.ErrFrozen) {
				return err // the whole L1 froze: Retry runs this again
			}
			l.Exec(context.Background(), "/bin/l1tool", "signal", "3", "vmm")
			if _, qerr := j.Expect(regexp.MustCompile(`goroutine \d+`), 10*time.Second); qerr == nil {
				time.Sleep(2 * time.Second) // let the whole dump arrive
			}
			return fmt.Errorf("%w\nafter SIGQUIT:\n%s", err, l.ConsoleTail(100))
		}
		return waitExit(j, 1)
	})
}

// -timeout stops a guest that would run forever (here: a shell waiting on
// an empty stdin) with status 124 and one line saying why and where the
// vCPU was.
func TestTimeout(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	nested.Retry(t, l1Config(t), func(l *nested.L1) error {
		j, err := l.Run(t.Context(), vmmArgs("-append", "quiet", "-timeout", "15s"), nested.StdinNull)
		if err != nil {
			return err
		}
		// Where the guest was: idle in its kernel, most likely, but a
		// nested boot may still be under way.
		if _, err := j.Expect(regexp.MustCompile(`vmm: guest stopped: -timeout 15s reached`+vcpu0Place+`\r?\n`), exitTimeout); err != nil {
			return err
		}
		return waitExit(j, 124)
	})
}

// On this host there is no /dev/kvm: vmm says so in one line, with the
// way out, and fails.
func TestNoKVMOnHost(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the guest kernel")
	}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		t.Skip("this host has /dev/kvm")
	}
	cmd := exec.Command(setup.vmm, "-kernel", setup.cloud.BzImage, "-initrd", setup.initramfs)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("status %v, output %q", err, out)
	}
	if !regexp.MustCompile(`^vmm: /dev/kvm: .*no such file.*nested.*\n$`).Match(out) {
		t.Fatalf("output %q: want one line about /dev/kvm mentioning the nested mode", out)
	}
}
