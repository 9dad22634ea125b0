package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/internal/testkernel"
	"github.com/vmm-dev/vmm/machine"
)

// diskFlags is -disk with each of n distinct 1 MiB images made in dir.
func diskFlags(t *testing.T, dir string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, "-disk", p)
	}
	return out
}

func TestParseArgsSpellings(t *testing.T) {
	tests := []struct {
		name string
		args []string
		mem  uint64
		cpus int
		line string
	}{
		{"qemu", []string{"-kernel", "bz", "-initrd", "i", "-m", "512M", "-smp", "2"}, 512 << 20, 2, "console=ttyS0 cryptomgr.notests"},
		{"gnu", []string{"--kernel", "bz", "--memory", "1G", "--smp=3"}, 1 << 30, 3, "console=ttyS0 cryptomgr.notests"},
		{"qemu equals", []string{"-kernel=bz", "-m", "768", "-smp", "cpus=2,sockets=1"}, 768 << 20, 2, "console=ttyS0 cryptomgr.notests"},
		{"append dash value", []string{"-kernel", "bz", "-append", "-- quiet", "-m", "64M"}, 64 << 20, 1, "console=ttyS0 cryptomgr.notests -- quiet"},
		{"append bare --", []string{"-kernel", "bz", "-append", "--", "-m", "64M"}, 64 << 20, 1, "console=ttyS0 cryptomgr.notests --"},
		{"gnu m", []string{"--kernel", "bz", "-m2G"}, 2 << 30, 1, "console=ttyS0 cryptomgr.notests"},
		{"qemu m size=", []string{"-kernel", "bz", "-m", "size=1G,slots=2,maxmem=4G"}, 1 << 30, 1, "console=ttyS0 cryptomgr.notests"},
		{"qemu m keys any order", []string{"-kernel", "bz", "-m", "maxmem=4G,size=2G"}, 2 << 30, 1, "console=ttyS0 cryptomgr.notests"},
		{"smp decimal", []string{"-kernel", "bz", "-smp", "010"}, 512 << 20, 10, "console=ttyS0 cryptomgr.notests"},
		{"smp gnu equals cpus", []string{"-kernel", "bz", "--smp=cpus=4,sockets=1"}, 512 << 20, 4, "console=ttyS0 cryptomgr.notests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parseArgs(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Kernel != "bz" || cfg.MemSize != tt.mem || cfg.CPUs != tt.cpus || cfg.Cmdline != tt.line {
				t.Fatalf("got %+v", cfg)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-m", "512M"}, "no kernel"},
		{[]string{"-kernel", "bz", "-m", "0"}, "more than 0"},
		{[]string{"-kernel", "bz", "-m", "junk"}, "not a size"},
		{[]string{"-kernel", "bz", "-m", "2048,junk"}, `"junk" is neither a size nor QEMU's size=`},
		{[]string{"-kernel", "bz", "-m", "slots=2"}, `-m "slots=2": no size`},
		{[]string{"-kernel", "bz", "-m", "1K"}, "at least"},
		{[]string{"-kernel", "bz", "-m", "100T"}, "more than this host"},
		{[]string{"-kernel", "bz", "-smp", "0"}, "at least one vCPU"},
		{[]string{"-kernel", "bz", "-smp", "255"}, "-smp 255: vmm supports at most 254 vCPUs"},
		{[]string{"-kernel", "bz", "-smp", "99999999999999999999999"}, "too many vCPUs"},
		{[]string{"-kernel", "bz", "-smp", "x"}, `-smp "x": want a number of vCPUs, such as 2 or cpus=2`},
		{[]string{"-kernel", "bz", "--smp=cpus=x"}, `-smp "cpus=x": want a number of vCPUs`},
		{[]string{"-kernel", "bz", "-hda", "d.img"}, "unknown flag: -hda"},
		{[]string{"-kernel", "bz", "-x"}, "unknown flag: -x"},
		{[]string{"-kernel", "bz", "-M", "pc"}, "unknown flag: -M"},
		{[]string{"-kernel"}, "-kernel: no value given"},
		{[]string{"-kernel", "bz", "--initrd"}, "--initrd: no value given"},
		{[]string{"-kernel", "bz", "-m"}, "-m: no value given"},
		{[]string{"-kernel", "bz", "-boot-timer=maybe"}, `-boot-timer "maybe": want true or false`},
		{[]string{"-kernel", "bz", "-bogus"}, "unknown"},
		{[]string{"-kernel", "bz", "extra"}, "unexpected argument"},
		{[]string{"-kernel", "bz", "-boot-timer", "false"}, `unexpected argument "false" (a flag's true or false goes after =, as -boot-timer=false)`},
		{[]string{"-m", "1G", "run", "--", "make"}, `unexpected argument "run" (run is a mode, and comes first: vmm run [flags] ...)`},
		{[]string{"-kernel", "bz", "snapshot"}, `unexpected argument "snapshot" (snapshot is a mode, and comes first: vmm snapshot [flags] ...)`},
		{[]string{"-kernel", "bz", "-timeout", "-5s"}, "negative"},
		{[]string{"-kernel", "bz", "-timeout", "soon"}, `-timeout "soon": not a duration (try 90s or 10m)`},
		{[]string{"-kernel", "bz", "--timeout=5"}, `-timeout "5": not a duration`},
		{[]string{"-kernel", "bz", "-timeout", "9999999h"}, `-timeout "9999999h": too long (at most 2562047h)`},
		{[]string{"-kernel", "bz", "-timeout=99999999999999999999.5m"}, `-timeout "99999999999999999999.5m": too long`},
		{[]string{"-kernel", "bz", "-timeout=1e30s"}, `-timeout "1e30s": not a duration`},
		{[]string{"-kernel", "bz", "-timeout", "1e30x"}, `-timeout "1e30x": not a duration`},
		{[]string{"-kernel", "bz", "-disk", ""}, "no file name"},
		{[]string{"-kernel", "bz", "-disk", "a.img,rx"}, `unknown option "rx"`},
		{[]string{"-kernel", "bz", "-tap", ",mac=52:54:00:00:00:01"}, "no interface name"},
		{[]string{"-kernel", "bz", "-tap", "tap0,ip=1"}, `unknown option "ip=1"`},
		{[]string{"-kernel", "bz", "-tap", "tap0,mac=01:00:5e:00:00:01"}, "-tap"},
		{[]string{"-kernel", "bz", "-tap", "tap0,mac=junk"}, "-tap"},
		{[]string{"-kernel", "bz", "-virtio-transport", "virtio-pci"}, `-virtio-transport "virtio-pci": want pci or mmio`},
		{[]string{"-kernel", "bz", "-initrd", "--"}, "-initrd: no value given (the next argument is --)"},
		{[]string{"-kernel", "bz", "--disk", "--"}, "--disk: no value given"},
		// An unset variable before another flag: the flag is not taken
		// for the value, whichever way either is spelled.
		{[]string{"-kernel", "-m", "512M"}, "-kernel: no value given (the next argument, -m, is a flag)"},
		{[]string{"-kernel", "-m512M"}, "-kernel: no value given (the next argument, -m512M, is a flag)"},
		{[]string{"-kernel", "-initrd", "x"}, "-kernel: no value given (the next argument, -initrd, is a flag)"},
		{[]string{"--kernel", "--initrd=x"}, "--kernel: no value given (the next argument, --initrd=x, is a flag)"},
		{[]string{"-kernel", "bz", "-disk", "-h"}, "-disk: no value given (the next argument, -h, is a flag)"},
		{[]string{"-kernel", "bz", "-m", "-smp", "2"}, "-m: no value given (the next argument, -smp, is a flag)"},
		{[]string{"-kernel", "bz", "-disk", "a,b.img"}, `unknown option "b.img" (want FILE or FILE,ro; a comma in FILE is written ,,)`},
		{[]string{"-kernel", "bz", "-fs", "d,tag=a,tag=b"}, `-fs "d,tag=a,tag=b": tag given twice`},
		{[]string{"-kernel", "bz", "-tap", "t0,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02"}, "mac given twice"},
		{[]string{"-kernel", "bz", "-nic", "user,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02"}, "mac given twice"},
		{[]string{"-kernel", "bz", "-nic", "tap,ifname=a,ifname=b"}, `-nic "tap,ifname=a,ifname=b": ifname given twice`},
	}
	for _, tt := range tests {
		_, _, err := parseArgs(tt.args, io.Discard)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestParseDisksAndTaps(t *testing.T) {
	cfg, _, err := parseArgs([]string{"-kernel", "bz",
		"-disk", "a.img", "--disk=b,,c.img,ro", "-disk", "d.img,readonly=on",
		"-tap", "tap0", "--tap", "tap1,mac=52:54:00:ab:cd:ef"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	wantDisks := []machine.Disk{{Path: "a.img"}, {Path: "b,c.img", ReadOnly: true}, {Path: "d.img", ReadOnly: true}}
	if !reflect.DeepEqual(cfg.Disks, wantDisks) {
		t.Errorf("disks %+v, want %+v", cfg.Disks, wantDisks)
	}
	wantNICs := []machine.NIC{{Tap: "tap0"}, {Tap: "tap1", MAC: [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}}}
	if !reflect.DeepEqual(cfg.NICs, wantNICs) {
		t.Errorf("NICs %+v, want %+v", cfg.NICs, wantNICs)
	}
}

// Whether a disk is read-only is said once: ro then rw (or the other
// way) is refused, not settled by the last, as an option given twice in
// one value is (README).
func TestParseDiskMode(t *testing.T) {
	for _, tc := range []struct {
		arg     string
		ro      bool
		wantErr string
	}{
		{"a.img,readonly=off", false, ""},
		{"a.img,readonly", true, ""},
		{"a.img,ro,rw", false, `"rw" after "ro"`},
		{"a.img,rw,readonly=on", false, `"readonly=on" after "rw"`},
		{"a.img,ro,ro", false, "say once whether the disk is read-only"},
	} {
		d, err := parseDisk(tc.arg)
		switch {
		case tc.wantErr == "" && (err != nil || d.ReadOnly != tc.ro):
			t.Errorf("parseDisk(%q) = %+v, %v; want read-only %v", tc.arg, d, err, tc.ro)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseDisk(%q) = %+v, %v; want an error containing %q", tc.arg, d, err, tc.wantErr)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	_, o, err := parseArgs([]string{"-kernel", "bz", "-timeout", "90s"}, io.Discard)
	if err != nil || o.timeout != 90*time.Second {
		t.Fatalf("got %v, %v", o.timeout, err)
	}
}

func TestQEMUSpellingKeepsValues(t *testing.T) {
	var o options
	fs := newFlagSet(&o, io.Discard)
	got, err := qemuSpelling(fs, []string{"-append", "-kernel", "-kernel", "k", "-m", "1G", "--", "-x"}, false)
	want := []string{"--append", "-kernel", "--kernel", "k", "-m", "1G", "--", "-x"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

// A single-dash word that is neither a long flag nor a shorthand with its
// value attached is an unknown flag, named as typed: not a bundle of
// shorthands (-hda is not -h -d -a, that is help and status 0).
func TestQEMUSpellingUnknown(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // nil: an error naming the last argument
	}{
		{[]string{"-m512M"}, []string{"-m512M"}},
		{[]string{"-m=1G"}, []string{"-m=1G"}},
		{[]string{"-help"}, []string{"--help"}},
		{[]string{"-h"}, []string{"-h"}},
		{[]string{"-smp=2"}, []string{"--smp=2"}},
		{[]string{"-hda"}, nil},
		{[]string{"-mem-prealloc"}, nil},
		{[]string{"-machine"}, nil},
		{[]string{"-kernel", "k", "-bogus"}, nil},
		{[]string{"-kernelx"}, nil},
	} {
		var o options
		fs := newFlagSet(&o, io.Discard)
		got, err := qemuSpelling(fs, tc.args, false)
		if tc.want == nil {
			last := tc.args[len(tc.args)-1]
			if err == nil || err.Error() != "unknown flag: "+last {
				t.Errorf("%q: %q, %v; want unknown flag: %s", tc.args, got, err, last)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestEscapeReader(t *testing.T) {
	tests := []struct {
		in, out string
		quit    bool
	}{
		{"ls\r", "ls\r", false},
		{"a\x01\x01b", "a\x01b", false},
		{"a\x01cb", "a\x01cb", false},
		{"echo\x01x never", "echo", true},
		{"\x01a\x01b\x01c\x01d\x01e\x01f\x01g\x01h", "\x01a\x01b\x01c\x01d\x01e\x01f\x01g\x01h", false},
	}
	for _, tt := range tests {
		quit := false
		r := &escapeReader{r: strings.NewReader(tt.in), quit: func() { quit = true }}
		var got bytes.Buffer
		buf := make([]byte, 8) // small, so escapes straddle reads
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if got.String() != tt.out || quit != tt.quit {
			t.Errorf("%q: got %q quit=%v, want %q quit=%v", tt.in, got.String(), quit, tt.out, tt.quit)
		}
	}
}

// Bad input is answered with one line on stderr and a non-zero status,
// before /dev/kvm is needed.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notKernel := write("notkernel", bytes.Repeat([]byte("x"), 4096))
	kernel := write("bzImage", testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}}))
	truncated := write("truncated", testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}})[:0x300])
	elf, err := os.Executable() // this test binary: an ELF, not a bzImage
	if err != nil {
		t.Fatal(err)
	}
	empty := write("empty", nil)
	big := filepath.Join(dir, "big.cpio")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(40 << 20) // sparse: 40 MiB of initrd for a 32 MiB guest
	f.Close()
	tests := []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"missing kernel", []string{"-kernel", filepath.Join(dir, "missing")}, 1, "no such file"},
		{"random file as kernel", []string{"-kernel", notKernel}, 1, "not a Linux bzImage"},
		{"non-kernel ELF as kernel", []string{"-kernel", elf}, 1, "ELF file is not a Linux kernel"},
		{"truncated bzImage", []string{"-kernel", truncated}, 1, "truncated bzImage"},
		{"missing initrd", []string{"-kernel", kernel, "-initrd", filepath.Join(dir, "nope")}, 1, "initrd"},
		{"empty initrd", []string{"-kernel", kernel, "-initrd", empty}, 1, "empty file"},
		{"directory as initrd", []string{"-kernel", kernel, "-initrd", dir}, 1, "not a regular file"},
		{"initrd larger than memory", []string{"-kernel", kernel, "-initrd", big, "-m", "32M"}, 1, "place initrd"},
		{"command line too long", []string{"-kernel", kernel, "-append", strings.Repeat("a", 3000)}, 1, "command line"},
		{"memory 0", []string{"-kernel", notKernel, "-m", "0"}, 2, "-m"},
		{"smp 0", []string{"-kernel", notKernel, "-smp", "0"}, 2, "-smp"},
		{"unknown flag", []string{"-kernel", kernel, "-bogus"}, 2, "unknown flag: -bogus"},
		{"QEMU flag vmm lacks", []string{"-kernel", kernel, "-hda", "disk.img"}, 2, "unknown flag: -hda"},
		{"missing disk", []string{"-kernel", kernel, "-disk", filepath.Join(dir, "nodisk.img")}, 1, "nodisk.img"},
		{"empty disk", []string{"-kernel", kernel, "-disk", empty}, 1, "empty"},
		{"directory as disk", []string{"-kernel", kernel, "-disk", dir}, 1, dir},
		{"disk given twice", []string{"-kernel", kernel, "-disk", kernel, "-disk", filepath.Join(dir, ".", "bzImage") + ",ro"}, 2, "the same image as -disk " + kernel},
		// Twice read-only passes the check (and the device count fails).
		{"disk twice read-only", append([]string{"-kernel", kernel, "-disk", kernel + ",ro", "-disk", kernel + ",ro"}, diskFlags(t, dir, 7)...), 1, "at most 8"},
		{"bad tap name", []string{"-kernel", kernel, "-tap", "a/b"}, 2, "a/b"},
		{"too many devices", append([]string{"-kernel", kernel}, diskFlags(t, dir, 9)...), 1, "at most 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stderr, err := os.CreateTemp(dir, "stderr")
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			status := run(tt.args, nil, os.Stdout, stderr)
			b, _ := os.ReadFile(stderr.Name())
			msg := string(b)
			if status != tt.status || !strings.Contains(msg, tt.want) || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "vmm: ") {
				t.Errorf("status %d, stderr %q; want status %d and one line containing %q", status, msg, tt.status, tt.want)
			}
		})
	}
}

func TestParseBootTimer(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"-kernel", "bz"}, false},
		{[]string{"-kernel", "bz", "-boot-timer"}, true},
		{[]string{"--boot-timer", "--kernel", "bz"}, true},
	} {
		_, o, err := parseArgs(tt.args, io.Discard)
		if err != nil || o.bootTimer != tt.want {
			t.Errorf("%v: bootTimer %v, err %v; want %v", tt.args, o.bootTimer, err, tt.want)
		}
	}
}

