package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawterm"
	"github.com/vmm-dev/vmm/kvm"
	"github.com/vmm-dev/vmm/tools/iotool"
)

// toolMain implements the commands the harness's own tests run inside L1,
// which has no userland besides this binary.
func toolMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: l1init testecho|testbytes|testkvm|stat PATH...|signal SIGNUM NAME|procstatus NAME|threads NAME...|io SUBCOMMAND...")
		return 2
	}
	switch args[0] {
	case "testecho":
		return testEcho()
	case "testbytes":
		return testBytes()
	case "testkvm":
		return testKVM()
	case "stat":
		return statPaths(args[1:])
	case "signal":
		return signalByName(args[1:])
	case "procstatus":
		return procStatus(args[1:])
	case "threads":
		return threads(args[1:])
	case "asuser":
		return asUser(args[1:])
	case "chmod":
		return chmodTool(args[1:])
	case "io":
		// The L1 end of the guest's vmm-iotool: the same code, so both
		// ends of a transfer agree on data and result lines.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
		defer stop()
		return iotool.Main(ctx, "l1tool io", args[1:], os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "l1init: unknown tool %q\n", args[0])
		return 2
	}
}

// testEcho behaves like a line-oriented interactive program and reports
// whether it got a controlling terminal in the foreground, which is what
// makes ^C work for a tty job.
func testEcho() int {
	isTTY, fg := false, false
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		isTTY = true
		if pg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err == nil && pg == unix.Getpgrp() {
			fg = true
		}
	}
	fmt.Printf("echo ready tty=%v fg=%v\n", isTTY, fg)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if rest, ok := strings.CutPrefix(line, "exit "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				fmt.Printf("bad exit code %q\n", rest)
				continue
			}
			fmt.Printf("exiting %d\n", n)
			return n
		}
		fmt.Printf("echo: %s\n", line)
	}
	fmt.Println("echo eof")
	return 0
}

// testBytes puts its terminal in raw mode, as vmm does for its guest
// console, and prints every byte it receives, to show that control bytes
// such as ^A and ^C reach the program unchanged. It stops at 'q'.
func testBytes() int {
	if old, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		raw := *old
		raw = rawterm.Raw(raw)
		if err := unix.IoctlSetTermios(0, unix.TCSETS, &raw); err != nil {
			fmt.Fprintf(os.Stderr, "raw mode: %v\n", err)
			return 1
		}
		defer unix.IoctlSetTermios(0, unix.TCSETS, old)
	}
	fmt.Print("bytes ready\r\n")
	var b [1]byte
	for {
		n, err := os.Stdin.Read(b[:])
		if n == 1 {
			fmt.Printf("<%02x>", b[0])
			if b[0] == 'q' {
				fmt.Print("\r\n")
				return 7
			}
		}
		if err != nil {
			fmt.Printf("\r\nread: %v\r\n", err)
			return 1
		}
	}
}

// testKVM proves /dev/kvm is usable, not merely present: package kvm
// opens it, checks KVM_GET_API_VERSION and makes a VM, as vmm would.
func testKVM() int {
	sys, err := kvm.Open()
	if err != nil {
		fmt.Printf("%v\n", err)
		return 1
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		fmt.Printf("%v\n", err)
		return 1
	}
	vm.Close()
	fmt.Printf("kvm api=%d create_vm=ok kept_vm=%s\n", kvm.APIVersion, keptVMStatus("/proc/1/fd"))
	return 0
}

// keptVMStatus says whether the agent (PID 1) holds the VM and vCPU of
// keepvm.go, by the names KVM gives their files (anon_inode:kvm-vm,
// anon_inode:kvm-vcpu:N).
func keptVMStatus(fdDir string) string {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return err.Error()
	}
	vms, vcpus := 0, 0
	for _, e := range ents {
		l, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil {
			continue
		}
		switch {
		case l == "anon_inode:kvm-vm":
			vms++
		case strings.HasPrefix(l, "anon_inode:kvm-vcpu:"):
			vcpus++
		}
	}
	if vms == 1 && vcpus == 1 {
		return "ok"
	}
	return fmt.Sprintf("vms=%d,vcpus=%d", vms, vcpus)
}

func statPaths(paths []string) int {
	rc := 0
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Printf("%s: %v\n", p, err)
			rc = 1
			continue
		}
		fmt.Printf("%s: %v %d\n", p, st.Mode(), st.Size())
	}
	return rc
}

// signalByName sends signal number args[0] to every process whose command
// name (/proc/PID/comm) is args[1]: L1 has no kill(1), and tests need to
// stop a job the way a user or CI runner would.
func signalByName(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: l1tool signal SIGNUM NAME")
		return 2
	}
	sig, err := strconv.Atoi(args[0])
	if err != nil || sig <= 0 || sig > 64 {
		fmt.Fprintf(os.Stderr, "signal: bad signal number %q\n", args[0])
		return 2
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "signal:", err)
		return 1
	}
	sent := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != args[1] {
			continue
		}
		if err := unix.Kill(pid, unix.Signal(sig)); err == nil {
			sent++
		}
	}
	if sent == 0 {
		fmt.Fprintf(os.Stderr, "signal: no process named %q\n", args[1])
		return 1
	}
	return 0
}
