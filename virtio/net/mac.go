package net

import "hash/fnv"

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
	h := fnv.New32a()
	h.Write([]byte(name)) // a hash.Hash never returns an error
	s := h.Sum32()
	return [6]byte{0x52, 0x54, 0x00, byte(s >> 16), byte(s >> 8), byte(s)}
}
