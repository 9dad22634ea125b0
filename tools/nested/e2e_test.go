package nested

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/guest"
)

// testKernel is the L1 kernel the real-QEMU tests boot: Debian's cloud
// kernel from vmm's cache, fetched on a fresh machine. Those tests are
// skipped with -short only, never because something is missing.
func testKernel(t *testing.T) *guest.KernelFiles {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real kernel and boots QEMU; skipped with -short")
	}
	k, err := guest.FetchKernel(t.Context(), guest.FlavorCloud, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// e2eConfig skips unless a real L1 can be booted here.
func e2eConfig(t *testing.T) Config {
	t.Helper()
	k := testKernel(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not installed (make host-deps installs it)")
	}
	init := filepath.Join(t.TempDir(), "l1init")
	if err := BuildInit(t.Context(), init); err != nil {
		t.Fatal(err)
	}
	return Config{
		Kernel:     k.BzImage,
		ModulesDir: k.ModulesDir,
		Init:       init,
		// The tools in l1init double as the test programs.
		Files:         map[string]string{"/bin/l1tool": init},
		FreezeTimeout: 60 * time.Second,
		WorkDir:       os.Getenv("NESTED_TEST_WORKDIR"),
	}
}

func TestE2E(t *testing.T) {
	c := e2eConfig(t)
	Retry(t, c, func(l *L1) error {
		t.Logf("L1 boot to agent hello: %v (L1 kernel uptime at hello %.1fs)", l.BootTime, l.Hello.UptimeS)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		step := func(name string, fn func() error) error {
			t0 := time.Now()
			err := fn()
			t.Logf("%s: %v (%v)", name, err == nil, time.Since(t0).Round(time.Millisecond))
			return err
		}

		if err := step("kvm", func() error {
			out, code, err := l.Exec(ctx, "/bin/l1tool", "testkvm")
			if err != nil {
				return err
			}
			// kept_vm: the agent's idle VM (l1init's keepvm.go).
			if code != 0 || !strings.Contains(out, "create_vm=ok kept_vm=ok") {
				t.Errorf("testkvm: status %d, output %q", code, out)
			}
			out, code, err = l.Exec(ctx, "l1tool", "stat", "/dev/kvm", "/nonexistent")
			if err != nil {
				return err
			}
			if code != 1 || !strings.Contains(out, "/dev/kvm: Dc") {
				t.Errorf("stat: status %d, output %q", code, out)
			}
			return nil
		}); err != nil {
			return err
		}

		if err := step("tty echo + exit status", func() error {
			j, err := l.Run(ctx, []string{"/bin/l1tool", "testecho"}, StdinTTY)
			if err != nil {
				return err
			}
			if _, err := j.Expect(regexp.MustCompile(`echo ready tty=true fg=true\r\n`), 30*time.Second); err != nil {
				return err
			}
			if err := j.Send("hello world\r"); err != nil {
				return err
			}
			// The terminal echoes the typed line, then the program answers.
			if _, err := j.Expect(regexp.MustCompile(`hello world\r\necho: hello world\r\n`), 30*time.Second); err != nil {
				return err
			}
			if err := j.Send("exit 3\r"); err != nil {
				return err
			}
			code, err := j.Wait(30 * time.Second)
			if err != nil {
				return err
			}
			if code != 3 {
				t.Errorf("exit status %d, want 3", code)
			}
			return nil
		}); err != nil {
			return err
		}

		if err := step("tty ^C", func() error {
			j, err := l.Run(ctx, []string{"/bin/l1tool", "testecho"}, StdinTTY)
			if err != nil {
				return err
			}
			if _, err := j.Expect(regexp.MustCompile(`echo ready`), 30*time.Second); err != nil {
				return err
			}
			if err := j.Send("\x03"); err != nil {
				return err
			}
			code, err := j.Wait(30 * time.Second)
			if err != nil {
				return err
			}
			if code != 130 {
				t.Errorf("exit status after ^C %d, want 130 (SIGINT)", code)
			}
			return nil
		}); err != nil {
			return err
		}

		for _, mode := range []StdinMode{StdinTTY, StdinPipe} {
			if err := step("raw bytes "+string(mode), func() error {
				j, err := l.Run(ctx, []string{"/bin/l1tool", "testbytes"}, mode)
				if err != nil {
					return err
				}
				if _, err := j.Expect(regexp.MustCompile(`bytes ready\r\n`), 30*time.Second); err != nil {
					return err
				}
				if err := j.Send("\x01x\x03\x00\x1b\rq"); err != nil {
					return err
				}
				if _, err := j.Expect(regexp.MustCompile(regexp.QuoteMeta("<01><78><03><00><1b><0d><71>")), 30*time.Second); err != nil {
					return err
				}
				code, err := j.Wait(30 * time.Second)
				if err != nil {
					return err
				}
				if code != 7 {
					t.Errorf("exit status %d, want 7", code)
				}
				return nil
			}); err != nil {
				return err
			}
		}

		return step("pipe eof", func() error {
			j, err := l.Run(ctx, []string{"/bin/l1tool", "testecho"}, StdinPipe)
			if err != nil {
				return err
			}
			if _, err := j.Expect(regexp.MustCompile(`echo ready tty=false`), 30*time.Second); err != nil {
				return err
			}
			if err := j.Send("line\n"); err != nil {
				return err
			}
			if _, err := j.Expect(regexp.MustCompile(`echo: line\n`), 30*time.Second); err != nil {
				return err
			}
			if err := j.CloseStdin(); err != nil {
				return err
			}
			if _, err := j.Expect(regexp.MustCompile(`echo eof`), 30*time.Second); err != nil {
				return err
			}
			code, err := j.Wait(30 * time.Second)
			if err == nil && code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			return err
		})
	})
}