func TestParseKernelCache(t *testing.T) {
	t.Setenv("VMM_CACHE", "/cache/vmm")
	for _, tt := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"-kernel", "bz"}, ""},
		{"", []string{"-kernel", "bz", "-kernel-cache", "on"}, "/cache/vmm/vmlinux"},
		{"", []string{"-kernel", "bz", "-kernel-cache", "/tmp/k"}, "/tmp/k"},
		{"on", []string{"-kernel", "bz"}, "/cache/vmm/vmlinux"},
		{"/k", []string{"-kernel", "bz"}, "/k"},
		{"on", []string{"--kernel-cache=off", "--kernel", "bz"}, ""},
		// A switch's other spellings are not directory names.
		{"1", []string{"-kernel", "bz"}, "/cache/vmm/vmlinux"},
		{"TRUE", []string{"-kernel", "bz"}, "/cache/vmm/vmlinux"},
		{"0", []string{"-kernel", "bz"}, ""},
		{"", []string{"-kernel", "bz", "-kernel-cache", "No"}, ""},
		{"", []string{"-kernel", "bz", "-kernel-cache", "./1"}, "./1"},
	} {
		t.Setenv("VMM_KERNEL_CACHE", tt.env)
		cfg, _, err := parseArgs(tt.args, io.Discard)
		if err != nil || cfg.KernelCache != tt.want {
			t.Errorf("VMM_KERNEL_CACHE=%q %v: KernelCache %q, err %v; want %q", tt.env, tt.args, cfg.KernelCache, err, tt.want)
		}
	}
}

