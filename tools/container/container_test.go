package container

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// probeEnv makes the test binary, started as a container's program, run
// probe instead of the tests.
const probeEnv = "CONTAINER_TEST_PROBE=1"

// nsNames are the namespaces the probe reports (/proc/self/ns).
var nsNames = []string{"user", "pid", "mnt", "uts", "ipc", "net", "cgroup"}

func TestMain(m *testing.M) {
	Init()
	if os.Getenv("CONTAINER_TEST_PROBE") == "1" {
		probe()
		return
	}
	os.Exit(m.Run())
}

// probe prints what the container looks like from inside, then a marker,
// then waits to be killed (as an init would keep running).
func probe() {
	for _, n := range nsNames {
		l, err := os.Readlink("/proc/self/ns/" + n)
		fmt.Printf("ns %s %s %v\n", n, l, err)
	}
	h, _ := os.Hostname()
	fmt.Printf("pid %d\nuid %d\nhostname %s\ncontainer %s\n", os.Getpid(), os.Getuid(), h, os.Getenv("container"))
	_, err := os.Stat("/only-in-rootfs")
	fmt.Printf("rootfs-file %v\n", err == nil)
	_, err = os.Stat("/bin/go") // a host path that the rootfs lacks
	fmt.Printf("host-visible %v\n", err == nil)
	fmt.Println("probe-ready")
	time.Sleep(time.Minute)
}

// rootfs unpacks an archive holding this test binary as /probe.
func rootfs(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			t.Skip("the test binary is dynamically linked; the probe needs a static one (CGO_ENABLED=0)")
		}
	}
	f.Close()
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	arch := newcBytes([]rec{
		{name: "probe", mode: modeReg | 0o755, data: string(exe)},
		{name: "only-in-rootfs", mode: modeReg | 0o644, data: "yes"},
	}, true)
	if _, err := Unpack(bytes.NewReader(arch), root); err != nil {
		t.Fatal(err)
	}
	return root
}

func canContain(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/self/ns/user"); err != nil {
		t.Skipf("no user namespaces: %v", err)
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		t.Skip("user namespaces disabled (user.max_user_namespaces = 0)")
	}
}

// run starts a probe container and returns its report.
func run(t *testing.T, c Config) (*Container, map[string]string) {
	t.Helper()
	c.Args = []string{"/probe"}
	c.Env = []string{probeEnv}
	pr, pw := io.Pipe()
	c.Stdout = pw
	var stderr bytes.Buffer
	c.Stderr = &stderr
	ct, err := Start(c)
	if errors.Is(err, unix.EPERM) || (err != nil && strings.Contains(err.Error(), "operation not permitted")) {
		t.Skipf("cannot create namespaces here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ct.Kill()
		if err := ct.Wait(); err == nil {
			t.Error("probe exited with status 0 after SIGKILL")
		}
		if ct.Cgroup() != "" {
			if _, err := os.Stat(ct.Cgroup()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s left behind: %v", ct.Cgroup(), err)
			}
		}
	})
	got := map[string]string{}
	sc := bufio.NewScanner(pr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sc.Scan() {
			if sc.Text() == "probe-ready" {
				return
			}
			k, v, _ := strings.Cut(sc.Text(), " ")
			if k == "ns" { // "ns NAME LINK ERR"
				f := strings.Fields(v)
				if len(f) >= 2 {
					k, v = "ns "+f[0], f[1]
				}
			}
			got[k] = v
		}
	}()
	select {
	case <-done:
	case <-ct.Done():
		t.Fatalf("probe exited early: %v\n%s", ct.Wait(), stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("no probe-ready in 30 s; stderr:\n%s", stderr.String())
	}
	go io.Copy(io.Discard, pr)
	if ct.ExecAt.Before(ct.StartedAt) {
		t.Errorf("ExecAt %v before StartedAt %v", ct.ExecAt, ct.StartedAt)
	}
	return ct, got
}

// The container's namespaces all differ from the host's, it is PID 1 and
// root inside, sees its own root directory and hostname, and knows it is
// a container.
func TestNamespacesDiffer(t *testing.T) {
	canContain(t)
	_, got := run(t, Config{Root: rootfs(t), Hostname: "probe-host"})
	for _, n := range nsNames {
		host, err := os.Readlink("/proc/self/ns/" + n)
		if err != nil {
			t.Fatal(err)
		}
		inside := got["ns "+n]
		if !strings.HasPrefix(inside, n+":[") {
			t.Errorf("namespace %s inside: %q", n, inside)
			continue
		}
		if inside == host {
			t.Errorf("namespace %s is the host's (%s)", n, host)
		}
	}
	want := map[string]string{
		"pid": "1", "uid": "0", "hostname": "probe-host", "container": "vmm",
		"rootfs-file": "true", "host-visible": "false",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q inside, want %q", k, got[k], v)
		}
	}
}

// With limits, the container's PID 1 lives in a new cgroup whose
// memory.max and cpu.max match the VM's -m and -smp.
func TestCgroupLimits(t *testing.T) {
	canContain(t)
	mount, err := CgroupMount(false)
	if err == nil {
		var b []byte
		b, err = os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
		if err == nil && !(strings.Contains(string(b), "memory") && strings.Contains(string(b), "cpu")) {
			err = fmt.Errorf("controllers %q at %s lack memory or cpu (bound to cgroup v1)", strings.TrimSpace(string(b)), mount)
		}
	}
	if err != nil {
		t.Skipf("no usable cgroup v2 hierarchy on this host: %v", err)
	}
	lim := Limits{MemoryBytes: 256 << 20, CPUs: 2}
	ct, _ := run(t, Config{Root: rootfs(t), Limits: lim})
	cg := ct.Cgroup()
	if cg == "" {
		t.Fatal("no cgroup created")
	}
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(cg, f))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if v := read("memory.max"); v != strconv.Itoa(256<<20) {
		t.Errorf("memory.max %s", v)
	}
	if v := read("cpu.max"); v != "200000 100000" {
		t.Errorf("cpu.max %q", v)
	}
	if procs := strings.Fields(read("cgroup.procs")); len(procs) != 1 || procs[0] != strconv.Itoa(ct.Pid()) {
		t.Errorf("cgroup.procs %v, want [%d]", procs, ct.Pid())
	}
	self, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ct.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(mount, cg)
	if !strings.Contains(string(self), "0::/"+rel) {
		t.Errorf("/proc/%d/cgroup = %q, want 0::/%s", ct.Pid(), self, rel)
	}
}

func TestStartErrors(t *testing.T) {
	canContain(t)
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"no root", Config{Args: []string{"/init"}}, "need a root directory"},
		{"relative program", Config{Root: "/", Args: []string{"init"}}, "absolute program path"},
		{"missing program", Config{Root: t.TempDir(), Args: []string{"/nope"}}, "setup: exec /nope: no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, err := Start(tt.c)
			if err == nil {
				ct.Kill()
				ct.Wait()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}
