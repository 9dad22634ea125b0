package machine

import (
	"strings"
	"testing"
)

func TestSoftwareKVMNote(t *testing.T) {
	const amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme de pse tsc msr pae svm extapic\nbugs\t\t: sysret_ss_attrs\n"
	const intel = "processor\t: 0\nflags\t\t: fpu vmx ept\n"
	const none = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n\nprocessor\t: 1\nflags\t\t: fpu svm\n"
	for _, tc := range []struct {
		name, cpuinfo string
		pvm           bool
		want          string // substring; "" means no note
	}{
		{"AMD-V", amd, false, ""},
		{"VT-x", intel, false, ""},
		{"VT-x with a PVM module loaded too", intel, true, ""},
		{"neither, PVM", none, true, "kvm_pvm, which runs only kernels built as PVM guests"},
		{"neither, no PVM", none, false, "a software KVM"},
		{"no flags line", "processor\t: 0\n", true, ""},
		{"empty", "", false, ""},
		{"flags without a colon", "flags fpu\n", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := softwareKVMNote(strings.NewReader(tc.cpuinfo), tc.pvm)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("note %q, want one containing %q", got, tc.want)
			}
			if got != "" && (!strings.Contains(got, "nested") || strings.Contains(got, "\n")) {
				t.Errorf("note %q: want one line with the way out (nested)", got)
			}
		})
	}
}
