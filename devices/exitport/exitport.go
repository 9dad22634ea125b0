// Package exitport is the guest's way to hand vmm an exit status: one
// byte written to an I/O port ends the run with that status. It is how
// `vmm run` learns the job's exit status without scraping console text,
// in the spirit of QEMU's isa-debug-exit (but the byte is the status
// itself, not an encoding of it).
//
// The port number and the status conventions are the guest's contract,
// in package guestabi (guestabi.ExitPort); this is the device that
// answers there.
package exitport

import "sync"

// Device records the first status the guest writes and reports it once.
type Device struct {
	once   sync.Once
	report func(status uint8)
}

// New returns a device that calls report with the first status written.
// report runs on a vCPU thread and must not block.
func New(report func(status uint8)) *Device { return &Device{report: report} }

// Read returns zero: there is nothing to read, and zero tells a probing
// guest nothing either.
func (d *Device) Read(offset uint64, data []byte) { clear(data) }

// Write takes the first byte of a write at the port's offset 0 as the
// status; wider writes (outw at Port) use their low byte, as the port is
// one byte wide. Later writes are ignored: the first status wins, so a
// guest cannot change its answer while vmm shuts it down.
func (d *Device) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 {
		return
	}
	status := data[0]
	d.once.Do(func() { d.report(status) })
}
