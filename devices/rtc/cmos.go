// Package rtc emulates the PC's MC146818 CMOS real-time clock and its
// battery-backed RAM, at ports 0x70 (index) and 0x71 (data).
//
// A distro kernel probes the RTC at boot and, if it reads nonsense (an
// absent chip reads 0xff, so the update-in-progress bit never clears),
// spends seconds retrying before printing "rtc_cmos: broken or not
// accessible". So the chip answers as a real one: the time follows the
// host clock, the update-in-progress bit comes and goes with the seconds,
// and a time the guest sets (hwclock -w) sticks as an offset from the host
// clock. There is no interrupt line: the status C flags are computed when
// read, which is enough for polling guests.
package rtc

import (
	"sync"
	"time"
)

// Port offsets from the base (0x70).
const (
	portIndex = 0
	portData  = 1

	// NumPorts is how many I/O ports the RTC decodes.
	NumPorts = 2
)

// indexNMIMask is bit 7 of the index port: on a PC it masks NMI, it does
// not select a register.
const indexNMIMask = 0x80

// Register indexes, from the MC146818A datasheet (Table 2, "Address Map")
// and Linux include/linux/mc146818rtc.h. The century byte's index is a PC
// convention (the ACPI FADT's CENTURY field normally names 0x32).
const (
	regSeconds      = 0x00
	regSecondsAlarm = 0x01
	regMinutes      = 0x02
	regMinutesAlarm = 0x03
	regHours        = 0x04
	regHoursAlarm   = 0x05
	regDayOfWeek    = 0x06
	regDayOfMonth   = 0x07
	regMonth        = 0x08
	regYear         = 0x09
	regA            = 0x0a
	regB            = 0x0b
	regC            = 0x0c
	regD            = 0x0d
	regCentury      = 0x32

	// Size is the number of addressable bytes, clock registers included.
	Size = 128
)

// Status register A (mc146818rtc.h RTC_FREQ_SELECT).
const (
	aUIP = 0x80 // update in progress
	// aDivReset is DV2-1 = 11: the divider chain held in reset
	// (RTC_DIV_RESET1/2). Any other divider value counts: PC chipsets
	// reuse DV0 and kernels have cleared the whole field (Linux did on AMD
	// family 17h) without meaning to stop the clock.
	aDivReset = 0x60
	aRate     = 0x0f // RS3-0, periodic interrupt rate
	aDefault  = 0x26 // DV=010 (32.768 kHz), 1024 Hz periodic rate: what PC firmware sets
)

// Status register B (mc146818rtc.h RTC_CONTROL).
const (
	bSET     = 0x80 // hold updates while software sets the time
	bPIE     = 0x40
	bAIE     = 0x20
	bUIE     = 0x10
	bDM      = 0x04 // data mode: 1 = binary, 0 = BCD
	b24h     = 0x02
	bDefault = b24h // BCD, 24-hour: what PC firmware and Linux expect
)

// Status register C (RTC_INTR_FLAGS) uses the same bit positions for its
// flags as B does for their enables.
const (
	cIRQF  = 0x80
	cPF    = 0x40
	cAF    = 0x20
	cUF    = 0x10
	cFlags = cPF | cAF | cUF
)

// Status register D (RTC_VALID): VRT, the battery is good. Linux's probe
// insists that bit 6 be clear.
const dVRT = 0x80

const (
	// uipWindow is t_BUC: UIP rises this long before an update. Updates
	// here are instantaneous, so UIP is only the warning, which is what
	// Linux's mc146818_avoid_UIP and hwclock's tick sync key on.
	uipWindow = 244 * time.Microsecond

	// startDelay is how long after the divider chain leaves reset the
	// first update comes (datasheet, "Divider Chain"); hwclock and Linux's
	// rtc_set_ntp_time time their writes around it.
	startDelay = 500 * time.Millisecond

	// alarmScan caps how many elapsed seconds are checked against the
	// alarm: any alarm pattern matches within a day.
	alarmScan = 24 * 60 * 60
)

// CMOS is the RTC chip. Its zero value is not usable; call New.
type CMOS struct {
	now func() time.Time

	mu     sync.Mutex
	index  byte
	nmiOff bool       // recorded only; NMIs are the irqchip's business
	ram    [Size]byte // everything but the clock and status C/D
	clk    clock
	flags  byte      // status C flags not yet read
	pfMark time.Time // last read of status C, for the periodic flag
}

