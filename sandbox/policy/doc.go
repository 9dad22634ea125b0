// Package policy is vmm's seccomp allow-list (rules.go) and its assembly
// into BPF programs, one for each Set of optional rules.
//
// It is a package of its own because vmm does not link it: package
// sandbox installs programs compiled from it ahead of time (sandbox's
// TestFiltersFile writes them, and fails when they differ from what
// Program makes now). Assembling at every start would cost vmm the
// library below and its system-call tables for every architecture, 165
// KB of heap built before main runs and about 180 KB of binary, for a
// program that depends only on the options and the process ID.
//
// Why github.com/elastic/go-seccomp-bpf: vmm is pure Go (CGO_ENABLED=0),
// which rules out libseccomp and its Go binding. The library is pure Go,
// has the kernel's syscall tables (names to numbers, and back, which the
// sandbox's message needs), assembles argument conditions into correct
// 64-bit BPF comparisons, and prefixes the architecture check and the
// x32 guard every hand-written filter must not forget. Only its
// assembler is used: installing the filter is sandbox's, because the
// TSYNC result (a thread that could not be synchronized) must be
// checked, and the SIGSYS handler must be in place first.
package policy
