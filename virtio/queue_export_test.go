package virtio

// SetIndices puts every index of a ready queue at idx, as if idx chains
// had gone through it, for tests of 16-bit index wraparound without
// 65536 round trips. The driver side must be told the same.
func SetIndices(q *Queue, idx uint16) {
	q.lastAvail, q.shadowAvail = idx, idx
	q.usedIdx, q.published, q.signalled = idx, idx, idx
}
