// Package i8042 emulates just enough of the PC's 8042 keyboard controller
// for a guest to reboot the machine through it and for Linux's i8042
// driver to probe it without errors.
//
// The controller matters because it carries the CPU reset line: Linux's
// reboot path (arch/x86/kernel/reboot.c, BOOT_KBD) waits for the input
// buffer to drain and then writes 0xFE to port 0x64 to pulse reset. There
// is no keyboard or mouse behind it and no interrupt line: command
// responses are polled, which is how Linux's probe reads them anyway.
package i8042

import "sync"

// Port offsets within the range 0x60-0x64. Ports 0x61-0x63 belong to other
// chips on a PC (0x61 is the PIT/speaker control port, which KVM's
// in-kernel PIT answers); here they read as an unclaimed port.
const (
	portData   = 0 // 0x60
	portStatus = 4 // 0x64: status (read), command (write)

	// NumPorts is the width of the range the controller is inserted at.
	NumPorts = 5
)

// Status register bits, from the IBM PC AT Technical Reference (8042
// status byte) and Linux drivers/input/serio/i8042.h (I8042_STR_*).
const (
	statusOBF     = 0x01 // output buffer full: a byte waits at port 0x60
	statusIBF     = 0x02 // input buffer full: never set, commands complete at once
	statusSys     = 0x04 // system flag, mirrors command byte bit 2
	statusKeylock = 0x10 // 1 = keyboard not inhibited by the key lock
	statusAuxData = 0x20 // the waiting byte came from the auxiliary (mouse) port
)

// Command byte ("controller configuration byte") bits, i8042.h I8042_CTR_*.
const (
	ctrKbdInt = 0x01
	ctrAuxInt = 0x02
	ctrSys    = 0x04
	ctrKbdDis = 0x10
	ctrAuxDis = 0x20
	ctrXlate  = 0x40

	// ctrDefault has translation on and both ports enabled, as firmware
	// leaves a PS/2 controller, but interrupts off since no lines exist.
	ctrDefault = ctrXlate
)

// Controller commands written to port 0x64, from the 8042 command set
// (IBM PC AT Technical Reference) and i8042.h I8042_CMD_*.
const (
	cmdReadRAM     = 0x20 // 0x20-0x3f: read internal RAM byte; 0x20 is the command byte
	cmdWriteRAM    = 0x60 // 0x60-0x7f: write internal RAM byte (data follows)
	cmdAuxDisable  = 0xa7
	cmdAuxEnable   = 0xa8
	cmdAuxTest     = 0xa9 // auxiliary interface test: 0x00 = lines OK
	cmdSelfTest    = 0xaa // controller self test: 0x55 = passed
	cmdKbdTest     = 0xab // keyboard interface test: 0x00 = lines OK
	cmdKbdDisable  = 0xad
	cmdKbdEnable   = 0xae
	cmdReadOutput  = 0xd0 // read output port
	cmdWriteOutput = 0xd1 // write output port (data follows)
	cmdKbdLoop     = 0xd2 // data follows; returned as if from the keyboard
	cmdAuxLoop     = 0xd3 // data follows; returned as if from the mouse
	cmdAuxSend     = 0xd4 // data follows; sent to the mouse
	cmdPulse       = 0xf0 // 0xf0-0xff: pulse output port bits 0-3 low for each 0 in the low nibble

	selfTestOK  = 0x55
	interfaceOK = 0x00
)

// Output port bits. Bit 0 drives the CPU reset line, active low; bit 1 is
// the A20 gate, which has no effect on a KVM guest.
const (
	outReset   = 0x01
	outA20     = 0x02
	outDefault = outReset | outA20
)

// Controller is the 8042. Its zero value is not usable; call New.
type Controller struct {
	reset func()

	mu      sync.Mutex
	ram     [32]byte // ram[0] is the command byte
	outPort byte
	out     byte // the byte at port 0x60
	obf     bool
	auxOut  bool // out came from the auxiliary port
	pending byte // command waiting for its data byte, or 0
}

