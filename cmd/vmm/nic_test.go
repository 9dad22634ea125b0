package main

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/usernet"
)

func mustForward(t *testing.T, s string) usernet.Forward {
	t.Helper()
	f, err := usernet.ParseForward(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestParseNIC(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	for _, tc := range []struct {
		in   string
		want machine.NIC
		err  string // part of the error; "" for success
	}{
		{"user", machine.NIC{User: true}, ""},
		{"user,model=virtio-net-pci", machine.NIC{User: true}, ""},
		{"user,hostfwd=tcp::2222-:22", machine.NIC{User: true, HostFwd: []usernet.Forward{mustForward(t, "tcp::2222-:22")}}, ""},
		{"user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5353-10.0.2.20:53,mac=52:54:00:ab:cd:ef",
			machine.NIC{User: true, MAC: mac, HostFwd: []usernet.Forward{mustForward(t, "tcp:127.0.0.1:8080-:80"), mustForward(t, "udp::5353-10.0.2.20:53")}}, ""},
		{"tap,ifname=tap0", machine.NIC{Tap: "tap0"}, ""},
		{"tap,ifname=tap0,script=no,downscript=no,mac=52:54:00:ab:cd:ef,model=virtio", machine.NIC{Tap: "tap0", MAC: mac}, ""},
		{"", machine.NIC{}, "no type"},
		{",hostfwd=tcp::1-:2", machine.NIC{}, "no type"},
		{"bridge,br=br0", machine.NIC{}, `unsupported type "bridge"`},
		{"none", machine.NIC{}, `unsupported type "none"`},
		{"user,hostfwd=tcp::2222", machine.NIC{}, "hostfwd"},
		{"user,hostfwd=tcp::99999-:22", machine.NIC{}, "host port"},
		{"user,hostfwd=tcp::22-10.0.2.2:22", machine.NIC{}, "not a guest's address"},
		{"user,net=192.168.76.0/24", machine.NIC{}, `unsupported option "net=192.168.76.0/24"`},
		{"user,ifname=tap0", machine.NIC{}, `unsupported option "ifname=tap0"`},
		{"user,mac=ff:ff:ff:ff:ff:ff", machine.NIC{}, "multicast"},
		{"user,model=e1000", machine.NIC{}, "virtio-net"},
		{"tap", machine.NIC{}, "no ifname"},
		{"tap,ifname=", machine.NIC{}, "empty ifname"},
		{"tap,ifname=t0,hostfwd=tcp::1-:2", machine.NIC{}, `unsupported option "hostfwd=tcp::1-:2"`},
		{"tap,ifname=t0,script=/etc/qemu-ifup", machine.NIC{}, "unsupported option"},
	} {
		got, err := parseNIC(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("-nic %q: %v", tc.in, err)
		case tc.err == "" && !reflect.DeepEqual(got, tc.want):
			t.Errorf("-nic %q = %+v, want %+v", tc.in, got, tc.want)
		case tc.err != "" && err == nil:
			t.Errorf("-nic %q = %+v, want an error about %s", tc.in, got, tc.err)
		case tc.err != "" && (!strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "-nic ") || strings.Contains(err.Error(), "\n")):
			t.Errorf("-nic %q: %v, want one line starting -nic about %s", tc.in, err, tc.err)
		}
	}
}

// -tap and -nic make one list of cards in command-line order, and a bad
// -nic is a usage error.
func TestParseNICOrder(t *testing.T) {
	cfg, _, err := parseArgs([]string{"-kernel", "bz",
		"-nic", "user,hostfwd=tcp::2222-:22", "-tap", "tap0", "--nic=tap,ifname=tap1", "-nic", "user"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []machine.NIC{
		{User: true, HostFwd: []usernet.Forward{mustForward(t, "tcp::2222-:22")}},
		{Tap: "tap0"}, {Tap: "tap1"}, {User: true},
	}
	if !reflect.DeepEqual(cfg.NICs, want) {
		t.Errorf("NICs %+v, want %+v", cfg.NICs, want)
	}
	// QEMU's -nic none adds no card, alone or among others, and leaves
	// the others' order alone.
	for _, tc := range []struct {
		args []string
		want []machine.NIC
	}{
		{[]string{"-nic", "none"}, nil},
		{[]string{"-nic", "none", "-tap", "tap0", "--nic=none", "-nic", "user"}, []machine.NIC{{Tap: "tap0"}, {User: true}}},
	} {
		cfg, _, err := parseArgs(append([]string{"-kernel", "bz"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if !reflect.DeepEqual(cfg.NICs, tc.want) {
			t.Errorf("%q: NICs %+v, want %+v", tc.args, cfg.NICs, tc.want)
		}
	}
	for _, run := range []bool{false, true} {
		args := []string{"-kernel", "bz", "-nic", "user,hostfwd=tcp::2222-22"}
		if run {
			args = append(args, "--", "true")
		}
		_, _, err := parseMode(run, args, io.Discard)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "hostfwd") {
			t.Errorf("run=%v: %v, want a usage error about hostfwd", run, err)
		}
	}
}

// FuzzParseNIC: any -nic value either fails with one line or gives a
// card of exactly one kind.
func FuzzParseNIC(f *testing.F) {
	for _, s := range []string{"user", "user,hostfwd=tcp::2222-:22,mac=52:54:00:12:34:56", "tap,ifname=tap0,script=no", "user,,hostfwd=udp::1-:1", "tap,ifname=a,,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseNIC(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if n.User == (n.Tap != "") || (!n.User && len(n.HostFwd) > 0) {
			t.Fatalf("%q: %+v", s, n)
		}
	})
}
