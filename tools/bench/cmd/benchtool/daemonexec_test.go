package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary stands in for benchtool (BENCHTOOL_MAIN) and for a
// daemon (BENCHTOOL_FAKE_DAEMON: "listen" makes its socket, prints its pid
// and waits to be killed; "exit" fails at once).
func TestMain(m *testing.M) {
	switch os.Getenv("BENCHTOOL_FAKE_DAEMON") {
	case "listen":
		l, err := net.Listen("unix", os.Args[1])
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		defer l.Close()
		fmt.Printf("pid %d\n", os.Getpid())
		time.Sleep(time.Minute) // the test kills it long before
		os.Exit(0)
	case "silent": // never listens
		fmt.Printf("pid %d\n", os.Getpid())
		time.Sleep(time.Minute)
		os.Exit(0)
	case "exit":
		fmt.Println("fake daemon: bad option")
		os.Exit(4)
	}
	if os.Getenv("BENCHTOOL_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseDaemonExec(t *testing.T) {
	for _, c := range []struct {
		args []string
		want daemonExecArgs
		err  string
	}{
		{args: []string{"/s", "/l", "d", "-o", "x", "--", "q", "-m", "256"}, want: daemonExecArgs{socket: "/s", log: "/l", daemon: []string{"d", "-o", "x"}, vmm: []string{"q", "-m", "256"}}},
		// Only the first -- splits: the VMM may take one itself.
		{args: []string{"/s", "/l", "d", "--", "q", "--", "x"}, want: daemonExecArgs{socket: "/s", log: "/l", daemon: []string{"d"}, vmm: []string{"q", "--", "x"}}},
		{args: []string{"/s"}, err: "usage"},
		{args: []string{"/s", "/l", "d", "q"}, err: "no --"},
		{args: []string{"/s", "/l", "--", "q"}, err: "must not be empty"},
		{args: []string{"/s", "/l", "d", "--"}, err: "must not be empty"},
		{args: []string{"", "/l", "d", "--", "q"}, err: "empty socket"},
	} {
		got, err := parseDaemonExec(c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one containing %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %+v %v, want %+v", c.args, got, err, c.want)
		}
	}
}

// A daemon that exits before it listens is an error quoting its log;
// one that never listens is killed at the deadline.
func TestStartDaemonFails(t *testing.T) {
	dir := t.TempDir()
	a := daemonExecArgs{socket: filepath.Join(dir, "s"), log: filepath.Join(dir, "log"), daemon: []string{os.Args[0], filepath.Join(dir, "s")}}
	t.Setenv("BENCHTOOL_FAKE_DAEMON", "exit")
	_, err := startDaemon(a, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "status 4") || !strings.Contains(err.Error(), "fake daemon: bad option") {
		t.Errorf("exiting daemon: %v", err)
	}
	a.daemon = []string{"/bin/sleep", "30"}
	t0 := time.Now()
	_, err = startDaemon(a, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not listen") {
		t.Errorf("silent daemon: %v", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the silent daemon held startDaemon %s", d)
	}
}

// daemon-exec end to end: the daemon listens, a stale socket is no sign
// of it, and the VMM (here a shell) is the same process as benchtool,
// with the daemon as its child. A VMM that cannot be exec'd takes the
// daemon with it.
func TestDaemonExec(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc")
	}
	dir := t.TempDir()
	sock, log := filepath.Join(dir, "vfsd.sock"), filepath.Join(dir, "vfsd.log")
	// A socket an earlier daemon left behind, with no one listening.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	// The daemon is the test binary too, told so by its environment (a
	// shell sets it for the daemon alone: daemon-exec passes its own on
	// to both).
	cmd := exec.Command(os.Args[0], "daemon-exec", sock, log,
		"/bin/sh", "-c", `BENCHTOOL_MAIN= BENCHTOOL_FAKE_DAEMON=listen exec "$0" "$1"`, os.Args[0], sock, "--",
		"/bin/sh", "-c", `echo vmm-pid $$; sleep 0.2; for c in $(cat /proc/$$/task/$$/children); do echo $c $(cut -d' ' -f3 /proc/$c/stat); done`)
	cmd.Env = append(os.Environ(), "BENCHTOOL_MAIN=1")
	out, err := cmd.CombinedOutput()
	logb, _ := os.ReadFile(log)
	var daemonPID int
	if f := strings.Fields(string(logb)); len(f) == 2 && f[0] == "pid" {
		daemonPID, _ = strconv.Atoi(f[1])
	}
	if daemonPID > 0 {
		defer syscall.Kill(daemonPID, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("%v: %s (daemon log %q)", err, out, logb)
	}
	if daemonPID == 0 {
		t.Fatalf("daemon log %q: no pid", logb)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "vmm-pid" || f[1] != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("the VMM is not benchtool's process %d: %q", cmd.Process.Pid, out)
	}
	// Each child of the VMM's with its state: the daemon must be there
	// and not have died at the exec (a zombie, Z).
	state := ""
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == strconv.Itoa(daemonPID) {
			state = f[1]
		}
	}
	if state == "" || state == "Z" {
		t.Errorf("daemon %d is not a live child of the VMM (state %q): %q", daemonPID, state, out)
	}
}

func TestDaemonExecFails(t *testing.T) {
	dir := t.TempDir()
	sock, log := filepath.Join(dir, "vfsd.sock"), filepath.Join(dir, "vfsd.log")
	notExec := filepath.Join(dir, "vmm")
	if err := os.WriteFile(notExec, []byte("not a program"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "daemon-exec", sock, log,
		"/bin/sh", "-c", `BENCHTOOL_MAIN= BENCHTOOL_FAKE_DAEMON=listen exec "$0" "$1"`, os.Args[0], sock, "--", notExec)
	cmd.Env = append(os.Environ(), "BENCHTOOL_MAIN=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "daemon-exec: exec "+notExec) {
		t.Fatalf("exec of a non-program: %v: %s", err, out)
	}
	logb, _ := os.ReadFile(log)
	f := strings.Fields(string(logb))
	if len(f) != 2 || f[0] != "pid" {
		t.Fatalf("daemon log %q", logb)
	}
	pid, _ := strconv.Atoi(f[1])
	if err := syscall.Kill(pid, 0); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("daemon %d outlived the failed exec", pid)
	}
}

// A benchtool killed while it waits for the daemon takes the daemon with
// it (Pdeathsig): nothing is left listening for a VMM that never comes.
func TestDaemonExecKilled(t *testing.T) {
	dir := t.TempDir()
	sock, log := filepath.Join(dir, "vfsd.sock"), filepath.Join(dir, "vfsd.log")
	cmd := exec.Command(os.Args[0], "daemon-exec", sock, log,
		"/bin/sh", "-c", `BENCHTOOL_MAIN= BENCHTOOL_FAKE_DAEMON=silent exec "$0"`, os.Args[0], "--", "/bin/true")
	cmd.Env = append(os.Environ(), "BENCHTOOL_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := 0
	for deadline := time.Now().Add(20 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the daemon did not start")
		}
		b, _ := os.ReadFile(log)
		if f := strings.Fields(string(b)); len(f) == 2 && f[0] == "pid" {
			pid, _ = strconv.Atoi(f[1])
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// Gone, or a zombie of init's: either way no longer running.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("daemon %d outlived benchtool", pid)
		}
	}
}
