package helperbin

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Find takes the helper beside the executable when it may be executed,
// else the one in $PATH, else says where it looked.
func TestFind(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	const name = "vmm-helperbin-test-helper"
	beside := filepath.Join(filepath.Dir(exe), name)
	t.Cleanup(func() { os.Remove(beside) })
	inPath := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(inPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := Find(name, "testing runs in"); err == nil || err.Error() != "testing runs in the "+name+" helper, which is neither next to vmm nor in $PATH (make vmm builds it)" {
		t.Fatalf("nowhere: %v", err)
	}
	// Beside the executable but not executable (a copy that lost its
	// mode): passed over for $PATH's.
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Skipf("cannot write beside the test binary: %v", err)
	}
	t.Setenv("PATH", filepath.Dir(inPath))
	if got, err := Find(name, "testing runs in"); err != nil || got != inPath {
		t.Fatalf("beside, not executable: %q, %v; want %s", got, err, inPath)
	}
	if err := os.Chmod(beside, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Find(name, "testing runs in"); err != nil || got != beside {
		t.Fatalf("beside: %q, %v; want %s", got, err, beside)
	}
}

// A relative $PATH entry, the current directory among them, is never
// searched: the helper would depend on where vmm was started.
func TestFindSkipsRelativePath(t *testing.T) {
	const name = "vmm-helperbin-test-relative"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, path := range []string{".", ":", "./", "a/.."} {
		t.Setenv("PATH", path)
		if got, err := Find(name, "testing runs in"); err == nil {
			t.Errorf("PATH %q: found %q", path, got)
		}
	}
}

// startEnv makes this test binary the child TestStart starts: it writes
// what it was given to its descriptor 3.
const startEnv = "VMM_HELPERBIN_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(startEnv) != "" {
		os.Exit(startChild())
	}
	os.Exit(m.Run())
}

func startChild() int {
	report := os.NewFile(3, "report")
	var null unix.Stat_t
	if err := unix.Stat(os.DevNull, &null); err != nil {
		return 3
	}
	for fd := range 3 {
		var st unix.Stat_t
		isNull := unix.Fstat(fd, &st) == nil && st.Rdev == null.Rdev && st.Mode&unix.S_IFMT == unix.S_IFCHR
		fmt.Fprintf(report, "fd%d null=%v\n", fd, isNull)
	}
	pgid, _ := unix.Getpgid(0)
	fmt.Fprintf(report, "own group=%v\n", pgid == os.Getpid())
	fmt.Fprintf(report, "args=%q\n", os.Args[1:])
	fmt.Fprintf(report, "env=%d\n", len(os.Environ()))
	return 0
}

// Start gives the helper /dev/null for a standard descriptor it was not
// given, the others as they are, its own process group, and vmm's
// environment or the one asked for.
func TestStart(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	t.Setenv(startEnv, "1")
	for _, tt := range []struct {
		name  string
		files func(report *os.File) []*os.File
		env   []string
		want  string
	}{
		{"none given", func(r *os.File) []*os.File { return []*os.File{nil, nil, nil, r} }, []string{startEnv + "=1"},
			"fd0 null=true\nfd1 null=true\nfd2 null=true\nown group=true\nargs=[\"a\" \"b c\"]\nenv=1\n"},
		{"stderr given", func(r *os.File) []*os.File { return []*os.File{nil, nil, r, r} }, nil,
			"fd0 null=true\nfd1 null=true\nfd2 null=false\nown group=true\nargs=[\"a\" \"b c\"]\nenv=" + strconv.Itoa(len(os.Environ())) + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			p, err := Start(exe, []string{"a", "b c"}, tt.files(w), tt.env, syscall.SysProcAttr{})
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r)
			<-p.Exited()
			st, err := p.State()
			p.Release()
			if err != nil || !st.Success() {
				t.Fatalf("child: %v, %v", st, err)
			}
			if string(got) != tt.want {
				t.Errorf("child saw %q, want %q", got, tt.want)
			}
		})
	}
}