// New returns a controller that calls reset when the guest pulses the
// reset line. reset is called without the controller's lock held, so it
// may stop vCPUs that are themselves waiting on the controller.
func New(reset func()) *Controller {
	if reset == nil {
		reset = func() {}
	}
	c := &Controller{reset: reset, outPort: outDefault}
	c.ram[0] = ctrDefault
	return c
}

// Read handles a guest IN. A wider access reads consecutive ports, as an
// 8-bit ISA device answers one.
func (c *Controller) Read(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		data[i] = c.readPort(offset + uint64(i))
	}
}

func (c *Controller) readPort(off uint64) byte {
	switch off {
	case portData:
		// Reading with nothing pending returns the stale byte, as the chip does.
		c.obf, c.auxOut = false, false
		return c.out
	case portStatus:
		// IBF is never set: the controller finishes each command before
		// the OUT returns, so every "wait for input buffer empty" loop
		// (including reboot's) ends on its first read.
		s := byte(statusKeylock) // Linux warns "Keylock active" otherwise
		if c.ram[0]&ctrSys != 0 {
			s |= statusSys
		}
		if c.obf {
			s |= statusOBF
			if c.auxOut {
				s |= statusAuxData
			}
		}
		return s
	}
	return 0xff
}

// Write handles a guest OUT. A reset pulse runs after the lock is dropped.
func (c *Controller) Write(offset uint64, data []byte) {
	c.mu.Lock()
	reset := false
	for i, v := range data {
		switch offset + uint64(i) {
		case portData:
			reset = c.writeData(v) || reset
		case portStatus:
			reset = c.command(v) || reset
		}
	}
	c.mu.Unlock()
	if reset {
		c.reset()
	}
}

// command runs a controller command and reports whether it pulsed reset.
// Commands outside the set Linux and firmware use are ignored, as a real
// controller ignores undefined ones.
func (c *Controller) command(cmd byte) bool {
	c.pending = 0
	switch {
	case cmd >= cmdReadRAM && cmd < cmdReadRAM+0x20:
		c.respond(c.ram[cmd-cmdReadRAM], false)
	case cmd >= cmdWriteRAM && cmd < cmdWriteRAM+0x20,
		cmd == cmdWriteOutput, cmd == cmdKbdLoop, cmd == cmdAuxLoop, cmd == cmdAuxSend:
		c.pending = cmd
	case cmd == cmdAuxDisable:
		c.ram[0] |= ctrAuxDis
	case cmd == cmdAuxEnable:
		c.ram[0] &^= ctrAuxDis
	case cmd == cmdAuxTest, cmd == cmdKbdTest:
		c.respond(interfaceOK, false)
	case cmd == cmdSelfTest:
		c.respond(selfTestOK, false)
	case cmd == cmdKbdDisable:
		c.ram[0] |= ctrKbdDis
	case cmd == cmdKbdEnable:
		c.ram[0] &^= ctrKbdDis
	case cmd == cmdReadOutput:
		c.respond(c.outPort, false)
	case cmd >= cmdPulse:
		// Bits 0-3 of the command select output port lines to pulse low
		// (0 = pulse); only line 0, CPU reset, is wired. 0xfe is the
		// classic reset; 0xff pulses nothing.
		return cmd&outReset == 0
	}
	return false
}

// writeData delivers a byte written to port 0x60 and reports whether it
// asserted reset.
func (c *Controller) writeData(v byte) bool {
	cmd := c.pending
	c.pending = 0
	switch {
	case cmd >= cmdWriteRAM && cmd < cmdWriteRAM+0x20:
		c.ram[cmd-cmdWriteRAM] = v
	case cmd == cmdWriteOutput:
		c.outPort = v
		// Driving the reset line low through the output port resets the
		// CPU just as the pulse command does.
		return v&outReset == 0
	case cmd == cmdKbdLoop:
		c.respond(v, false)
	case cmd == cmdAuxLoop:
		c.respond(v, true)
	}
	// cmdAuxSend and plain data bytes go to a device that is not there.
	return false
}

func (c *Controller) respond(v byte, aux bool) {
	c.out, c.obf, c.auxOut = v, true, aux
}
