package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []string
		wantErr string
	}{
		{
			name: "debian qemu",
			out: "\tlinux-vdso.so.1 (0x00007ffd)\n" +
				"\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f9c0e063000)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9c0bb71000)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007f9c0e179000)\n",
			want: []string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
		},
		{
			name: "unclean path",
			out:  "\tlibm.so.6 => /usr/lib/../lib/libm.so.6 (0x1)\n",
			want: []string{"/usr/lib/libm.so.6"},
		},
		{
			name:    "missing library",
			out:     "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n",
			wantErr: "libfoo.so.1 not found",
		},
		{
			name:    "static binary",
			out:     "\tstatically linked\n",
			wantErr: "no libraries",
		},
		{
			name:    "garbage",
			out:     "\tlibx.so => relative/path (0x1)\n",
			wantErr: "unexpected ldd line",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLdd(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseFirmwareDirs(t *testing.T) {
	got := parseFirmwareDirs("/usr/bin/../share/qemu\n/usr/bin/../share/seabios\nnot a dir\n/usr/bin/../lib/ipxe/qemu\n")
	want := []string{"/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{1, 100, 2}, 2},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		if got := Median(in); got != tt.want {
			t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("Median reordered its input: %v", in)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestParamsCheck(t *testing.T) {
	ok := DefaultParams()
	if err := ok.Check(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []func(p *Params){
		func(p *Params) { p.Rounds = 0 },
		func(p *Params) { p.SeqBytes = 1000 },
		func(p *Params) { p.DiskBytes = p.SeqBytes - 1<<20 },
		func(p *Params) { p.DiskBytes += 1 },
		func(p *Params) { p.RandSeconds = 0 },
		func(p *Params) { p.TCPBytes = 0 },
		func(p *Params) { p.GuestMiB = 64 },
	}
	for i, f := range bad {
		p := DefaultParams()
		f(&p)
		if err := p.Check(); err == nil {
			t.Errorf("case %d: %+v accepted", i, p)
		}
	}
}

func TestSystems(t *testing.T) {
	l := Layout{VMM: "/vmm", QEMU: "/usr/bin/qemu-system-x86_64", Kernel: "/k", Initrd: "/i", Disk: "/tmp/a,b.img"}
	ss := Systems(l, DefaultParams())
	if len(ss) != 2 || ss[0].Name != SysVMM || ss[1].Name != SysQEMU {
		t.Fatalf("systems %+v", ss)
	}
	tests := []struct {
		sys  System
		want []string // in the joined command line
	}{
		{ss[0], []string{"/vmm -kernel /k -initrd /i", "-append quiet vmm.dhcp=off", "-m 1024", "-smp 1", "-disk /tmp/a,b.img",
			// The TAP is eth0, the user-mode card eth1: cards in flag order.
			"-tap tapv -nic user,hostfwd=tcp:127.0.0.1:5150-:5300,mac=52:54:00:be:9c:01"}},
		{ss[1], []string{"-accel kvm", "-cpu host", "-m 1024", "-smp 1", "-append console=ttyS0 quiet vmm.dhcp=off",
			"file=/tmp/a,,b.img,if=none", "virtio-blk-pci", "-serial stdio",
			// The TAP's card in the lower PCI slot, so eth0.
			"-netdev tap,id=n0,ifname=tapq,script=no,downscript=no,vhost=off -device virtio-net-pci,netdev=n0,romfile= " +
				"-netdev user,id=n1,hostfwd=tcp:127.0.0.1:5151-:5300 -device virtio-net-pci,netdev=n1,romfile=,mac=52:54:00:be:9c:01"}},
	}
	for _, tt := range tests {
		args := strings.Join(tt.sys.Args, " ")
		for _, want := range tt.want {
			if !strings.Contains(args, want) {
				t.Errorf("%s args %q lack %q", tt.sys.Name, args, want)
			}
		}
		if !strings.Contains(args, "hostfwd=tcp:127.0.0.1:"+tt.sys.UserHostPort+"-:") {
			t.Errorf("%s: forward not on its UserHostPort %s: %q", tt.sys.Name, tt.sys.UserHostPort, args)
		}
	}
	if ss[0].Tap == ss[1].Tap || ss[0].HostIP == ss[1].HostIP {
		t.Error("systems share a TAP or subnet")
	}
	if ss[0].UserHostPort == ss[1].UserHostPort {
		t.Error("systems share a forwarded host port")
	}
}
