package i8042

import (
	"errors"
	"testing"
)

func in(c *Controller, port uint64) byte {
	var b [1]byte
	c.Read(port, b[:])
	return b[0]
}

func out(c *Controller, port uint64, v byte) { c.Write(port, []byte{v}) }

// linuxCommand is __i8042_command() from drivers/input/serio/i8042.c: the
// command word carries the parameter counts (bits 12-15 out, 8-11 in), and
// each byte waits, by polling status, for IBF clear or OBF set.
func linuxCommand(c *Controller, param []byte, command uint16) error {
	waitWrite := func() error {
		for i := 0; i < 10000; i++ {
			if in(c, portStatus)&statusIBF == 0 {
				return nil
			}
		}
		return errors.New("timeout waiting for IBF clear")
	}
	waitRead := func() error {
		for i := 0; i < 10000; i++ {
			if in(c, portStatus)&statusOBF != 0 {
				return nil
			}
		}
		return errors.New("timeout waiting for OBF")
	}
	if err := waitWrite(); err != nil {
		return err
	}
	out(c, portStatus, byte(command))
	for i := range int(command >> 12 & 0xf) {
		if err := waitWrite(); err != nil {
			return err
		}
		out(c, portData, param[i])
	}
	for i := range int(command >> 8 & 0xf) {
		if err := waitRead(); err != nil {
			return err
		}
		if command == 0x11d3 && in(c, portStatus)&statusAuxData == 0 {
			return errors.New("AUX loop answered from the keyboard side")
		}
		param[i] = in(c, portData)
	}
	return nil
}

// TestLinuxProbe walks the Linux i8042 driver's bring-up: flush, self
// test, CTR read/write, the AUX loopback and toggle checks. Every command
// must answer at once: a timeout costs the guest half a second of boot.
func TestLinuxProbe(t *testing.T) {
	c := New(nil)
	// i8042_flush: nothing is pending, so the status never shows OBF.
	if s := in(c, portStatus); s&statusOBF != 0 || s == 0xff {
		t.Fatalf("status %#x: Linux would find no controller", s)
	}
	p := make([]byte, 1)
	for _, step := range []struct {
		name    string
		command uint16
		param   byte
		check   func(got byte) bool
	}{
		{"self test", 0x01aa, 0, func(b byte) bool { return b == 0x55 }},
		{"read CTR", 0x0120, 0, func(b byte) bool { return b == ctrDefault }},
		{"read CTR again (stable)", 0x0120, 0, func(b byte) bool { return b == ctrDefault }},
		{"write CTR", 0x1060, ctrDefault | ctrKbdDis, nil},
		{"CTR written", 0x0120, 0, func(b byte) bool { return b == ctrDefault|ctrKbdDis }},
		{"AUX loop", 0x11d3, 0x5a, func(b byte) bool { return b == 0x5a }},
		{"AUX disable", 0x00a7, 0, nil},
		{"AUXDIS set", 0x0120, 0, func(b byte) bool { return b&ctrAuxDis != 0 }},
		{"AUX enable", 0x00a8, 0, nil},
		{"AUXDIS clear", 0x0120, 0, func(b byte) bool { return b&ctrAuxDis == 0 }},
		{"AUX interface test", 0x01a9, 0, func(b byte) bool { return b == 0 }},
		{"keyboard interface test", 0x01ab, 0, func(b byte) bool { return b == 0 }},
		{"keyboard enable", 0x00ae, 0, nil},
		{"KBDDIS clear", 0x0120, 0, func(b byte) bool { return b&ctrKbdDis == 0 }},
		{"keyboard disable", 0x00ad, 0, nil},
		{"KBDDIS set", 0x0120, 0, func(b byte) bool { return b&ctrKbdDis != 0 }},
	} {
		p[0] = step.param
		if err := linuxCommand(c, p, step.command); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if step.check != nil && !step.check(p[0]) {
			t.Errorf("%s: got %#x", step.name, p[0])
		}
		if s := in(c, portStatus); s&statusOBF != 0 {
			t.Errorf("%s: status %#x, byte left behind", step.name, s)
		}
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(c *Controller)
		want  byte
	}{
		{"idle", func(*Controller) {}, statusKeylock},
		{"response waiting", func(c *Controller) { out(c, portStatus, cmdSelfTest) }, statusKeylock | statusOBF},
		{"response read", func(c *Controller) { out(c, portStatus, cmdSelfTest); in(c, portData) }, statusKeylock},
		{"mouse byte waiting", func(c *Controller) { out(c, portStatus, cmdAuxLoop); out(c, portData, 1) },
			statusKeylock | statusOBF | statusAuxData},
		{"keyboard byte waiting", func(c *Controller) { out(c, portStatus, cmdKbdLoop); out(c, portData, 1) },
			statusKeylock | statusOBF},
		{"system flag from CTR", func(c *Controller) { out(c, portStatus, cmdWriteRAM); out(c, portData, ctrSys) },
			statusKeylock | statusSys},
		{"command awaiting data", func(c *Controller) { out(c, portStatus, cmdWriteRAM) }, statusKeylock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil)
			tc.steps(c)
			if s := in(c, portStatus); s != tc.want {
				t.Errorf("status %#x, want %#x", s, tc.want)
			}
		})
	}
}

func TestResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   byte
		data  []byte // written to port 0x60 after the command
		reply byte
	}{
		{"read command byte", cmdReadRAM, nil, ctrDefault},
		{"self test", cmdSelfTest, nil, selfTestOK},
		{"keyboard interface test", cmdKbdTest, nil, interfaceOK},
		{"aux interface test", cmdAuxTest, nil, interfaceOK},
		{"read output port", cmdReadOutput, nil, outReset | outA20},
		{"keyboard loop", cmdKbdLoop, []byte{0xab}, 0xab},
		{"aux loop", cmdAuxLoop, []byte{0xcd}, 0xcd},
		{"internal RAM", cmdReadRAM + 5, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil)
			out(c, portStatus, tc.cmd)
			for _, d := range tc.data {
				out(c, portData, d)
			}
			if s := in(c, portStatus); s&statusOBF == 0 {
				t.Fatalf("status %#x without OBF", s)
			}
			if got := in(c, portData); got != tc.reply {
				t.Errorf("reply %#x, want %#x", got, tc.reply)
			}
			if s := in(c, portStatus); s&statusOBF != 0 {
				t.Errorf("status %#x: reading the data port must clear OBF", s)
			}
			if got := in(c, portData); got != tc.reply {
				t.Errorf("stale read %#x, want %#x again", got, tc.reply)
			}
		})
	}
}

func TestWriteRAM(t *testing.T) {
	c := New(nil)
	for i := range 32 {
		out(c, portStatus, cmdWriteRAM+byte(i))
		out(c, portData, byte(0x80+i))
	}
	for i := range 32 {
		out(c, portStatus, cmdReadRAM+byte(i))
		if got := in(c, portData); got != byte(0x80+i) {
			t.Errorf("RAM[%d] = %#x", i, got)
		}
	}
}

func TestReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps func(c *Controller)
		want  int
	}{
		{"Linux reboot", func(c *Controller) {
			// reboot.c BOOT_KBD: kb_wait() then 0xfe, ten times over.
			for range 10 {
				for in(c, portStatus)&statusIBF != 0 {
				}
				out(c, portStatus, 0xfe)
			}
		}, 10},
		{"pulse nothing", func(c *Controller) { out(c, portStatus, 0xff) }, 0},
		{"pulse A20 only", func(c *Controller) { out(c, portStatus, 0xfd) }, 0},
		{"pulse reset and A20", func(c *Controller) { out(c, portStatus, 0xfc) }, 1},
		{"pulse 0xf0", func(c *Controller) { out(c, portStatus, 0xf0) }, 1},
		{"output port reset low", func(c *Controller) { out(c, portStatus, cmdWriteOutput); out(c, portData, 0xfe) }, 1},
		{"output port A20 on", func(c *Controller) { out(c, portStatus, cmdWriteOutput); out(c, portData, 0xdf) }, 0},
		{"0xfe as data is no command", func(c *Controller) { out(c, portData, 0xfe) }, 0},
		{"0xfe as CTR value", func(c *Controller) { out(c, portStatus, cmdWriteRAM); out(c, portData, 0xfe) }, 0},
		{"other commands", func(c *Controller) {
			for cmd := range 0xf0 {
				out(c, portStatus, byte(cmd))
			}
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resets := 0
			var c *Controller
			c = New(func() {
				resets++
				in(c, portStatus) // deadlocks if reset ran under the lock
			})
			tc.steps(c)
			if resets != tc.want {
				t.Errorf("%d resets, want %d", resets, tc.want)
			}
		})
	}
}

func TestOtherPorts(t *testing.T) {
	c := New(nil)
	for port := uint64(1); port < portStatus; port++ {
		out(c, port, 0)
		if got := in(c, port); got != 0xff {
			t.Errorf("port 0x6%d reads %#x, want 0xff", port, got)
		}
	}
	c.Read(9, make([]byte, 1))
	c.Write(9, []byte{0xfe})
	if s := in(c, portStatus); s != statusKeylock {
		t.Errorf("status %#x after stray accesses", s)
	}
}

func TestDataToAbsentDevices(t *testing.T) {
	c := New(nil)
	out(c, portData, 0xf2)   // atkbd's GET ID to the keyboard
	out(c, portStatus, 0xd4) // the next byte is for the mouse
	out(c, portData, 0xf2)
	if s := in(c, portStatus); s&statusOBF != 0 {
		t.Errorf("status %#x: an absent device answered", s)
	}
}
