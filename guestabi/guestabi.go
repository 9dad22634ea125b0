// Package guestabi is the contract between vmm and the init of a guest it
// runs: the I/O ports a guest writes to (the exit status, the boot-phase
// codes), the job description `vmm run` hands in, and the paths and
// statuses both sides agree on.
//
// It is a package of its own so that both sides import the contract and
// nothing else: the guest's init (guest/cmd/vmm-init) is built for the
// guest and must not pull in vmm's device code, and any other init that
// wants to follow the contract can read it here in one place. It holds no
// device logic: the devices that answer at these ports are in
// devices/exitport and devices/boottimer.
package guestabi

// ExitPort is the I/O port a guest writes its exit status to, one byte,
// as QEMU's isa-debug-exit takes a code (but the byte is the status
// itself). 0xF4 is unused on a PC (it is where QEMU users conventionally
// put isa-debug-exit), clear of the PIT/PIC/RTC/i8042 ports, the POST
// port 0x80 that Linux writes for I/O delays, and BootTimerPort. A guest
// writes with outb (after ioperm) or pwrites one byte at offset ExitPort
// of /dev/port; a wider write at ExitPort counts its low byte.
const ExitPort = 0xf4

// ExitPortSize is the port range vmm claims at ExitPort: the status is one
// byte, but a guest's outw or outl at ExitPort must land on the device
// too (its low byte is the status), so the range covers a dword.
const ExitPortSize = 4

// Statuses the guest reports for a job that did not run to its own exit
// status, following the shell's conventions.
const (
	// StatusNotRun: the guest's init could not set the job up (a share
	// that would not mount, a job it could not read or reseed for),
	// and says why on the console: docker's status for its own
	// failures, and vmm's for a guest that ended without any status,
	// so that neither passes for the command's own 126 or 127.
	StatusNotRun        = 125
	StatusNotExecutable = 126 // found but could not be executed
	StatusNotFound      = 127 // no such command
	StatusSignalBase    = 128 // killed by signal N: 128+N
)
