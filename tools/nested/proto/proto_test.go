package proto

import (
	"strings"
	"testing"
)

func TestJobSched(t *testing.T) {
	for _, tc := range []struct {
		cmdline, want string
	}{
		{"", ""},
		{"console=ttyS2 rdinit=/init\n", ""},
		{"console=ttyS2 l1init.jobsched=cfs\n", JobSchedCFS},
		{"l1init.jobsched=rr foo=1", JobSchedRR},
		{"l1init.jobsched=rr l1init.jobsched=cfs", JobSchedCFS},
		{"xl1init.jobsched=cfs", ""},
		{"l1init.jobsched=", ""},
		{"l1init.jobsched=fifo", "fifo"},
	} {
		if got := JobSched(tc.cmdline); got != tc.want {
			t.Errorf("JobSched(%q) = %q, want %q", tc.cmdline, got, tc.want)
		}
	}
}

// TestStillCPUs: a CPU stood still when its whole line is the same in
// both readings; the aggregate "cpu" line and other lines are not CPUs.
func TestStillCPUs(t *testing.T) {
	const a = "cpu  5 0 5 10\ncpu0 1 0 2 5\ncpu1 4 0 3 5\nintr 100\n"
	tests := []struct {
		name, first, second string
		still               string
		advanced            bool
	}{
		{"cpu1 still", a, "cpu  6 0 5 10\ncpu0 2 0 2 5\ncpu1 4 0 3 5\nintr 101\n", "1", true},
		{"both moved", a, "cpu0 2 0 2 5\ncpu1 4 0 3 6\n", "", true},
		{"both still", a, a, "0,1", false},
		{"a CPU only in one reading", "cpu0 1 0 2 5\n", "cpu0 1 0 2 6\ncpu1 4 0 3 5\n", "", true},
		{"nothing", "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			still, advanced := StillCPUs(tt.first, tt.second)
			if got := strings.Join(still, ","); got != tt.still || advanced != tt.advanced {
				t.Errorf("StillCPUs = %q, %v; want %q, %v", got, advanced, tt.still, tt.advanced)
			}
		})
	}
}
