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

// daemon-exec end to end: the daemon listens, a stale socket file is no
// sign of it, and the VMM (here a shell) is the same process as
// benchtool, with the daemon as its child.
func TestDaemonExec(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc")
	}
	dir := t.TempDir()
	sock, log := filepath.Join(dir, "vfsd.sock"), filepath.Join(dir, "vfsd.log")
	os.WriteFile(sock, nil, 0o644) // stale: a regular file where the socket goes
	// The daemon is the test binary too, told so by its environment (a
	// shell sets it for the daemon alone: daemon-exec passes its own on
	// to both).
	cmd := exec.Command(os.Args[0], "daemon-exec", sock, log,
		"/bin/sh", "-c", `BENCHTOOL_MAIN= BENCHTOOL_FAKE_DAEMON=listen exec "$0" "$1"`, os.Args[0], sock, "--",
		"/bin/sh", "-c", `echo vmm-pid $$; cat /proc/$$/task/$$/children; echo`)
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
	if !strings.Contains(" "+strings.Join(f[2:], " ")+" ", " "+strconv.Itoa(daemonPID)+" ") {
		t.Errorf("daemon %d is not among the VMM's children: %q", daemonPID, out)
	}
}
