package main

import (
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStartPinned: a child started with a CPU set runs only there (its
// own /proc/self/status says so), and the starting thread keeps its own
// affinity afterwards.
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
		want int // CPUs the child may use
	}{
		{"pinned", &set, 1},
		{"unpinned", nil, own.Count()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			p, err := startPinned(tc.cpus, "/bin/cat", []string{"cat", "/proc/self/status"}, &os.ProcAttr{Files: []*os.File{nil, pw, pw}})
			pw.Close()
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(pr)
			p.Wait()
			var mask string
			for _, l := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
					mask = strings.TrimSpace(v)
				}
			}
			var got unix.CPUSet
			if err := parseCPUList(mask, &got); err != nil {
				t.Fatalf("child's Cpus_allowed_list %q: %v", mask, err)
			}
			if got.Count() != tc.want || tc.cpus != nil && got != *tc.cpus {
				t.Errorf("child may run on %q, want %d CPUs", mask, tc.want)
			}
			var after unix.CPUSet
			if err := unix.SchedGetaffinity(0, &after); err != nil {
				t.Fatal(err)
			}
			if after != own {
				t.Errorf("this thread's affinity changed to %v CPUs", after.Count())
			}
		})
	}
}

// parseCPUList reads the kernel's CPU list format ("0-2,5").
func parseCPUList(s string, set *unix.CPUSet) error {
	set.Zero()
	for _, part := range strings.Split(s, ",") {
		lo, hi, ranged := strings.Cut(part, "-")
		if !ranged {
			hi = lo
		}
		a, err := strconv.Atoi(lo)
		if err != nil {
			return err
		}
		b, err := strconv.Atoi(hi)
		if err != nil {
			return err
		}
		for i := a; i <= b; i++ {
			set.Set(i)
		}
	}
	return nil
}
