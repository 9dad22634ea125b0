package remote

import "encoding/binary"

// Fields of the virtio-net header in front of every frame (struct
// virtio_net_hdr_v1, virtio v1.2 §5.1.6) and the TAP offload flags
// SetOffload takes (include/uapi/linux/if_tun.h).
const (
	headerSize    = 12
	hdrFlags      = 0 // u8 flags
	hdrGSOType    = 1 // u8 gso_type
	hdrCsumStart  = 6 // le16 csum_start
	hdrCsumOffset = 8 // le16 csum_offset

	hdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	tunCsum = 0x01 // TUN_F_CSUM
	tunTSO4 = 0x02 // TUN_F_TSO4
)

// fit holds the k-byte frame in p to the offloads the guest's driver
// takes now, as the helper does when it takes a frame from the stack:
// the driver may have been reset and renegotiated fewer since the
// helper queued this one, and a driver must never see what it did not
// negotiate (virtio v1.2 §5.1.6.4.1). A segment for TSO without TSO is
// dropped (ok false); a partial checksum without CSUM is finished here.
func (n *Network) fit(p []byte, k int) (int, bool) {
	if k < headerSize {
		return k, true // virtio/net drops it as short
	}
	flags := n.offload.Load()
	if p[hdrGSOType] != 0 && flags&tunTSO4 == 0 {
		return 0, false
	}
	if p[hdrFlags]&hdrFNeedsCsum != 0 && flags&tunCsum == 0 {
		if !finishChecksum(p[headerSize:k], p[:headerSize]) {
			return 0, false
		}
		clear(p[:headerSize])
	}
	return k, true
}

// finishChecksum completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM):
// the Internet checksum (RFC 1071) of f from csum_start to its end,
// whose field at csum_start+csum_offset holds the pseudo-header's sum,
// stored complemented in that field. It is false when the field is not
// inside f.
func finishChecksum(f, hdr []byte) bool {
	start := int(binary.LittleEndian.Uint16(hdr[hdrCsumStart:]))
	at := start + int(binary.LittleEndian.Uint16(hdr[hdrCsumOffset:]))
	if at+2 > len(f) {
		return false
	}
	var sum uint32
	b := f[start:]
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(f[at:], ^uint16(sum))
	return true
}
