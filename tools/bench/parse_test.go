package bench

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
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

// QEMU's share: 9p without a daemon, virtio-fs with one, then mounted
// exactly as vmm's; vmmComm finds QEMU behind benchtool's daemon-exec.
func TestSystemsShare(t *testing.T) {
	l := Layout{VMM: "/vmm", QEMU: "/usr/bin/qemu-system-x86_64", BenchTool: "/bin/benchtool", FSKernel: "/fk", FSInitrd: "/fi", FSDir: "/tmp/fsbench"}
	p := DefaultParams()
	p.GuestMiB = 256
	for _, c := range []struct {
		virtiofsd string
		want      []string
		mount     string
		comm      string
	}{
		{"", []string{"/usr/bin/qemu-system-x86_64 -accel kvm -M pc -cpu host", "-virtfs local,path=/tmp/fsbench,mount_tag=bench,security_model=none"},
			"mkdir -p /mnt/fs && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 bench /mnt/fs", "qemu-system-x86"},
		{"/usr/lib/qemu/virtiofsd", []string{
			"/bin/benchtool daemon-exec /tmp/fsbench-virtiofsd.sock /tmp/fsbench-virtiofsd.log /usr/lib/qemu/virtiofsd --socket-path=/tmp/fsbench-virtiofsd.sock -o source=/tmp/fsbench -o sandbox=chroot -- /usr/bin/qemu-system-x86_64 -accel kvm -M pc,memory-backend=mem -cpu host -m 256 ",
			"-object memory-backend-memfd,id=mem,size=256M,share=on",
			"-chardev socket,id=vfs,path=/tmp/fsbench-virtiofsd.sock -device vhost-user-fs-pci,queue-size=1024,chardev=vfs,tag=bench"},
			"", "qemu-system-x86"},
	} {
		l.VirtioFSD = c.virtiofsd
		ss := Systems(l, p)
		q := ss[1]
		args := strings.Join(q.FSArgs, " ")
		for _, w := range c.want {
			if !strings.Contains(args, w) {
				t.Errorf("virtiofsd %q: QEMU's share args %q lack %q", c.virtiofsd, args, w)
			}
		}
		if c.virtiofsd != "" && strings.Contains(args, "-virtfs") || c.virtiofsd == "" && strings.Contains(args, "vhost-user") {
			t.Errorf("virtiofsd %q: both shares in %q", c.virtiofsd, args)
		}
		mount := c.mount
		if mount == "" {
			mount = ss[0].FSMount // vmm's, readahead included
		}
		if q.FSMount != mount {
			t.Errorf("virtiofsd %q: QEMU mounts with %q, want %q", c.virtiofsd, q.FSMount, mount)
		}
		if got := vmmComm(q.FSArgs); got != c.comm {
			t.Errorf("virtiofsd %q: vmmComm %q, want %q", c.virtiofsd, got, c.comm)
		}
		if got := vmmComm(ss[0].FSArgs); got != "vmm" {
			t.Errorf("vmmComm of vmm's %q", got)
		}
	}
	for _, args := range [][]string{{"/bin/benchtool", "daemon-exec", "s", "l", "d"}, {"/bin/benchtool", "daemon-exec", "s", "l", "d", "--"}} {
		if got := vmmComm(args); got != "benchtool" {
			t.Errorf("vmmComm(%q) = %q: without a VMM, benchtool is what runs", args, got)
		}
	}
}

// QEMU's virtiofsd is found beside its binary, as Debian and Fedora
// install it, with its libraries; a file that cannot run is passed over.
func TestVirtioFSDFiles(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd")
	}
	src, err := os.ReadFile("/bin/true") // any dynamically linked binary
	if err != nil {
		t.Skip(err)
	}
	root := t.TempDir()
	qemu := filepath.Join(root, "usr", "bin", "qemu-system-x86_64")
	os.MkdirAll(filepath.Dir(qemu), 0o755)
	if _, _, err := VirtioFSDFiles(t.Context(), qemu); !errors.Is(err, ErrNoVirtioFSD) {
		t.Fatalf("none installed: %v", err)
	}
	debian := filepath.Join(root, "usr", "lib", "qemu", "virtiofsd")
	fedora := filepath.Join(root, "usr", "libexec", "virtiofsd")
	os.MkdirAll(filepath.Dir(debian), 0o755)
	os.MkdirAll(filepath.Dir(fedora), 0o755)
	if err := os.WriteFile(debian, src, 0o644); err != nil { // not executable
		t.Fatal(err)
	}
	if err := os.WriteFile(fedora, src, 0o755); err != nil {
		t.Fatal(err)
	}
	p, files, err := VirtioFSDFiles(t.Context(), qemu)
	if err != nil || p != fedora {
		t.Fatalf("%q %v, want %s", p, err, fedora)
	}
	if files[fedora] != fedora || len(files) < 2 {
		t.Errorf("files %v: want the binary and its libraries", files)
	}
	os.Chmod(debian, 0o755)
	if p, _, err := VirtioFSDFiles(t.Context(), qemu); err != nil || p != debian {
		t.Errorf("%q %v, want Debian's %s first", p, err, debian)
	}
}

func TestCheckVirtioFSDShare(t *testing.T) {
	for _, c := range []struct {
		dir string
		err string
	}{
		{"/tmp/fsbench", ""},
		{"/tmp/a,b/fsbench", "comma"},
		{"/" + strings.Repeat("d", 91), ""}, // its socket: 107 bytes
		{"/" + strings.Repeat("d", 92), "longer than"},
	} {
		err := CheckVirtioFSDShare(c.dir)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: %v, want %q", c.dir, err, c.err)
		}
	}
}

func TestQEMUShare(t *testing.T) {
	p := DefaultParams()
	l := Layout{VirtioFSD: "/usr/lib/qemu/virtiofsd"}
	if got, want := QEMUShare(l, p, "virtiofsd version 7.2.22"), "virtio-fs through /usr/lib/qemu/virtiofsd (virtiofsd version 7.2.22) on vhost-user-fs-pci"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got := QEMUShare(Layout{}, p, ""); got != ShareNine {
		t.Errorf("without virtiofsd %q", got)
	}
	p.FSFiles = 0
	if got := QEMUShare(l, p, "v"); got != "" {
		t.Errorf("without the workload %q", got)
	}
}
