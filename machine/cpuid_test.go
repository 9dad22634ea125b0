package machine

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/kvm"
)

// brandOf packs s as CPUID's brand leaves do: NUL-padded to 48 bytes,
// little-endian registers.
func brandOf(s string) (b brandString) {
	var raw [48]byte
	copy(raw[:], s)
	for i := range b {
		for j := range b[i] {
			b[i][j] = binary.LittleEndian.Uint32(raw[16*i+4*j:])
		}
	}
	return b
}

// brandText is the string a guest reads from the brand leaves of es,
// trimmed as Linux trims it.
func brandText(es []kvm.CPUIDEntry) string {
	var raw [48]byte
	for _, e := range es {
		if e.Function < leafBrandFirst || e.Function > leafBrandLast {
			continue
		}
		o := 16 * (e.Function - leafBrandFirst)
		for j, r := range []uint32{e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.LittleEndian.PutUint32(raw[o+4*uint32(j):], r)
		}
	}
	return strings.TrimSpace(strings.TrimRight(string(raw[:]), "\x00"))
}

func TestVCPUCPUIDBrand(t *testing.T) {
	host := brandOf("AMD EPYC Processor")
	zeros := []kvm.CPUIDEntry{{Function: leafExtMax, EAX: 0x80000021},
		{Function: leafBrandFirst}, {Function: leafBrandFirst + 1}, {Function: leafBrandLast}}
	kvmOwn := brandOf("KVM's own name")
	named := []kvm.CPUIDEntry{{Function: leafExtMax, EAX: 0x80000021},
		{Function: leafBrandFirst, EAX: kvmOwn[0][0], EBX: kvmOwn[0][1], ECX: kvmOwn[0][2], EDX: kvmOwn[0][3]},
		{Function: leafBrandFirst + 1, EAX: kvmOwn[1][0]}, {Function: leafBrandLast}}
	for _, tt := range []struct {
		name      string
		supported []kvm.CPUIDEntry
		brand     brandString
		want      string
		leaves    int // brand leaves in the result
	}{
		{"KVM's zeros get the host's name", zeros, host, "AMD EPYC Processor", 3},
		{"a name from KVM is kept whole", named, host, brandText(named), 3},
		{"leaves KVM left out are added", []kvm.CPUIDEntry{{Function: leafExtMax, EAX: 0x80000008}}, host, "AMD EPYC Processor", 3},
		{"not past KVM's extended maximum", []kvm.CPUIDEntry{{Function: leafExtMax, EAX: 0x80000001}}, host, "", 0},
		{"a maximum one leaf short", []kvm.CPUIDEntry{{Function: leafExtMax, EAX: leafBrandLast - 1}}, host, "", 0},
		{"a maximum of the last brand leaf", []kvm.CPUIDEntry{{Function: leafExtMax, EAX: leafBrandLast}}, host, "AMD EPYC Processor", 3},
		{"no extended leaves at all", []kvm.CPUIDEntry{{Function: 0, EAX: 0xd}}, host, "", 0},
		{"a host without a brand leaves zeros", zeros, brandString{}, "", 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := vcpuCPUID(tt.supported, 0, 1, cpuidOptions{brand: tt.brand})
			if s := brandText(got); s != tt.want {
				t.Errorf("brand %q, want %q", s, tt.want)
			}
			n := 0
			for _, e := range got {
				if e.Function >= leafBrandFirst && e.Function <= leafBrandLast {
					n++
				}
			}
			if n != tt.leaves {
				t.Errorf("%d brand leaves, want %d", n, tt.leaves)
			}
		})
	}
	if zeros[1].EAX != 0 {
		t.Errorf("input modified")
	}
}

// TestHostCPUID checks the instruction's registers against what the host
// kernel read with it at boot: the vendor string of leaf 0 (EBX, EDX,
// ECX) is /proc/cpuinfo's vendor_id, and leaf 1's EAX holds its "cpu
// family" and "model" (Intel SDM vol. 2A, CPUID leaf 1: the extended
// family counts for family 0xf, the extended model for families 6 and
// 0xf). Its "model name" is no check for the brand: a hypervisor may give
// the kernel a name of its own (this project's machines: "AMD EPYC"
// there, CPUID's "Oxide Virtual ...").
func TestHostCPUID(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	info := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, seen := info[k]; !seen {
			info[k] = strings.TrimSpace(v)
		}
	}
	if info["vendor_id"] == "" || info["cpu family"] == "" || info["model"] == "" {
		t.Skip("/proc/cpuinfo has no vendor_id, cpu family or model")
	}
	_, bx, cx, dx := hostCPUID(0)
	var v [12]byte
	binary.LittleEndian.PutUint32(v[0:], bx)
	binary.LittleEndian.PutUint32(v[4:], dx)
	binary.LittleEndian.PutUint32(v[8:], cx)
	if string(v[:]) != info["vendor_id"] {
		t.Errorf("CPUID leaf 0 vendor %q, /proc/cpuinfo %q", v[:], info["vendor_id"])
	}
	ax, _, _, _ := hostCPUID(1)
	family, model := ax>>8&0xf, ax>>4&0xf
	if family == 0xf {
		family += ax >> 20 & 0xff
	}
	if family == 6 || family >= 0xf {
		model |= ax >> 16 & 0xf << 4
	}
	if got := fmt.Sprintf("%d/%d", family, model); got != info["cpu family"]+"/"+info["model"] {
		t.Errorf("CPUID leaf 1 family/model %s, /proc/cpuinfo %s/%s", got, info["cpu family"], info["model"])
	}
	// Every x86-64 processor has extended leaves: long mode is announced
	// in 0x80000001.
	if max, _, _, _ := hostCPUID(leafExtMax); max < leafExtMax+1 {
		t.Fatalf("extended maximum %#x", max)
	}
	var es []kvm.CPUIDEntry
	for i, r := range hostBrand() {
		es = append(es, kvm.CPUIDEntry{Function: leafBrandFirst + uint32(i), EAX: r[0], EBX: r[1], ECX: r[2], EDX: r[3]})
	}
	name := brandText(es)
	for _, r := range name {
		if r < ' ' || r > '~' {
			t.Errorf("brand %q is not printable ASCII", name)
			break
		}
	}
	t.Logf("host brand %q", name)
}