func TestParseTransport(t *testing.T) {
	for _, tt := range []struct {
		run  bool
		args []string
		want machine.Transport
	}{
		{false, []string{"-kernel", "bz"}, machine.VirtioPCI},
		{false, []string{"-kernel", "bz", "-virtio-transport", "mmio"}, machine.VirtioMMIO},
		{false, []string{"--virtio-transport=pci", "--kernel", "bz"}, machine.VirtioPCI},
		{true, []string{"-kernel", "bz", "-virtio-transport", "mmio", "--", "true"}, machine.VirtioMMIO},
	} {
		cfg, _, err := parseMode(tt.run, tt.args, io.Discard)
		if err != nil || cfg.Transport != tt.want {
			t.Errorf("%v: transport %v, err %v; want %v", tt.args, cfg.Transport, err, tt.want)
		}
	}
}

func TestParseRun(t *testing.T) {
	tests := []struct {
		args []string
		cmd  []string
	}{
		{[]string{"-kernel", "k", "-initrd", "i", "sh", "-c", "exit 3"}, []string{"sh", "-c", "exit 3"}},
		{[]string{"-kernel", "k", "--", "ls", "-append"}, []string{"ls", "-append"}},
		// The job's own -smp is the job's: neither read nor rewritten.
		{[]string{"-kernel", "k", "-smp", "cpus=1", "--", "qemu", "-smp", "cores=2"}, []string{"qemu", "-smp", "cores=2"}},
		{[]string{"-kernel", "k", "qemu", "--smp=cpus=4,maxcpus=8"}, []string{"qemu", "--smp=cpus=4,maxcpus=8"}},
		{[]string{"--kernel=k", "-m", "1G", "-share", "d", "-out", "o", "-env", "A=1", "--", "make", "test"}, []string{"make", "test"}},
		// A bool flag's value after =, and true or false as the job
		// after a bool flag once -- says so.
		{[]string{"-kernel", "k", "-boot-timer=false", "--", "make"}, []string{"make"}},
		{[]string{"-kernel", "k", "-boot-timer", "--", "false"}, []string{"false"}},
		{[]string{"-kernel", "k", "-boot-timer", "make", "true"}, []string{"make", "true"}},
		{[]string{"-kernel", "k", "-m", "1G", "true"}, []string{"true"}},
	}
	for _, tt := range tests {
		cfg, o, err := parseMode(true, tt.args, io.Discard)
		if err != nil {
			t.Errorf("%v: %v", tt.args, err)
			continue
		}
		if !reflect.DeepEqual(o.command, tt.cmd) || cfg.Kernel != "k" || !strings.Contains(cfg.Cmdline, "quiet") {
			t.Errorf("%v: command %q kernel %q cmdline %q", tt.args, o.command, cfg.Kernel, cfg.Cmdline)
		}
	}
	// "-boot-timer false -- make" would run "false -- make".
	for _, args := range [][]string{
		{"-kernel", "k", "-boot-timer", "false", "--", "make"},
		{"-kernel", "k", "--boot-timer", "true"},
	} {
		_, _, err := parseMode(true, args, io.Discard)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "goes after =") {
			t.Errorf("%v: got %v, want a usage error about the bool's value", args, err)
		}
	}
	if _, _, err := parseMode(true, []string{"-kernel", "k"}, io.Discard); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("run without a command: %v", err)
	}
	// Without run, a stray argument is still an error.
	if _, _, err := parseMode(false, []string{"-kernel", "k", "ls"}, io.Discard); err == nil {
		t.Error("plain vmm accepted a command")
	}
}

