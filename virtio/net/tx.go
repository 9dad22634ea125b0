package net

import (
	"github.com/vmm-dev/vmm/virtio"
)

// txState is the TX worker's, preallocated by New.
type txState struct {
	buf   []byte // gather buffer: header and frame, bufSize bytes (unused with a VectorWriter, but for chains of more than its MaxVectors buffers)
	chain virtio.Chain
	log   limiter
	// failing is set while Writes fail, so a TAP that is down logs once
	// when it goes down rather than once a second.
	failing bool
}

// txBatch bounds the chains sent between two interrupt checks, so the
// driver can reclaim buffers while a long burst is still being sent.
const txBatch = 64

// runTX is the TX worker: drain the queue, then sleep until the driver
// notifies. Notifications are off while draining and re-enabled before
// sleeping; EnableNotify's re-check catches chains queued in between.
func (d *Device) runTX() {
	defer d.wg.Done()
	q, n := d.txq, d.env.Notifiers[QueueTX]
	for {
		for {
			q.DisableNotify()
			if !d.drainTX(q) {
				return
			}
			if !q.EnableNotify() {
				break
			}
		}
		if err := n.Wait(); err != nil || d.stop.Load() {
			return
		}
	}
}

// drainTX sends every available chain; false means stop (reset, or a
// malformed queue reported through Env.Fail).
func (d *Device) drainTX(q *virtio.Queue) bool {
	t := &d.tx
	for sent := 1; ; sent++ {
		if d.stop.Load() {
			return false
		}
		ok, err := q.Pop(&t.chain)
		if err != nil {
			d.env.Fail(err)
			return false
		}
		if !ok {
			break
		}
		total := t.chain.ReadableLen()
		if total < HeaderSize || total > len(t.buf) {
			d.pushTX(q, sent)
			d.txDropped.Add(1)
			if t.log.allow() {
				d.logf("net: tx: dropped a chain of %d readable bytes (header %d, maximum %d)",
					total, HeaderSize, bufSize)
			}
			continue
		}
		if d.vw != nil && len(t.chain.Readable) <= d.vw.MaxVectors() {
			// The backend copies the frame straight out of the
			// guest's buffers; the chain goes back once it has.
			_, err = d.vw.WriteVectors(t.chain.Readable)
			d.pushTX(q, sent)
		} else {
			// The frame is copied out, so the chain goes back before
			// the Write, which may park on a full backend.
			t.chain.Readable.ReadAt(t.buf[:total], 0)
			d.pushTX(q, sent)
			_, err = d.b.Write(t.buf[:total])
		}
		if err != nil {
			if d.stop.Load() {
				return false
			}
			d.txDropped.Add(1)
			if !t.failing {
				t.failing = true
				d.logf("net: tx: %v (dropping frames until a write succeeds)", err)
			}
			continue
		}
		t.failing = false
		d.txFrames.Add(1)
	}
	if q.NeedInterrupt() {
		d.env.Interrupt()
	}
	return true
}

// pushTX completes the current chain, the sent-th of this drain, and
// interrupts the driver every txBatch chains if it wants to hear.
func (d *Device) pushTX(q *virtio.Queue, sent int) {
	q.Push(d.tx.chain.Head, 0)
	if sent%txBatch == 0 && q.NeedInterrupt() {
		d.env.Interrupt()
	}
}
