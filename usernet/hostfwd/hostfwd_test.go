package hostfwd

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // Forward.String(); "" for an error
		err  string // part of the error
	}{
		{"tcp::2222-:22", "tcp:0.0.0.0:2222-10.0.2.15:22", ""},
		{"::2222-:22", "tcp:0.0.0.0:2222-10.0.2.15:22", ""},
		{"udp::5353-:53", "udp:0.0.0.0:5353-10.0.2.15:53", ""},
		{"tcp:127.0.0.1:8080-10.0.2.20:80", "tcp:127.0.0.1:8080-10.0.2.20:80", ""},
		{"tcp:127.0.0.1:0-:80", "tcp:127.0.0.1:0-10.0.2.15:80", ""},
		{"tcp::65535-:65535", "tcp:0.0.0.0:65535-10.0.2.15:65535", ""},
		{"", "", "no protocol field"},
		{"2222-:22", "", `protocol "2222-"`},
		{"sctp::1-:2", "", `protocol "sctp"`},
		{"tcp::2222:22", "", "no '-'"},
		{"tcp:2222-:22", "", `host side "2222"`},
		{"tcp::2222-22", "", `guest side "22"`},
		{"tcp:localhost:2222-:22", "", `host address "localhost"`},
		{"tcp:::1:2222-:22", "", "host port"},
		{"tcp:[::1]:2222-:22", "", "IPv4 only"},
		{"tcp::2222-[fd00::2]:22", "", "IPv4 only"},
		{"tcp::65536-:22", "", "host port"},
		{"tcp::-1-:22", "", "host port"},
		{"tcp::x-:22", "", "host port"},
		{"tcp::22-:0", "", "guest port"},
		{"tcp::22-:", "", "guest port"},
		{"tcp::22-:0x16", "", "guest port"},
		{"tcp::22-10.0.3.15:22", "", "not a guest's address"},
		{"tcp::22-10.0.2.2:22", "", "not a guest's address"},
		{"tcp::22-10.0.2.3:22", "", "not a guest's address"},
		{"tcp::22-10.0.2.0:22", "", "not a guest's address"},
		{"tcp::22-10.0.2.255:22", "", "not a guest's address"},
		{"tcp::22-::1:22", "", "guest port"},
	} {
		f, err := Parse(c.in)
		switch {
		case c.want != "" && err != nil:
			t.Errorf("Parse(%q): %v", c.in, err)
		case c.want != "" && f.String() != c.want:
			t.Errorf("Parse(%q) = %s, want %s", c.in, f, c.want)
		case c.want == "" && err == nil:
			t.Errorf("Parse(%q) = %s, want an error about %s", c.in, f, c.err)
		case c.want == "" && !strings.Contains(err.Error(), c.err):
			t.Errorf("Parse(%q): %v, want an error about %s", c.in, err, c.err)
		}
	}
}

// FuzzParse: any string either fails or gives a rule that reads
// back the same through its own spelling, with ports and addresses in
// range.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"tcp::2222-:22", "udp:127.0.0.1:5353-10.0.2.15:53", "::0-:1", "tcp:1.2.3.4:65535-10.0.2.99:65535", "x", "tcp:::-:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := Parse(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if !fw.Host.Addr().Is4() || !netip.MustParsePrefix(NetworkCIDR).Contains(fw.Guest.Addr()) || fw.Guest.Port() == 0 {
			t.Fatalf("%q parsed to %v", s, fw)
		}
		again, err := Parse(fw.String())
		if err != nil || again != fw {
			t.Fatalf("%q -> %s -> %v, %v", s, fw, again, err)
		}
	})
}
