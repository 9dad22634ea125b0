package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// asUser runs a command as an unprivileged user, as setpriv(1) would:
// "asuser UID CMD ARGS...". The group is the same number and there are
// no supplementary groups; HOME and TMPDIR become a fresh directory the
// user owns, since L1's /tmp is root's. Tests use it to show that vmm
// needs no root. It replaces this process, so a job's status is the
// command's.
func asUser(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: l1init asuser UID CMD [ARGS...]")
		return 2
	}
	uid, err := strconv.Atoi(args[0])
	if err != nil || uid <= 0 {
		fmt.Fprintf(os.Stderr, "asuser: %q is not a non-root uid\n", args[0])
		return 2
	}
	home := filepath.Join(os.TempDir(), "home-"+args[0])
	if err := os.MkdirAll(home, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "asuser: %v\n", err)
		return 1
	}
	if err := os.Chown(home, uid, uid); err != nil {
		fmt.Fprintf(os.Stderr, "asuser: %v\n", err)
		return 1
	}
	path := lookPath(args[1])
	// Package syscall's calls change every thread's credentials (the
	// exec may run on any of them). Groups first: after setuid there
	// is no right to change them.
	if err := syscall.Setgroups(nil); err != nil {
		fmt.Fprintf(os.Stderr, "asuser: setgroups: %v\n", err)
		return 1
	}
	if err := syscall.Setgid(uid); err != nil {
		fmt.Fprintf(os.Stderr, "asuser: setgid: %v\n", err)
		return 1
	}
	if err := syscall.Setuid(uid); err != nil {
		fmt.Fprintf(os.Stderr, "asuser: setuid: %v\n", err)
		return 1
	}
	env := append(os.Environ(), "HOME="+home, "TMPDIR="+home, "USER=user"+args[0])
	err = syscall.Exec(path, args[1:], env)
	fmt.Fprintf(os.Stderr, "asuser: exec %s: %v\n", path, err)
	return 127
}

// chmodTool is "chmod MODE PATH", MODE in octal: L1 has no chmod(1).
func chmodTool(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: l1init chmod OCTAL-MODE PATH")
		return 2
	}
	mode, err := strconv.ParseUint(args[0], 8, 32)
	if err != nil || mode > 0o7777 {
		fmt.Fprintf(os.Stderr, "chmod: %q is not an octal mode\n", args[0])
		return 2
	}
	if err := os.Chmod(args[1], os.FileMode(mode)); err != nil {
		fmt.Fprintf(os.Stderr, "chmod: %v\n", err)
		return 1
	}
	return 0
}