func TestRunJobBadInput(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	os.WriteFile(kernel, testkernel.Build(testkernel.Options{Entry64: []byte{0xf4}}), 0o644)
	for _, tt := range []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"no command", []string{"-kernel", kernel}, 2, "no command"},
		{"missing share", []string{"-kernel", kernel, "-share", filepath.Join(dir, "nope"), "--", "true"}, 1, "-share"},
		{"bad env", []string{"-kernel", kernel, "-env", "novalue", "--", "true"}, 2, `-env "novalue": want KEY=VALUE`},
		{"argument not UTF-8", []string{"-kernel", kernel, "--", "cat", "\xe9t\xe9.txt"}, 2, `argument 1 "\xe9t\xe9.txt" is not valid UTF-8`},
		{"bad out size", []string{"-kernel", kernel, "-out", dir, "-out-size", "lots", "--", "true"}, 2, "-out-size"},
		{"bad out size without -out", []string{"-kernel", kernel, "-out-size", "lots", "--", "true"}, 2, "-out-size"},
		{"out size 0", []string{"-kernel", kernel, "-out-size", "0", "--", "true"}, 2, `-out-size "0": must be more than 0`},
		{"out size in bytes", []string{"-kernel", kernel, "-out-size", "1000B", "--", "true"}, 2, `-out-size "1000B": not a whole number of 512-byte sectors`},
		{"out size too large", []string{"-kernel", kernel, "-out-size", "99999999T", "--", "true"}, 2, `-out-size "99999999T": too large`},
		{"snapshot with a kernel", []string{"-snapshot", dir, "-kernel", kernel, "--", "true"}, 2, "-kernel does not go with -snapshot"},
		{"snapshot with an initrd", []string{"-snapshot", dir, "-initrd", kernel, "--", "true"}, 2, "-initrd does not go with -snapshot"},
		{"snapshot with an -out-size", []string{"-snapshot", dir, "-out-size", "2G", "--", "true"}, 2, "-out-size does not go with -snapshot"},
		{"out is a file", []string{"-kernel", kernel, "-out", kernel, "--", "true"}, 1, "-out: mkdir " + kernel},
		{"out under a file", []string{"-kernel", kernel, "-out", filepath.Join(kernel, "o"), "--", "true"}, 1, "-out: mkdir " + kernel},
		// "-out $DIR --" with DIR unset: nothing made, no job run.
		{"out with no value", []string{"-kernel", kernel, "-out", "--", "true"}, 2, "-out: no value given (the next argument is --)"},
		// "-out $DIR -timeout 2s" with DIR unset: no directory named
		// -timeout, and no job without its deadline.
		{"out with no value before a flag", []string{"-kernel", kernel, "-out", "-timeout", "2s", "--", "true"}, 2, "-out: no value given (the next argument, -timeout, is a flag)"},
		// A path is quoted only where it would take more than one line
		// or act on the terminal.
		{"newline in a path", []string{"-kernel", kernel, "-share", filepath.Join(dir, "a\nb"), "--", "true"}, 1, `a\nb`},
		{"escape in a path", []string{"-kernel", filepath.Join(dir, "\x1b[2J"), "--", "true"}, 1, `\x1b[2J`},
		{"newline in a flag", []string{"-kernel", kernel, "-no\nsuch", "--", "true"}, 2, `unknown flag: -no\nsuch`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stderr, err := os.CreateTemp(dir, "stderr")
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			status := runJob(time.Now(), tt.args, nil, os.Stdout, stderr)
			b, _ := os.ReadFile(stderr.Name())
			if msg := string(b); status != tt.status || !strings.Contains(msg, tt.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("status %d, stderr %q; want %d and one line containing %q", status, msg, tt.status, tt.want)
			}
		})
	}
}

