package main

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStartPinned: a child started with a CPU set may run only there (the
// kernel's affinity for its pid says so), one started without keeps the
// parent's, and the caller's own thread is left as it was.
func TestStartPinned(t *testing.T) {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		t.Fatal(err)
	}
	first := -1
	for i := 0; i < len(own)*64 && first < 0; i++ {
		if own.IsSet(i) {
			first = i
		}
	}
	var set unix.CPUSet
	set.Set(first)
	for _, tc := range []struct {
		name string
		cpus *unix.CPUSet
		want unix.CPUSet // the child's affinity
	}{
		{"pinned", &set, set},
		{"unpinned", nil, own},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := startPinned(tc.cpus, "/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Wait()
			defer p.Kill()
			var got unix.CPUSet
			if err := unix.SchedGetaffinity(p.Pid, &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("child may run on %d CPUs, want %d", got.Count(), tc.want.Count())
			}
			var after unix.CPUSet
			if err := unix.SchedGetaffinity(0, &after); err != nil {
				t.Fatal(err)
			}
			if after != own {
				t.Errorf("this thread's affinity changed to %d CPUs", after.Count())
			}
		})
	}
}
