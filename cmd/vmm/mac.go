package main

import (
	"encoding/hex"
	"fmt"
)

// parseMAC reads the mac= option of -tap: a unicast MAC address written as
// six colon-separated pairs of hex digits, "52:54:00:12:34:56" (either
// case). Only that spelling, not net.ParseMAC's dashes, dots or 8- and
// 20-byte addresses: it is the one ip(8) and QEMU print, so an error
// names the pair or separator the user got wrong. Multicast addresses
// (bit 0 of the first octet set, broadcast included) and the all-zero
// address are rejected: a NIC cannot use them as its own (IEEE 802).
func parseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	if len(s) != 3*len(mac)-1 {
		return [6]byte{}, fmt.Errorf("mac %q: want six colon-separated hex pairs like 52:54:00:12:34:56", s)
	}
	for i := range mac {
		if i > 0 && s[3*i-1] != ':' {
			return [6]byte{}, fmt.Errorf("mac %q: want ':' at position %d", s, 3*i-1)
		}
		pair := s[3*i : 3*i+2]
		if _, err := hex.Decode(mac[i:i+1], []byte(pair)); err != nil {
			return [6]byte{}, fmt.Errorf("mac %q: %q is not a hex byte", s, pair)
		}
	}
	if mac[0]&1 != 0 {
		return [6]byte{}, fmt.Errorf("mac %q: multicast address (bit 0 of the first octet is set)", s)
	}
	if mac == ([6]byte{}) {
		return [6]byte{}, fmt.Errorf("mac %q: all-zero address", s)
	}
	return mac, nil
}
