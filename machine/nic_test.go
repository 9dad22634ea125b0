package machine

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/kernelimage"
	"github.com/vmm-dev/vmm/kernelimage/unpack"
	"github.com/vmm-dev/vmm/usernet"
	"github.com/vmm-dev/vmm/usernet/hostfwd"
	vnet "github.com/vmm-dev/vmm/virtio/net"
)

// helperEnv makes this test binary the vmm-net helper (TestMain), so a
// user network's tests need no other build.
const helperEnv = "VMM_MACHINE_TEST_NET_HELPER"

// TestMain also makes it the vmm-unpack helper when run under that name
// (unpackHelper): vmm clears the helper's environment.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(usernet.HelperMain(os.Args[1:]))
	}
	if filepath.Base(os.Args[0]) == kernelimage.UnpackHelper {
		os.Exit(unpack.HelperMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// unpackHelper returns a link named vmm-unpack to this test binary.
func unpackHelper(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	p := filepath.Join(t.TempDir(), kernelimage.UnpackHelper)
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// userNIC is a user-network card whose helper is this test binary.
func userNIC(t *testing.T, n NIC) NIC {
	t.Setenv(helperEnv, "1")
	n.User, n.Helper = true, os.Args[0]
	// Under -race the runtime makes calls the filter does not know;
	// the helper's filter is tested end to end (tools/e2e).
	n.NoSandbox = true
	return n
}

// A user-network card needs no privilege: it opens before /dev/kvm with
// QEMU's default MAC for its index, offers checksum and segmentation
// offloads both ways (usernet takes and sends 64 KiB segments), and its
// network stops with the machine.
func TestUserNIC(t *testing.T) {
	before := runtime.NumGoroutine()
	fwd, err := hostfwd.Parse("tcp:127.0.0.1:0-:22")
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{cfg: Config{NICs: []NIC{userNIC(t, NIC{}), userNIC(t, NIC{HostFwd: []hostfwd.Forward{fwd}, MAC: [6]byte{0x52, 0x54, 0, 0, 0, 9}})}}}
	if err := m.openVirtio(); err != nil {
		t.Fatal(err)
	}
	if err := m.awaitBackends(); err != nil {
		t.Fatal(err)
	}
	if len(m.virtio) != 2 {
		t.Fatalf("%d devices, want 2", len(m.virtio))
	}
	for i, want := range []string{"52:54:00:12:34:56", "52:54:00:00:00:09"} {
		d := m.virtio[i].dev.(*vnet.Device)
		var mac [6]byte
		d.ReadConfig(0, mac[:])
		if got := net.HardwareAddr(mac[:]).String(); got != want {
			t.Errorf("card %d: MAC %s, want %s", i, got, want)
		}
		const offloads = 1<<vnet.FeatureCsum | 1<<vnet.FeatureGuestCsum |
			1<<vnet.FeatureGuestTSO4 | 1<<vnet.FeatureHostTSO4
		if f := d.Features(); f&offloads != offloads {
			t.Errorf("card %d: features %#x, want checksum and TSO offloads both ways (%#x)", i, f, uint64(offloads))
		}
	}
	m.closeVirtio()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before, %d after closing", before, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A forwarded port that is taken fails the build with one line naming
// the card and the rule.
func TestUserNICPortInUse(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fwd, err := hostfwd.Parse("tcp:" + l.Addr().String() + "-:22")
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{cfg: Config{NICs: []NIC{userNIC(t, NIC{HostFwd: []hostfwd.Forward{fwd}})}}}
	err = m.openVirtio()
	if err == nil {
		err = m.awaitBackends()
	}
	m.closeVirtio()
	if err == nil || !strings.Contains(err.Error(), "virtio-net0: user network: hostfwd tcp:"+l.Addr().String()) ||
		!strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line naming virtio-net0, the rule and address already in use", err)
	}
}
