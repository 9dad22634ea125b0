package iotool

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// tunDevice is the clone device TAP interfaces are created through
// (Documentation/networking/tuntap.rst).
const tunDevice = "/dev/net/tun"

// tapFlags are the ones vmm attaches with (package tap): a persistent TAP
// made with different ones may refuse vmm's TUNSETIFF.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// NetUpOptions configures NetUp.
type NetUpOptions struct {
	Dev  string // interface name
	Addr string // IPv4 address with prefix length, e.g. 169.254.100.1/24
}

// NetUp makes Dev a persistent TAP if no interface of that name exists,
// gives it the address and brings it up, so that a VMM started later
// attaches to an interface the host can already route to. Needs
// CAP_NET_ADMIN.
func NetUp(o NetUpOptions) (Result, error) {
	const op = "netup"
	prefix, err := netip.ParsePrefix(o.Addr)
	if err != nil || !prefix.Addr().Is4() {
		return Result{}, fmt.Errorf("%s: %q is not an IPv4 address with a prefix length (a.b.c.d/n)", op, o.Addr)
	}
	if err := checkIfName(o.Dev); err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("%s: socket: %w", op, err)
	}
	defer unix.Close(s)

	created := false
	if _, err := ifFlags(s, o.Dev); errors.Is(err, unix.ENODEV) {
		if err := tapPersist(o.Dev, true); err != nil {
			return Result{}, fmt.Errorf("%s: create TAP %s: %w", op, o.Dev, err)
		}
		created = true
	} else if err != nil {
		return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
	}

	ip := prefix.Addr().As4()
	ifr, err := unix.NewIfreq(o.Dev)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := ifr.SetInet4Addr(ip[:]); err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFADDR, ifr); err != nil {
		return Result{}, fmt.Errorf("%s: %s: SIOCSIFADDR %s: %w", op, o.Dev, prefix.Addr(), err)
	}
	mask := netmask(prefix.Bits())
	if err := ifr.SetInet4Addr(mask[:]); err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCSIFNETMASK, ifr); err != nil {
		return Result{}, fmt.Errorf("%s: %s: SIOCSIFNETMASK /%d: %w", op, o.Dev, prefix.Bits(), err)
	}
	flags, err := ifFlags(s, o.Dev)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %s: %w", op, o.Dev, err)
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return Result{}, fmt.Errorf("%s: %s: SIOCSIFFLAGS up: %w", op, o.Dev, err)
	}
	r := Result{Op: op}
	r.add("dev", "%s", o.Dev)
	r.add("addr", "%s", prefix)
	r.add("created", "%v", created)
	return r, nil
}

// NetDown removes a persistent TAP (one NetUp created). It fails while a
// VMM still has the TAP open.
func NetDown(dev string) error {
	if err := checkIfName(dev); err != nil {
		return fmt.Errorf("netdown: %w", err)
	}
	if err := tapPersist(dev, false); err != nil {
		return fmt.Errorf("netdown: %s: %w", dev, err)
	}
	return nil
}

// tapPersist attaches to (or creates) TAP dev and sets its persistence:
// a persistent TAP outlives the file descriptor, a non-persistent one
// goes away with it.
func tapPersist(dev string, persist bool) error {
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s (is the tun module loaded?): %w", tunDevice, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		return err
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	v := 0
	if persist {
		v = 1
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, v); err != nil {
		return fmt.Errorf("TUNSETPERSIST %d: %w", v, err)
	}
	return nil
}

func ifFlags(s int, dev string) (uint16, error) {
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	return ifr.Uint16(), nil
}

// checkIfName rejects names the kernel would truncate or refuse
// (IFNAMSIZ in <linux/if.h> counts the NUL).
func checkIfName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q must be 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			return fmt.Errorf("interface name %q contains %q", name, c)
		}
	}
	return nil
}

func netmask(bits int) [4]byte {
	m := ^uint32(0) << (32 - bits) // Go shifts by 32 to 0: /0 is 0.0.0.0
	return [4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}