// TestMemorySizes is -m as QEMU users type it, and what it refuses.
func TestMemorySizes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		err  string // part of the error; "" for none
	}{
		{"512", 512 << 20, ""},
		{"512M", 512 << 20, ""},
		{"512m", 512 << 20, ""},
		{"512MB", 512 << 20, ""},
		{"512MiB", 512 << 20, ""},
		{"2G", 2 << 30, ""},
		{"1.5G", 3 << 29, ""},
		{"0.5", 512 << 10, ""},
		{"1048576K", 1 << 30, ""},
		{"size=1G", 1 << 30, ""},
		{"1G,slots=2,maxmem=4G", 1 << 30, ""},
		{"maxmem=4G,size=1G", 1 << 30, ""},
		{"512iB", 0, "not a size"},
		{"512i", 0, "not a size"},
		{"512B", 4096, ""}, // bytes, as for QEMU, rounded up to a page
		{"G", 0, "not a size"},
		{"1.G", 1 << 30, ""},
		{"512Mi", 512 << 20, ""},
		{"2gib", 2 << 30, ""},
		{"17001K", 17004 << 10, ""}, // whole 4 KiB pages
		{"1.1G", 1181118464, ""},    // 1181116006.4 bytes: 1181116006, rounded up to a page
		{"1P", 1 << 50, ""},
		{"512Bi", 0, "not a size"},
		{"512Q", 0, "not a size"},
		{"5 12", 0, "not a size"},
		{".5G", 0, "not a size"},
		{"1.2.3G", 0, "not a size"},
		{"-5", 0, "not a size"},
		{"1.0000001K", 4096, ""},
		{"0", 0, "more than 0"},
		{"0.0G", 0, "more than 0"},
		{"99999999999T", 0, "too large"},
		{"8388609T", 0, "too large"},
		{"1G,size=2G", 0, `"1G,size=2G": size given twice`},
		{"size=1G,size=0", 0, `"size=1G,size=0": size given twice`},
		{"size=1G,maxmem=foo", 0, `"size=1G,maxmem=foo": maxmem="foo": not a size`},
		{"2G,maxmem=1G", 0, "maxmem is less than the size"},
		{"512,maxmem=1024", 0, "maxmem is less than the size"}, // bytes, as for QEMU
		{"1G,maxmem=", 0, `maxmem="": not a size`},
		{"1G,maxmem=2147483648", 1 << 30, ""},
		{"1G,slots=x", 0, `slots="x"`},
		{"1G,junk", 0, `"junk" is neither a size`},
		{"size=0", 0, `-m "size=0": must be more than 0`},
		{"0.0000000000000000000000000001G", 0, "less than one byte"},
	} {
		got, err := parseMemory(tt.in)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("-m %q = %d, %v; want %d", tt.in, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("-m %q = %d, %v; want an error containing %q", tt.in, got, err, tt.err)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("-m %q: error of more than one line: %q", tt.in, err)
		}
	}
}

