package proto

import "testing"

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
