package machine

import (
	"bufio"
	"encoding/binary"
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
// ECX) is /proc/cpuinfo's vendor_id. Its "model name" is no check for the
// brand: a hypervisor may give the kernel a name of its own (this
// project's machines: "AMD EPYC" there, CPUID's "Oxide Virtual ...").
func TestHostCPUID(t *testing.T) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	want := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "vendor_id" {
			want = strings.TrimSpace(v)
			break
		}
	}
	if want == "" {
		t.Skip("/proc/cpuinfo has no vendor_id")
	}
	_, b, c, d := hostCPUID(0, 0)
	var v [12]byte
	binary.LittleEndian.PutUint32(v[0:], b)
	binary.LittleEndian.PutUint32(v[4:], d)
	binary.LittleEndian.PutUint32(v[8:], c)
	if string(v[:]) != want {
		t.Errorf("CPUID leaf 0 vendor %q, /proc/cpuinfo %q", v[:], want)
	}
	if max, _, _, _ := hostCPUID(leafExtMax, 0); max < leafExtMax {
		t.Skipf("no extended leaves (EAX %#x)", max)
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