// TestSMPValues is -smp as QEMU users type it, and what it refuses.
func TestSMPValues(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		err  string // part of the error; "" for none
	}{
		{"2", 2, ""},
		{"010", 10, ""},
		{"cpus=4", 4, ""},
		{"cpus=2,sockets=1", 2, ""},
		{"4,sockets=1,cores=4", 4, ""},
		{"4,sockets=1,cores=2,threads=2", 4, ""},
		{"sockets=2,cpus=4", 4, ""},
		{"sockets=2,cores=2", 4, ""},
		{"maxcpus=6", 6, ""},
		{"2,maxcpus=4", 2, ""},
		{"2,maxcpus=4,sockets=2,cores=2,threads=1", 2, ""},
		{"0", 0, ""}, // refused later, as "need at least one vCPU"
		{"x", 0, "want a number of vCPUs"},
		{"cpus=x", 0, "want a number of vCPUs"},
		{"", 0, "want a number of vCPUs"},
		{"2,garbage", 0, `"garbage" is not KEY=N`},
		{"2,cpus=4", 0, "cpus given twice"},
		{"2,sockets=1,sockets=2", 0, "sockets given twice"},
		{"2,speed=9", 0, `unknown key "speed"`},
		{"2,cores=0", 0, `cores="0": want a positive number`},
		{"4,maxcpus=2", 0, "maxcpus 2 is less than the 4 vCPUs"},
		{"4,sockets=3", 0, "the topology makes 3 vCPUs, not 4"},
		{"4,sockets=1,cores=2,threads=1", 0, "the topology makes 2 vCPUs, not 4"},
		{"sockets=1024,cores=1024,threads=1024", 0, "too many vCPUs"},
	} {
		got, err := parseSMP(tt.in)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("-smp %q = %d, %v; want %d", tt.in, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("-smp %q = %d, %v; want an error containing %q", tt.in, got, err, tt.err)
		case err != nil && !strings.HasPrefix(err.Error(), fmt.Sprintf("-smp %q: ", tt.in)):
			t.Errorf("-smp %q: error %q does not name the value as typed", tt.in, err)
		}
	}
}

