// Package vnethdr is the virtio-net header in front of every frame that
// vmm and its user-network helper (vmm-net) pass each other: its layout,
// the TAP offload flags by which vmm tells the helper what the guest's
// driver takes, and the one computation both ends need, finishing a
// partial checksum.
//
// It is a package of its own because both ends use it and vmm's end
// (usernet/remote) must not link the helper's TCP/IP stack (package
// usernet). The device (virtio/net) keeps its own copy of the size and
// flags, which it owns as the spec's; this package imports nothing of
// vmm's.
package vnethdr

import "encoding/binary"

// Len is the header's size: struct virtio_net_hdr_v1 (virtio v1.2
// §5.1.6), num_buffers included.
const Len = 12

// Offsets of the header's fields (virtio v1.2 §5.1.6).
const (
	OffFlags      = 0 // u8 flags
	OffGSOType    = 1 // u8 gso_type
	OffHdrLen     = 2 // le16 hdr_len
	OffGSOSize    = 4 // le16 gso_size
	OffCsumStart  = 6 // le16 csum_start
	OffCsumOffset = 8 // le16 csum_offset
)

// Values of flags and gso_type (virtio v1.2 §5.1.6).
const (
	FNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	GSOTCPv4   = 1 // VIRTIO_NET_HDR_GSO_TCPV4
)

// TAP offload flags (include/uapi/linux/if_tun.h, TUNSETOFFLOAD): what
// the guest's driver negotiated, as vmm passes it on.
const (
	TunCsum   = 0x01 // TUN_F_CSUM: partial checksums
	TunTSO4   = 0x02 // TUN_F_TSO4
	TunTSO6   = 0x04 // TUN_F_TSO6
	TunTSOECN = 0x08 // TUN_F_TSO_ECN
)

// FinishChecksum does what a driver does with VIRTIO_NET_HDR_F_NEEDS_CSUM
// (virtio v1.2 §5.1.6.2.1) for the frame f (the bytes after the header
// hdr): it sums f from csum_start to its end, the pseudo-header's sum
// already in place at csum_start+csum_offset, with the Internet checksum
// (RFC 1071), and stores the complement there. It reports false, and
// changes nothing, when that field is not inside f.
func FinishChecksum(f, hdr []byte) bool {
	if len(hdr) < Len {
		return false
	}
	start := int(binary.LittleEndian.Uint16(hdr[OffCsumStart:]))
	at := start + int(binary.LittleEndian.Uint16(hdr[OffCsumOffset:]))
	if at+2 > len(f) {
		return false
	}
	var sum uint64 // no carry lost, whatever f's length
	b := f[start:]
	for len(b) >= 2 {
		sum += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(f[at:], ^uint16(sum))
	return true
}
