// Package selfmem keeps vmm's Go heap (goroutine stacks included) out of
// transparent huge pages.
//
// It is a package of its own because it concerns the process as a whole
// and the Go runtime under it, not anything a device or the machine
// owns.
//
// With transparent huge pages set to "always" (Debian's kernels, for
// one: CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS), the kernel backs each 2 MiB
// of an anonymous mapping with a huge page at its first touch, and
// khugepaged later merges into one any 2 MiB that holds a single page
// (max_ptes_none is 511 by default; Documentation/admin-guide/mm/
// transhuge.rst). The Go heap is such a mapping. The runtime believes
// the rest of those 2 MiB untouched and never gives it back, so a heap
// of a megabyte in use holds several: measured in a nested L1 (Debian's
// cloud kernel), 45 s after vmm booted a 256 MiB guest, the heap's
// mapping held 5.0 and 6.1 MiB resident in two runs while the runtime
// had 1.2 MiB in use (runtime.MemStats.HeapInuse).
//
// The runtime's own switch, GODEBUG=disablethp=1, advises every heap
// mapping MADV_NOHUGEPAGE as it maps it. It is read when the program
// starts, from the environment and from the binary's default GODEBUG;
// a //go:debug line cannot set it (the go command accepts only the
// settings it lists), but the linker can: LDFlags sets the default, and
// every build of vmm (the Makefile's, the benchmarks', the end-to-end
// tests') passes it. A vmm built without it, by a plain go build or go
// install, is executed again by ExecWithoutHugePages with the variable
// set: one more start of the program, about 40-50 ms in a nested L1
// (`vmm -h` took 48-54 ms, 90-104 ms with the second start; traced in
// a boot, 40 ms) and 13-27 ms natively on this project's machine, to
// save 3-5 MiB of every VM's memory. Advising the mappings from outside
// the runtime does not do: the runtime maps new heap with
// mmap(MAP_FIXED), which drops the advice, and pages already made huge
// stay whole. Go's documentation says the setting may be removed;
// TestExecWithoutHugePages, which checks the heap's mapping for the
// advice, would then fail, and this package should go.
//
// Guest RAM keeps its huge pages: package guestmem advises it
// MADV_HUGEPAGE, which disablethp does not touch, because huge pages
// there spare the guest TLB misses and KVM's nested page walks.
package selfmem

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// LDFlags is the linker flag that builds vmm with the runtime's
// disablethp setting on by default (runtime.godebugDefault is the
// default GODEBUG the go command would otherwise derive from go.mod and
// //go:debug lines; their settings that differ from Go's defaults, none
// today, would be replaced). Build vmm with -ldflags=LDFlags.
const LDFlags = "-X=runtime.godebugDefault=disablethp=1"

// thpEnabled is where the kernel says when it makes huge pages
// (Documentation/admin-guide/mm/transhuge.rst, "sysfs"): the mode in
// brackets, "always", "madvise" or "never".
const thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

// selfExe is the running program's file, even if its path has since
// been removed or replaced (proc(5)). Executing it names the process
// "exe", the path's last element, so the second start puts the name
// back (restoreName).
const selfExe = "/proc/self/exe"

// selfComm is the process's name as ps, pgrep and the OOM killer show
// it: its main thread's comm, which a thread of the same process may
// write (proc(5), /proc/pid/comm).
const selfComm = "/proc/self/comm"

// selfTasks lists the process's threads (proc(5), /proc/pid/task).
const selfTasks = "/proc/self/task"

// commLen is the most of a name comm holds: TASK_COMM_LEN (16, in
// include/linux/sched.h) less its NUL.
const commLen = 15

// ExecWithoutHugePages executes the running program again, with the same
// process ID, arguments and environment, plus GODEBUG=disablethp=1, if
// the kernel makes huge pages unasked ("always"), GODEBUG does not
// already set disablethp (the user's choice, or the second execution)
// and the runtime does not already keep its heap out of them (a binary
// linked with LDFlags).
// It returns only if it did not: nothing to do, or the exec failed, which
// costs memory and nothing else. Call it first thing in main, before
// opening anything or starting goroutines that matter.
func ExecWithoutHugePages() error { return execWithoutHugePages(thpEnabled) }

// execWithoutHugePages is ExecWithoutHugePages with the mode read from
// modeFile.
func execWithoutHugePages(modeFile string) error {
	restoreName()
	mode, err := os.ReadFile(modeFile)
	if err != nil {
		return nil // a kernel without transparent huge pages
	}
	env, ok := reexecEnv(string(mode), os.Environ())
	if !ok || heapAdvised() {
		return nil
	}
	return syscall.Exec(selfExe, os.Args, env)
}

// selfSmaps describes each of the process's mappings (proc(5),
// /proc/pid/smaps), with the advice given for it in VmFlags.
const selfSmaps = "/proc/self/smaps"

// heapAdvised reports whether the runtime already keeps its heap out of
// huge pages, which it does when the binary was linked with LDFlags:
// whether the mapping that holds a fresh heap allocation is advised
// MADV_NOHUGEPAGE (VmFlags nh). An allocation this large comes from the
// heap, never the stack; one early enough to land in memory the runtime
// mapped before it read its settings would read as not advised, and
// cost a second start, no more.
func heapAdvised() bool {
	b := make([]byte, 128<<10)
	// %p gives the address without package unsafe.
	addr, err := strconv.ParseUint(strings.TrimPrefix(fmt.Sprintf("%p", &b[0]), "0x"), 16, 64)
	if err != nil {
		return false
	}
	smaps, err := os.ReadFile(selfSmaps)
	runtime.KeepAlive(b)
	if err != nil {
		return false
	}
	flags, err := vmFlags(string(smaps), addr)
	return err == nil && slices.Contains(strings.Fields(flags), "nh")
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

// restoreName gives a process that was started as /proc/self/exe the
// name execve(2) gives one started by its own path: the last element of
// that path, which is argv[0]'s as a shell or os/exec passes it. Each
// thread has its own copy, taken from the thread that made it, so the
// runtime's threads that exist by now are renamed too (proc(5),
// /proc/pid/task/tid/comm); those made later copy the new name.
func restoreName() {
	comm, err := os.ReadFile(selfComm)
	if err != nil || strings.TrimSpace(string(comm)) != filepath.Base(selfExe) {
		return
	}
	if len(os.Args) == 0 || os.Args[0] == "" {
		return
	}
	name := filepath.Base(os.Args[0])
	if len(name) > commLen {
		name = name[:commLen]
	}
	if name == filepath.Base(selfExe) || name == "/" || name == "." {
		return
	}
	_ = os.WriteFile(selfComm, []byte(name), 0)
	tasks, _ := os.ReadDir(selfTasks)
	for _, t := range tasks {
		_ = os.WriteFile(filepath.Join(selfTasks, t.Name(), "comm"), []byte(name), 0)
	}
}

// reexecEnv is the environment to execute the program again with, and
// whether to, for the huge-page mode read from thpEnabled and the
// current environment. Like the runtime, it reads the first GODEBUG
// only.
func reexecEnv(mode string, env []string) ([]string, bool) {
	if !strings.Contains(mode, "[always]") {
		return nil, false
	}
	out := slices.Clone(env)
	for i, kv := range out {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		for _, setting := range strings.Split(v, ",") {
			if key, _, _ := strings.Cut(setting, "="); key == "disablethp" {
				return nil, false
			}
		}
		if v != "" {
			v += ","
		}
		out[i] = "GODEBUG=" + v + "disablethp=1"
		return out, true
	}
	return append(out, "GODEBUG=disablethp=1"), true
}