// An empty path given on purpose (an unset variable) is refused, not
// taken for "not given": -out "$UNSET" would bring nothing back.
func TestEmptyPathRefused(t *testing.T) {
	for _, tt := range []struct {
		run  bool
		args []string
		want string
	}{
		{false, []string{"-kernel", ""}, `-kernel "": want a path`},
		{false, []string{"-kernel", "bz", "-initrd", ""}, `-initrd "": want a path`},
		{false, []string{"-kernel", "bz", "--initrd="}, `-initrd "": want a path`},
		{true, []string{"-kernel", "bz", "-out", "", "true"}, `-out "": want a path`},
		{true, []string{"-kernel", "bz", "-share", "", "true"}, `-share "": want a path`},
		{true, []string{"-kernel", "bz", "-rootfs", "", "true"}, `-rootfs "": want a path`},
		{true, []string{"-snapshot", "", "true"}, `-snapshot "": want a path`},
	} {
		_, _, err := parseMode(tt.run, tt.args, io.Discard)
		if _, ok := err.(usageError); !ok || err.Error() != tt.want {
			t.Errorf("%v: got %v, want the usage error %q", tt.args, err, tt.want)
		}
	}
}

// Two shares with one tag are a usage error naming both, as is a -fs
// whose tag is one of vmm run's own shares.
func TestShareTagsUnique(t *testing.T) {
	for _, tt := range []struct {
		run  bool
		args []string
		want string
	}{
		{false, []string{"-kernel", "bz", "-fs", "a", "-fs", "b/a"}, `-fs "b/a": tag "a" is taken by -fs "a"`},
		{false, []string{"-kernel", "bz", "-fs", "x,tag=t", "-fs", "y,tag=t"}, `-fs "y,tag=t": tag "t" is taken by -fs "x,tag=t"`},
		{true, []string{"-kernel", "bz", "-fs", "/tmp,tag=vmm-share", "true"}, `-fs "/tmp,tag=vmm-share": tag "vmm-share" is taken by vmm run's -share`},
		{true, []string{"-kernel", "bz", "-fs", "/tmp,tag=vmm-root", "true"}, `-fs "/tmp,tag=vmm-root": tag "vmm-root" is taken by vmm run's -rootfs`},
	} {
		_, _, err := parseMode(tt.run, tt.args, io.Discard)
		if _, ok := err.(usageError); !ok || err.Error() != tt.want {
			t.Errorf("%v: got %v, want the usage error %q", tt.args, err, tt.want)
		}
	}
	if _, _, err := parseMode(false, []string{"-kernel", "bz", "-fs", "/tmp,tag=vmm-share"}, io.Discard); err != nil {
		t.Errorf("vmm run's tags are free outside vmm run: %v", err)
	}
}

// What the host would refuse once the machine is half built (a TAP name
// Linux does not take, one TAP for two cards, one host port forwarded
// twice) is a usage error naming the flags.
func TestNICsDistinct(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // "" for none
	}{
		{[]string{"-tap", "a/b"}, `-tap "a/b": tap "a/b": interface name contains '/'`},
		{[]string{"-nic", "tap,ifname=averyveryverylongname0"}, `-nic "tap,ifname=averyveryverylongname0": tap "averyveryverylongname0": interface name longer than 15 bytes`},
		{[]string{"-tap", "t0", "-nic", "tap,ifname=t0"}, `-nic "tap,ifname=t0": TAP "t0" is also -tap "t0"'s`},
		{[]string{"-nic", "user,hostfwd=tcp::2224-:22", "-nic", "user,hostfwd=tcp::2224-:23"}, `-nic "user,hostfwd=tcp::2224-:23": tcp host port 2224 is forwarded twice (also by -nic "user,hostfwd=tcp::2224-:22")`},
		{[]string{"-nic", "user,hostfwd=tcp:127.0.0.1:80-:80,hostfwd=tcp::80-:81"}, "tcp host port 80 is forwarded twice"},
		{[]string{"-nic", "user,hostfwd=tcp:127.0.0.1:80-:80,hostfwd=tcp:127.0.0.2:80-:81"}, ""},
		{[]string{"-nic", "user,hostfwd=tcp::80-:80,hostfwd=udp::80-:80"}, ""},
		{[]string{"-nic", "user,hostfwd=tcp::0-:80,hostfwd=tcp::0-:81"}, ""},
	} {
		_, _, err := parseArgs(append([]string{"-kernel", "bz"}, tt.args...), io.Discard)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tt.args, err)
			}
			continue
		}
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestSharerEnv: a job given an ordinary user's files hears whose they
// are, as under sudo; root's job is told nothing.
func TestSharerEnv(t *testing.T) {
	for _, tt := range []struct {
		euid, egid int
		want       []string
	}{
		{0, 0, nil},
		{1000, 1001, []string{"SUDO_UID=1000", "SUDO_GID=1001"}},
	} {
		if got := sharerEnv(tt.euid, tt.egid); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("sharerEnv(%d, %d) = %q, want %q", tt.euid, tt.egid, got, tt.want)
		}
	}
}

// TestHelpToStdout: help asked for goes to stdout with status 0, as
// QEMU's and GNU programs' do, so it can be paged or grepped; stderr
// stays empty.
func TestHelpToStdout(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "Usage: vmm -kernel"},
		{[]string{"--help"}, "Usage: vmm -kernel"},
		{[]string{"-help"}, "Usage: vmm -kernel"},
		{[]string{"run", "-h"}, "Usage: vmm run"},
		{[]string{"run", "--help"}, "Usage: vmm run"},
		{[]string{"snapshot", "-h"}, "Usage: vmm snapshot"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			status, out, errOut := mainToFiles(t, tt.args)
			if status != 0 || !strings.HasPrefix(string(out), tt.want) || !strings.Contains(string(out), "--kernel") || len(errOut) != 0 {
				t.Errorf("status %d, stdout %.80q, stderr %q; want 0, help starting %q on stdout, nothing on stderr", status, out, errOut, tt.want)
			}
		})
	}
}

