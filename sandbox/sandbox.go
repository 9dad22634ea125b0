//go:build linux && amd64

package sandbox

import (
	"fmt"
	"os"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
)

// Options says what the process does after Install besides running its
// machine.
type Options struct {
	// Extract allows the file-system calls `vmm run -out` makes once the
	// guest has stopped: unpacking its output into a host directory and
	// removing the scratch disk.
	Extract bool
	// Network allows what a user-mode network card (-nic user) does
	// while the guest runs: IPv4 and IPv6 sockets, and read-only opens
	// of the resolver's configuration.
	Network bool
}

// exitDenied is the status of a process the sandbox stopped: 128+SIGSYS,
// what a shell reports for a process killed by that signal, and how vmm
// reports every other signal that stops it.
const exitDenied = 128 + 31

// Install turns the sandbox on for every thread of the process, now and
// later, for the rest of its life: PR_SET_NO_NEW_PRIVS, then the filter
// made from rules.go, synchronized to all threads (SECCOMP_FILTER_FLAG_TSYNC;
// threads started later inherit it). Call it once every file, device and
// socket the process needs is open, before it runs guest code. A denied
// call then ends the process with one line on stderr naming the call,
// and status 159.
//
// Install fails, changing nothing, on a kernel without seccomp filters
// (before 3.17, or built without CONFIG_SECCOMP_FILTER).
func Install(o Options) error {
	progs, err := programs(o, os.Getpid())
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := install(progs); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// applies says whether rules for w are part of the filter for o.
func (o Options) applies(w when) bool {
	switch w {
	case extract:
		return o.Extract
	case network:
		return o.Network
	case withCgo:
		return cgoBuild
	}
	return true
}

// programs assembles the filters for a process whose ID is pid: one for
// each system call allowed only with some arguments, then the allow-list
// by name (see policies).
func programs(o Options, pid int) ([][]bpf.RawInstruction, error) {
	ps, err := policies(o, pid)
	if err != nil {
		return nil, err
	}
	var progs [][]bpf.RawInstruction
	for _, p := range ps {
		insts, err := p.Assemble()
		if err != nil {
			return nil, err
		}
		raw, err := bpf.Assemble(insts)
		if err != nil {
			return nil, err
		}
		progs = append(progs, raw)
	}
	return progs, nil
}

// policies are the filters before assembly, in the order they are
// installed. The last allows every call rules.go names, whatever its
// arguments, fails those with a fail errno, and traps (SIGSYS) every
// other; the library checks the
// architecture first (a 32-bit call is trapped) and makes x32 calls fail
// with ENOSYS. It is last because it denies seccomp(2) itself. Each of
// the others traps one system call when its arguments match none of its
// rules and allows everything else. The kernel runs every filter and the
// strictest verdict wins, so a call must pass all of them.
//
// One filter per argument check, not one filter for everything, because
// go-seccomp-bpf v1.6.0 does not reload the system call number after a
// failed argument check: in a combined filter the comparisons that
// follow would compare the argument instead (clone with flags SIGCHLD,
// 17, would be allowed as pread64, 17). Alone in its filter, a failed
// check can only reach that filter's final verdict.
func policies(o Options, pid int) ([]seccomp.Policy, error) {
	names := seccomp.SyscallGroup{Action: seccomp.ActionAllow}
	var failing []seccomp.SyscallGroup
	var checked []string // in rules order, each once
	byName := map[string][]rule{}
	anyArgs := map[string]bool{} // an applicable rule allows any arguments
	for _, f := range failures() {
		if o.applies(f.when) {
			failing = append(failing, seccomp.SyscallGroup{
				Names:  []string{f.name},
				Action: seccomp.ActionErrno | seccomp.Action(f.errno),
			})
		}
	}
	for _, r := range rules(pid) {
		if !o.applies(r.when) {
			continue
		}
		if len(byName[r.name]) == 0 {
			names.Names = append(names.Names, r.name)
			checked = append(checked, r.name)
		}
		byName[r.name] = append(byName[r.name], r)
		anyArgs[r.name] = anyArgs[r.name] || r.args == nil
	}
	var ps []seccomp.Policy
	for _, name := range checked {
		if anyArgs[name] {
			continue
		}
		deny, err := denySets(byName[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		g := seccomp.SyscallGroup{Action: seccomp.ActionTrap}
		for _, set := range deny {
			g.NamesWithCondtions = append(g.NamesWithCondtions, seccomp.NameWithConditions{Name: name, Conditions: set})
		}
		ps = append(ps, seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: []seccomp.SyscallGroup{g}})
	}
	return append(ps, seccomp.Policy{
		DefaultAction: seccomp.ActionTrap,
		Syscalls:      append([]seccomp.SyscallGroup{names}, failing...),
	}), nil
}

// denySets turns the rules of one system call, each allowing it when all
// its conditions hold, into the condition sets that deny it: it is
// denied when any set holds, a set holding when all its conditions do.
// Two shapes are supported, which is all rules.go needs: one rule with
// any number of conditions (denied when any fails), or several rules of
// one condition each (denied when all fail).
func denySets(rs []rule) ([]seccomp.ArgumentConditions, error) {
	if len(rs) == 1 {
		var sets []seccomp.ArgumentConditions
		for _, c := range rs[0].args {
			n, err := negate(c)
			if err != nil {
				return nil, err
			}
			sets = append(sets, seccomp.ArgumentConditions{n})
		}
		return sets, nil
	}
	var set seccomp.ArgumentConditions
	for _, r := range rs {
		if len(r.args) != 1 {
			return nil, fmt.Errorf("%d rules, one with %d conditions: give each rule one condition, or write one rule", len(rs), len(r.args))
		}
		n, err := negate(r.args[0])
		if err != nil {
			return nil, err
		}
		set = append(set, n)
	}
	return []seccomp.ArgumentConditions{set}, nil
}

// negate is the condition that holds exactly when c does not.
func negate(c seccomp.Condition) (seccomp.Condition, error) {
	opposite := map[seccomp.Operation]seccomp.Operation{
		seccomp.Equal:          seccomp.NotEqual,
		seccomp.NotEqual:       seccomp.Equal,
		seccomp.BitsSet:        seccomp.BitsNotSet,
		seccomp.BitsNotSet:     seccomp.BitsSet,
		seccomp.LessOrEqual:    seccomp.GreaterThan,
		seccomp.GreaterThan:    seccomp.LessOrEqual,
		seccomp.LessThan:       seccomp.GreaterOrEqual,
		seccomp.GreaterOrEqual: seccomp.LessThan,
	}
	op, ok := opposite[c.Operation]
	if !ok {
		return c, fmt.Errorf("unknown operation %q", c.Operation)
	}
	c.Operation = op
	return c, nil
}
