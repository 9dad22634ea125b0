package selfmem

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReexecEnv(t *testing.T) {
	base := []string{"HOME=/root", "PATH=/bin"}
	with := func(kv ...string) []string { return append(slices.Clone(base), kv...) }
	for _, tt := range []struct {
		name string
		mode string
		env  []string
		want []string // nil: no exec
	}{
		{"always, no GODEBUG", "[always] madvise never\n", base, with("GODEBUG=disablethp=1")},
		{"always, other settings kept", "[always] madvise never\n", with("GODEBUG=gctrace=1"), with("GODEBUG=gctrace=1,disablethp=1")},
		{"always, empty GODEBUG", "[always] madvise never\n", with("GODEBUG="), with("GODEBUG=disablethp=1")},
		{"always, already set", "[always] madvise never\n", with("GODEBUG=gctrace=1,disablethp=1"), nil},
		{"always, the user's 0 stands", "[always] madvise never\n", with("GODEBUG=disablethp=0"), nil},
		{"always, only the first GODEBUG counts", "[always] madvise never\n", with("GODEBUG=x=1", "GODEBUG=disablethp=1"), with("GODEBUG=x=1,disablethp=1", "GODEBUG=disablethp=1")},
		{"a setting that only ends in the name", "[always] madvise never\n", with("GODEBUG=nodisablethp=1"), with("GODEBUG=nodisablethp=1,disablethp=1")},
		{"madvise", "always [madvise] never\n", base, nil},
		{"never", "always madvise [never]\n", base, nil},
		{"no mode", "", base, nil},
	} {
		got, ok := reexecEnv(tt.mode, tt.env)
		if ok != (tt.want != nil) || !slices.Equal(got, tt.want) {
			t.Errorf("%s: reexecEnv = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

// childMode names the file that a child run of this test binary reads
// as the kernel's huge-page mode; see TestMain.
const childMode = "SELFMEM_TEST_MODE"

// TestMain is, in a child started by TestExecWithoutHugePages, that
// child: it calls execWithoutHugePages as vmm's main does, then reports
// its GODEBUG and whether the runtime advised its heap MADV_NOHUGEPAGE
// (the nh flag in /proc/self/smaps) after growing it.
func TestMain(m *testing.M) {
	mode := os.Getenv(childMode)
	if mode == "" {
		os.Exit(m.Run())
	}
	// Before the exec and again in the image it starts, if it does.
	fmt.Printf("started pid=%d\n", os.Getpid())
	if err := execWithoutHugePages(mode); err != nil {
		fmt.Println("exec:", err)
		os.Exit(1)
	}
	heap := make([][]byte, 0, 64)
	for range 64 {
		heap = append(heap, make([]byte, 128<<10))
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// %p gives the address without package unsafe.
	addr, err := strconv.ParseUint(strings.TrimPrefix(fmt.Sprintf("%p", &heap[63][0]), "0x"), 16, 64)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	runtime.KeepAlive(heap)
	flags, err := vmFlags(string(smaps), addr)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// Every thread's name, as top -H shows them.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for _, task := range tasks {
		if c, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "comm")); err == nil && !bytes.Equal(c, comm) {
			fmt.Printf("thread %s is named %q\n", task.Name(), c)
		}
	}
	fmt.Printf("args=%q\ncomm=%s", os.Args[1:], comm)
	fmt.Printf("GODEBUG=%s\nnh=%v\n", os.Getenv("GODEBUG"), slices.Contains(strings.Fields(flags), "nh"))
	os.Exit(0)
}

// TestExecWithoutHugePages runs this test binary as a child that sees
// the mode given, and checks that it executed itself again only for
// "always", once, as the same process with the same arguments and name,
// and that the runtime then kept its heap out of huge pages.
func TestExecWithoutHugePages(t *testing.T) {
	if _, err := os.Stat(thpEnabled); err != nil {
		t.Skipf("no transparent huge pages here (%v): the runtime has no advice to give", err)
	}
	name := filepath.Base(os.Args[0])
	if len(name) > commLen {
		name = name[:commLen]
	}
	// This test binary again, linked as vmm is (LDFlags): its runtime
	// starts with disablethp set, so it has no reason to execute itself.
	linked := filepath.Join(t.TempDir(), "linked.test")
	build := exec.CommandContext(t.Context(), "go", "test", "-c", "-ldflags="+LDFlags, "-o", linked, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c -ldflags=%s: %v\n%s", LDFlags, err, out)
	}
	for _, tt := range []struct {
		bin, mode, godebug string
		starts             int
		nh                 bool
	}{
		{os.Args[0], "[always] madvise never\n", "GODEBUG=gctrace=0,disablethp=1", 2, true},
		{os.Args[0], "always [madvise] never\n", "GODEBUG=gctrace=0", 1, false},
		{linked, "[always] madvise never\n", "GODEBUG=gctrace=0", 1, true},
	} {
		mode := filepath.Join(t.TempDir(), "enabled")
		if err := os.WriteFile(mode, []byte(tt.mode), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // an exec loop fails, not hangs
		cmd := exec.CommandContext(ctx, tt.bin, "-test.run=^$", "-test.count=1")
		cmd.Env = append(os.Environ(), childMode+"="+mode, "GODEBUG=gctrace=0")
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("mode %q: child: %v\n%s", tt.mode, err, out)
		}
		pid := fmt.Sprintf("started pid=%d\n", cmd.Process.Pid)
		comm := name
		if tt.bin == linked {
			comm = filepath.Base(linked)
		}
		want := strings.Repeat(pid, tt.starts) + fmt.Sprintf("args=%q\ncomm=%s\n%s\nnh=%v\n",
			[]string{"-test.run=^$", "-test.count=1"}, comm, tt.godebug, tt.nh)
		if string(out) != want {
			t.Errorf("%s, mode %q: child printed\n%s\nwant\n%s", filepath.Base(tt.bin), tt.mode, out, want)
		}
	}
}

// A kernel without transparent huge pages has no mode file: nothing is
// executed, and no error.
func TestExecWithoutHugePagesNoTHP(t *testing.T) {
	if err := execWithoutHugePages(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Fatal(err)
	}
}

// TestMakefileLinksLDFlags checks that `make vmm`, the build the README
// gives, links vmm with LDFlags.
func TestMakefileLinksLDFlags(t *testing.T) {
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	want := "build -ldflags=" + LDFlags + " -o $(BUILD)/vmm ./cmd/vmm"
	if !strings.Contains(string(b), want) {
		t.Fatalf("the Makefile does not build vmm with %q", want)
	}
}
