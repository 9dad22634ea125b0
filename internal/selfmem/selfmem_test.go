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

// vmFlags is the VmFlags line of the mapping in smaps (proc(5)) that
// holds addr.
func vmFlags(smaps string, addr uint64) (string, error) {
	in := false
	for _, line := range strings.Split(smaps, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && !strings.HasSuffix(f[0], ":") {
			lo, hi, _ := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				return "", fmt.Errorf("smaps: malformed line %q", line)
			}
			in = start <= addr && addr < end
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return line, nil
		}
	}
	return "", fmt.Errorf("smaps: no mapping holds %#x", addr)
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
	for _, tt := range []struct {
		mode, godebug string
		starts        int
		nh            bool
	}{
		{"[always] madvise never\n", "GODEBUG=gctrace=0,disablethp=1", 2, true},
		{"always [madvise] never\n", "GODEBUG=gctrace=0", 1, false},
	} {
		mode := filepath.Join(t.TempDir(), "enabled")
		if err := os.WriteFile(mode, []byte(tt.mode), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // an exec loop fails, not hangs
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", "-test.count=1")
		cmd.Env = append(os.Environ(), childMode+"="+mode, "GODEBUG=gctrace=0")
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("mode %q: child: %v\n%s", tt.mode, err, out)
		}
		pid := fmt.Sprintf("started pid=%d\n", cmd.Process.Pid)
		want := strings.Repeat(pid, tt.starts) + fmt.Sprintf("args=%q\ncomm=%s\n%s\nnh=%v\n",
			[]string{"-test.run=^$", "-test.count=1"}, name, tt.godebug, tt.nh)
		if string(out) != want {
			t.Errorf("mode %q: child printed\n%s\nwant\n%s", tt.mode, out, want)
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