// clock holds the time registers as the chip does: raw values that change
// only at an update. Keeping them raw (not a time.Time) is what lets a
// guest write month then day without the intermediate date (February 31)
// being normalised into March.
type clock struct {
	sec, min, hour, dow, day, month, year int // year includes the century

	// at is a host instant of a divider rollover: the fields became
	// current at at, and the next update is due at at+1s.
	at time.Time
}

// New returns an RTC set to now()'s time in UTC, the convention Linux
// assumes on x86, with status registers as PC firmware leaves them.
func New(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: func() time.Time { return now().Round(0).UTC() }}
	t := c.now()
	c.clk.at = t.Truncate(time.Second)
	c.clk.set(c.clk.at)
	c.clk.dow = int(c.clk.at.Weekday()) + 1
	c.ram[regA] = aDefault
	c.ram[regB] = bDefault
	c.pfMark = t
	return c
}

// Read handles a guest IN. A wider access reads index then data, as an
// 8-bit ISA device answers one.
func (c *CMOS) Read(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		switch offset + uint64(i) {
		case portData:
			data[i] = c.readReg(c.index)
		default:
			data[i] = 0xff // the index port is write-only
		}
	}
}

// Write handles a guest OUT, a byte at a time like Read.
func (c *CMOS) Write(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range data {
		switch offset + uint64(i) {
		case portIndex:
			c.index = v &^ indexNMIMask
			c.nmiOff = v&indexNMIMask != 0
		case portData:
			c.writeReg(c.index, v)
		}
	}
}

func (c *CMOS) readReg(r byte) byte {
	now := c.now()
	c.tick(now)
	switch r {
	case regSeconds:
		return c.enc(c.clk.sec)
	case regMinutes:
		return c.enc(c.clk.min)
	case regHours:
		return c.encHour(c.clk.hour)
	case regDayOfWeek:
		return c.enc(c.clk.dow)
	case regDayOfMonth:
		return c.enc(c.clk.day)
	case regMonth:
		return c.enc(c.clk.month)
	case regYear:
		return c.enc(mod(c.clk.year, 100))
	case regCentury:
		return c.enc(div(c.clk.year, 100))
	case regA:
		v := c.ram[regA]
		if c.running() && now.Sub(c.clk.at) >= time.Second-uipWindow {
			v |= aUIP
		}
		return v
	case regC:
		c.periodic(now)
		v := c.flags
		if v&c.ram[regB]&cFlags != 0 {
			v |= cIRQF
		}
		c.flags = 0
		return v
	case regD:
		return dVRT
	}
	return c.ram[r%Size]
}

func (c *CMOS) writeReg(r byte, v byte) {
	now := c.now()
	c.tick(now)
	switch r {
	case regSeconds:
		c.clk.sec = c.dec(v)
	case regMinutes:
		c.clk.min = c.dec(v)
	case regHours:
		c.clk.hour = c.decHour(v)
	case regDayOfWeek:
		c.clk.dow = c.dec(v)
	case regDayOfMonth:
		c.clk.day = c.dec(v)
	case regMonth:
		c.clk.month = c.dec(v)
	case regYear:
		c.clk.year = div(c.clk.year, 100)*100 + c.dec(v)
	case regCentury:
		c.clk.year = c.dec(v)*100 + mod(c.clk.year, 100)
	case regA:
		wasDividing := c.dividing()
		c.ram[regA] = v &^ aUIP
		if !wasDividing && c.dividing() {
			c.clk.at = now.Add(-startDelay)
		}
		c.resume(now)
	case regB:
		if v&bSET != 0 && c.ram[regB]&bSET == 0 {
			v &^= bUIE // the chip clears UIE when SET goes high
		}
		c.ram[regB] = v
		c.resume(now)
	case regC, regD:
		// read-only
	default:
		c.ram[r%Size] = v
	}
}

// running reports whether the clock counts: the divider chain runs and
// software is not holding updates with SET.
func (c *CMOS) running() bool {
	return c.dividing() && c.ram[regB]&bSET == 0
}

func (c *CMOS) dividing() bool { return c.ram[regA]&aDivReset != aDivReset }

// resume realigns the clock to the divider after a hold. The divider keeps
// its phase while SET holds updates, so the first update after SET clears
// comes at the next rollover, not a full second later. Re-aligning an
// already running clock is a no-op.
func (c *CMOS) resume(now time.Time) {
	if !c.running() {
		return
	}
	if k := floorSeconds(now.Sub(c.clk.at)); k > 0 {
		c.clk.at = c.clk.at.Add(time.Duration(k) * time.Second)
	}
}