// TestHelpWriteFails: help that cannot be written (stdout /dev/full, or
// closed) is status 1 and one line on stderr, as for GNU programs; help
// whose reader went away after what it wanted (vmm -h | head) is not an
// error.
func TestHelpWriteFails(t *testing.T) {
	dir := t.TempDir()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	closed, err := os.Create(filepath.Join(dir, "closed"))
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // a reader that went away: EPIPE (Go raises SIGPIPE only for descriptors 1 and 2, which main ignores)
	defer w.Close()
	for _, tc := range []struct {
		name   string
		out    *os.File
		args   []string
		status int
		want   string
	}{
		{"full", full, []string{"-h"}, 1, "vmm: writing the help: write /dev/full: no space left on device\n"},
		{"full, run", full, []string{"run", "-h"}, 1, "vmm: writing the help: write /dev/full: no space left on device\n"},
		{"full, snapshot", full, []string{"snapshot", "-h"}, 1, "vmm snapshot: writing the help: write /dev/full: no space left on device\n"},
		{"closed", closed, []string{"--help"}, 1, "vmm: writing the help: write " + closed.Name() + ": file already closed\n"},
		{"reader gone", w, []string{"-h"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer stderr.Close()
			status := vmmMain(time.Now(), tc.args, nil, tc.out, stderr, nil)
			errOut, _ := os.ReadFile(stderr.Name())
			if status != tc.status || string(errOut) != tc.want {
				t.Errorf("status %d, stderr %q; want %d, %q", status, errOut, tc.status, tc.want)
			}
		})
	}
}

// TestTerminalInputQuitsWhileGuestReadsNothing: Ctrl-A x typed behind
// input the guest has not read still quits at once, where the escape
// used to wait in the console forwarder behind the UART's backpressure.
// Nothing reads the terminalInput here, as the forwarder of a guest that
// reads nothing does not.
func TestTerminalInputQuitsWhileGuestReadsNothing(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	quit := make(chan struct{})
	newTerminalInput(r, func() { close(quit) })
	// More than a pipe holds: the writer waits unless the terminal is
	// read while nothing reads the terminalInput.
	go w.Write(append(bytes.Repeat([]byte("y"), 128<<10), "\x01x"...))
	select {
	case <-quit:
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-A x behind 128 KiB of unread input did not quit within 10s")
	}
}

// TestTerminalInputKeepsEverything: what the terminal gives, past the
// queue's bound too, comes out whole and in order, escapes filtered,
// and the terminal's end ends it.
func TestTerminalInputKeepsEverything(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var in, want bytes.Buffer
	for i := 0; in.Len() < 2*maxQueued; i++ {
		line := fmt.Sprintf("line %d\r", i)
		in.WriteString(line)
		want.WriteString(line)
		if i%1000 == 0 {
			in.WriteString("\x01\x01\x01b")
			want.WriteString("\x01\x01b")
		}
	}
	quit := false
	ti := newTerminalInput(r, func() { quit = true })
	go func() {
		w.Write(in.Bytes())
		w.Close()
	}()
	// A reader that starts late, once the queue is full.
	time.Sleep(100 * time.Millisecond)
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1000)
		for {
			n, err := ti.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the terminal's input did not come out whole within 30s")
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) || quit {
		t.Errorf("got %d bytes (equal: %v), quit %v; want the %d bytes written, filtered, and no quit", got.Len(), bytes.Equal(got.Bytes(), want.Bytes()), quit, want.Len())
	}
}

// TestVersion: -version (QEMU's) and --version (GNU's) print one line
// naming the build, as a snapshot's manifest does, to stdout with status
// 0, in every mode and whatever else is on the line.
func TestVersion(t *testing.T) {
	want := "vmm " + vmmVersion() + "\n"
	if !strings.Contains(want, " build ") {
		t.Fatalf("vmmVersion() = %q: no build ID", want)
	}
	for _, args := range [][]string{
		{"-version"},
		{"--version"},
		{"-kernel", "bz", "-m", "1G", "-version"},
		{"run", "-version"},
		{"run", "--version", "--", "true"},
		{"snapshot", "-version"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			status, out, errOut := mainToFiles(t, args)
			if status != 0 || string(out) != want || len(errOut) != 0 {
				t.Errorf("status %d, stdout %q, stderr %q; want 0, %q, nothing", status, out, errOut, want)
			}
		})
	}
}

// mainToFiles runs vmmMain with args, stdout and stderr regular files
// (no guest is built), and returns its status and what each file got.
func mainToFiles(t *testing.T, args []string) (status int, stdout, stderr []byte) {
	t.Helper()
	dir := t.TempDir()
	var files [2]*os.File
	for i, name := range []string{"stdout", "stderr"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	status = vmmMain(time.Now(), args, nil, files[0], files[1], nil)
	stdout, _ = os.ReadFile(files[0].Name())
	stderr, _ = os.ReadFile(files[1].Name())
	return status, stdout, stderr
}
