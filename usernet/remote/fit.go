package remote

import "github.com/vmm-dev/vmm/usernet/vnethdr"

// fit holds the k-byte frame in p to the offloads the guest's driver
// takes now, as the helper does when it takes a frame from the stack:
// the driver may have been reset and renegotiated fewer since the
// helper queued this one, and a driver must never see what it did not
// negotiate (virtio v1.2 §5.1.6.4.1). A segment for TSO without TSO is
// dropped (ok false); a partial checksum without CSUM is finished here.
func (n *Network) fit(p []byte, k int) (int, bool) {
	if k < vnethdr.Len {
		return k, true // virtio/net drops it as short
	}
	flags := n.offload.Load()
	if p[vnethdr.OffGSOType] != 0 && flags&vnethdr.TunTSO4 == 0 {
		return 0, false
	}
	if p[vnethdr.OffFlags]&vnethdr.FNeedsCsum != 0 && flags&vnethdr.TunCsum == 0 {
		if !vnethdr.FinishChecksum(p[vnethdr.Len:k], p[:vnethdr.Len]) {
			return 0, false
		}
		clear(p[:vnethdr.Len])
	}
	return k, true
}
