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
// mapping MADV_NOHUGEPAGE as it maps it, but it is read only from the
// environment when the program starts, and a //go:debug line cannot set
// it. So ExecWithoutHugePages executes vmm again with it: one more
// start of the program, about 50 ms in a nested L1 (`vmm -h` took 48-54
// ms, 90-104 ms with the second start) and 13-27 ms natively on this
// project's machine, to save 3-5 MiB of every VM's memory. Advising
// the mappings from outside the runtime does not do: the runtime maps
// new heap with mmap(MAP_FIXED), which drops the advice, and pages
// already made huge stay whole. Go's documentation says the setting may
// be removed; TestExecWithoutHugePages, which checks the heap's mapping
// for the advice, would then fail, and this package should go.
//
// Guest RAM keeps its huge pages: package guestmem advises it
// MADV_HUGEPAGE, which disablethp does not touch, because huge pages
// there spare the guest TLB misses and KVM's nested page walks.
package selfmem

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

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
// the kernel makes huge pages unasked ("always") and GODEBUG does not
// already set disablethp (the user's choice, or the second execution).
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
	if !ok {
		return nil
	}
	return syscall.Exec(selfExe, os.Args, env)
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