// tick performs the updates that fell due since the last access, raising
// the update-ended and alarm flags as the chip would have.
func (c *CMOS) tick(now time.Time) {
	if !c.running() {
		return
	}
	k := floorSeconds(now.Sub(c.clk.at))
	if k == 0 {
		return
	}
	from := c.clk.time()
	c.clk.at = c.clk.at.Add(time.Duration(k) * time.Second)
	to := from.Add(time.Duration(k) * time.Second)
	days := div64(to.Unix(), 86400) - div64(from.Unix(), 86400)
	dow := c.clk.dow - 1 + int(days%7)
	c.clk.set(to)
	c.clk.dow = mod(dow, 7) + 1
	if k < 0 {
		return // the host clock stepped back: no update happened
	}
	c.flags |= cUF
	if c.flags&cAF == 0 {
		for i := max(1, k-alarmScan+1); i <= k; i++ {
			if c.alarmMatches(from.Add(time.Duration(i) * time.Second)) {
				c.flags |= cAF
				break
			}
		}
	}
}

// alarmMatches compares a time with the alarm registers in the current
// data mode; an alarm byte with its top two bits set matches anything.
func (c *CMOS) alarmMatches(t time.Time) bool {
	h, m, s := t.Clock()
	match := func(alarm, now byte) bool { return alarm&0xc0 == 0xc0 || alarm == now }
	return match(c.ram[regSecondsAlarm], c.enc(s)) &&
		match(c.ram[regMinutesAlarm], c.enc(m)) &&
		match(c.ram[regHoursAlarm], c.encHour(h))
}

// periodic raises PF if a period of the rate selected in status A has
// passed since status C was last read.
func (c *CMOS) periodic(now time.Time) {
	rs := int(c.ram[regA] & aRate)
	if rs == 0 || !c.dividing() {
		c.pfMark = now
		return
	}
	if rs < 3 {
		rs += 7 // RS 1 and 2 repeat rates 8 and 9 (256 and 128 Hz)
	}
	period := time.Second * time.Duration(1<<(rs-1)) / 32768
	if now.Sub(c.pfMark) >= period {
		c.flags |= cPF
	}
	c.pfMark = now
}

func (c *CMOS) binary() bool { return c.ram[regB]&bDM != 0 }

// enc renders a value in the data mode selected by status B. Only
// register contents a guest wrote can be out of range; they wrap.
func (c *CMOS) enc(v int) byte {
	if c.binary() {
		return byte(v)
	}
	v = mod(v, 100)
	return byte(v/10<<4 | v%10)
}

func (c *CMOS) dec(b byte) int {
	if c.binary() {
		return int(b)
	}
	return int(b>>4)*10 + int(b&0x0f)
}

// encHour renders 0-23 as is in 24-hour mode, or as 1-12 with bit 7 for
// PM in 12-hour mode.
func (c *CMOS) encHour(h int) byte {
	if c.ram[regB]&b24h != 0 {
		return c.enc(h)
	}
	h = mod(h, 24)
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	v := c.enc(h12)
	if h >= 12 {
		v |= 0x80
	}
	return v
}

func (c *CMOS) decHour(b byte) int {
	if c.ram[regB]&b24h != 0 {
		return c.dec(b)
	}
	h := c.dec(b &^ 0x80)
	if h == 12 {
		h = 0
	}
	if b&0x80 != 0 {
		h += 12
	}
	return h
}

// time normalises the registers into a date; out-of-range values a guest
// wrote carry over as time.Date does, which is where the update cycle
// would have taken them.
func (k *clock) time() time.Time {
	return time.Date(k.year, time.Month(k.month), k.day, k.hour, k.min, k.sec, 0, time.UTC)
}

func (k *clock) set(t time.Time) {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	k.year, k.month, k.day, k.hour, k.min, k.sec = y, int(mo), d, h, mi, s
}

// floorSeconds is how many whole seconds d spans, rounding down, so an
// instant before at falls in the previous second.
func floorSeconds(d time.Duration) int64 {
	k := int64(d / time.Second)
	if d%time.Second < 0 {
		k--
	}
	return k
}

func mod(a, b int) int { return (a%b + b) % b }

func div(a, b int) int { return (a - mod(a, b)) / b }

func div64(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}
