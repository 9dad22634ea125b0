package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStatus prints /proc/PID/status of every process whose command
// name (/proc/PID/comm) is args[0], each after a "pid N" line: tests
// check what the kernel says of a running vmm (its seccomp mode, its
// no_new_privs bit), and L1 has no cat(1).
func procStatus(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: l1tool procstatus NAME")
		return 2
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "procstatus:", err)
		return 1
	}
	found := 0
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != args[0] {
			continue
		}
		status, err := os.ReadFile("/proc/" + d.Name() + "/status")
		if err != nil {
			continue // it exited meanwhile
		}
		fmt.Printf("pid %s\n%s", d.Name(), status)
		found++
	}
	if found == 0 {
		fmt.Fprintf(os.Stderr, "procstatus: no process named %q\n", args[0])
		return 1
	}
	return 0
}
