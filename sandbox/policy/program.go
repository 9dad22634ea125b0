//go:build linux && amd64

package policy

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
)

// Set says which optional rules a filter takes: what the process does
// besides running its machine (sandbox.Options), and how it was built.
type Set struct {
	Scratch bool // a job's scratch disk (vmm run -out, every restore): remove it at exit
	Network bool // -nic user: host sockets for the guest's connections
	Files   bool // a virtio-fs share, or the -out helper: file-system calls
	Cgo     bool // a vmm built with cgo, whose threads glibc starts
}

// applies says whether rules for w are part of the filter for s.
func (s Set) applies(w when) bool {
	switch w {
	case scratch:
		return s.Scratch
	case network:
		return s.Network
	case files:
		return s.Files
	case withCgo:
		return s.Cgo
	}
	return true
}

// Program assembles the filter for a process whose ID is pid: the
// policies (see there) one after the other in one program. Each but the
// last ends in its default verdict, allow; that return becomes a jump to
// the next instruction, so a call a part lets through goes on to the
// next part, which loads the architecture and the call's number afresh.
// Only the last part, the allow-list by name, ends the program. A part
// never jumps outside itself (go-seccomp-bpf's jumps are relative and
// stay within the program it assembled).
func Program(s Set, pid int) ([]bpf.RawInstruction, error) {
	ps, err := policies(s, pid)
	if err != nil {
		return nil, err
	}
	var all []bpf.Instruction
	for i, p := range ps {
		insts, err := p.Assemble()
		if err != nil {
			return nil, err
		}
		if i < len(ps)-1 {
			end, ok := insts[len(insts)-1].(bpf.RetConstant)
			if !ok || end.Val != uint32(seccomp.ActionAllow) {
				return nil, fmt.Errorf("filter part %d ends in %v, not its default verdict", i, insts[len(insts)-1])
			}
			insts[len(insts)-1] = bpf.Jump{Skip: 0}
		}
		all = append(all, insts...)
	}
	return bpf.Assemble(all)
}

// policies are the parts of the filter before assembly, in the order
// they run. The first allows KVM_RUN at once. Each other but the last traps one system call when its arguments
// match none of its rules and lets everything else through. The last
// allows every call rules.go names, whatever its arguments, fails those
// of failures() with their errno, and traps (SIGSYS) every other. Each
// part checks the architecture first (a 32-bit call is let through by
// the first parts and trapped by the last) and makes x32 calls fail with
// ENOSYS: go-seccomp-bpf puts that in front of every policy.
//
// One part per argument check, not one policy for everything, because
// go-seccomp-bpf v1.6.0 does not reload the system call number after a
// failed argument check: in one policy, the comparisons that follow would
// compare the argument instead (clone with flags SIGCHLD, 17, would be
// allowed as pread64, 17). In its own part, a failed check can only
// reach the part's end, and the next part starts by loading the number.
func policies(s Set, pid int) ([]seccomp.Policy, error) {
	names := seccomp.SyscallGroup{Action: seccomp.ActionAllow}
	var failing []seccomp.SyscallGroup
	var checked []string // in rules order, each once
	byName := map[string][]rule{}
	anyArgs := map[string]bool{} // an applicable rule allows any arguments
	for _, f := range failures() {
		if s.applies(f.when) {
			failing = append(failing, seccomp.SyscallGroup{
				Names:  []string{f.name},
				Action: seccomp.ActionErrno | seccomp.Action(f.errno),
			})
		}
	}
	for _, r := range rules(pid) {
		if !s.applies(r.when) {
			continue
		}
		if len(byName[r.name]) == 0 {
			names.Names = append(names.Names, r.name)
			checked = append(checked, r.name)
		}
		byName[r.name] = append(byName[r.name], r)
		anyArgs[r.name] = anyArgs[r.name] || r.args == nil
	}
	// KVM_RUN is made on every vCPU exit: a first part allows it before
	// any other comparison.
	ps := []seccomp.Policy{{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{{
			Action:             seccomp.ActionAllow,
			NamesWithCondtions: []seccomp.NameWithConditions{{Name: "ioctl", Conditions: []seccomp.Condition{eq(1, kvmRun)}}},
		}},
	}}
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
