package kvm

import (
	"sync/atomic"
	"unsafe"
)

// loadU32 and storeU32 access the u32 at off in a page shared with the
// kernel, which writes it concurrently (the coalesced ring's indices):
// atomically, so neither the compiler nor the CPU reorders them around
// the entry reads they guard. off must be 4-byte aligned within b, as
// the ring's indices are.
func loadU32(b []byte, off int) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off:][:4][0])))
}

func storeU32(b []byte, off int, v uint32) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[off:][:4][0])), v)
}
