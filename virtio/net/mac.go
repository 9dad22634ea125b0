package net

import "fmt"

// DefaultMAC derives the guest's MAC address from the TAP interface's
// name: 52:54:00 followed by the low 24 bits of the name's 32-bit FNV-1a
// hash. The same name always gives the same address, so a guest keeps
// its address (and its DHCP lease) across runs, and different TAPs on one
// host get different addresses with high probability.
//
// 52:54:00 is the prefix QEMU and libvirt use too: 0x52 has the locally
// administered bit (bit 1) set and the multicast bit (bit 0) clear (IEEE
// 802 address format), so the address is unicast and cannot collide with
// a vendor-assigned one.
func DefaultMAC(name string) [6]byte {
	// FNV-1a, 32-bit (offset basis and prime from the FNV specification).
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return [6]byte{0x52, 0x54, 0x00, byte(h >> 16), byte(h >> 8), byte(h)}
}

// ParseMAC parses a unicast MAC address written as six colon-separated
// pairs of hex digits, "52:54:00:12:34:56" (either case). It rejects
// multicast addresses (bit 0 of the first octet set, broadcast included)
// and the all-zero address, which a NIC cannot use as its own.
func ParseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	if len(s) != 17 {
		return mac, fmt.Errorf("mac %q: want six colon-separated hex pairs like 52:54:00:12:34:56", s)
	}
	for i := range mac {
		if i > 0 && s[3*i-1] != ':' {
			return [6]byte{}, fmt.Errorf("mac %q: want ':' at position %d", s, 3*i-1)
		}
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return [6]byte{}, fmt.Errorf("mac %q: %q is not a hex byte", s, s[3*i:3*i+2])
		}
		mac[i] = hi<<4 | lo
	}
	if mac[0]&1 != 0 {
		return [6]byte{}, fmt.Errorf("mac %q: multicast address (bit 0 of the first octet is set)", s)
	}
	if mac == ([6]byte{}) {
		return [6]byte{}, fmt.Errorf("mac %q: all-zero address", s)
	}
	return mac, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
