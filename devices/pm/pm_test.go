package pm

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// counter is a poweroff or reset callback that counts its calls.
type counter struct{ n atomic.Int32 }

func (c *counter) fn()        { c.n.Add(1) }
func (c *counter) get() int32 { return c.n.Load() }

func newTestPM() (*PM, *counter, *counter) {
	var off, rst counter
	return New(off.fn, rst.fn), &off, &rst
}

func read16(p *PM, off uint64) uint16 {
	var b [2]byte
	p.Read(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func write16(p *PM, off uint64, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	p.Write(off, b[:])
}

// Bit positions as the tests spell them, straight from ACPI 6.4
// §4.8.3.2.1 Table 4.18, rather than the package's constants.
const (
	tSCIEn  = 1 << 0
	tSlpEn  = 1 << 13
	tSlpTyp = 7 << 10
)

// TestLinuxPoweroff replays what ACPICA's acpi_hw_legacy_sleep does for
// S5: clear WAK_STS and all fixed status, read PM1 control, write SLP_TYP
// with SLP_EN clear, then the same value with SLP_EN set.
func TestLinuxPoweroff(t *testing.T) {
	p, off, rst := newTestPM()
	p.sts = pm1StsMask // as if events were pending

	write16(p, 0, 0x8000) // WAK_STS
	write16(p, 0, 0xffff) // all fixed status bits
	if s := read16(p, 0); s != 0 {
		t.Fatalf("PM1 status %#x after clearing everything", s)
	}
	cnt := read16(p, 4)
	if cnt&tSCIEn == 0 {
		t.Fatalf("PM1 control %#x: SCI_EN clear; ACPI would think SMM owns the hardware", cnt)
	}
	cnt = cnt&^(tSlpTyp|tSlpEn) | SleepTypeS5<<10
	write16(p, 4, cnt)
	if off.get() != 0 {
		t.Fatal("poweroff on the SLP_TYP write, before SLP_EN")
	}
	write16(p, 4, cnt|tSlpEn)
	if off.get() != 1 || rst.get() != 0 {
		t.Fatalf("after SLP_EN: %d poweroffs, %d resets; want 1, 0", off.get(), rst.get())
	}
	// Linux retries after 10 s if it is still running; so do we.
	write16(p, 4, cnt|tSlpEn)
	if off.get() != 2 {
		t.Errorf("retried S5: %d poweroffs, want 2", off.get())
	}
}

func TestOtherSleepTypesIgnored(t *testing.T) {
	p, off, rst := newTestPM()
	for typ := uint16(0); typ < 8; typ++ {
		if typ == SleepTypeS5 {
			continue
		}
		write16(p, 4, typ<<10|tSlpEn|tSCIEn)
	}
	write16(p, 4, SleepTypeS5<<10) // S5 type without SLP_EN
	if off.get() != 0 || rst.get() != 0 {
		t.Errorf("%d poweroffs, %d resets; want none", off.get(), rst.get())
	}
}

func TestControlReadBack(t *testing.T) {
	p, _, _ := newTestPM()
	if got := read16(p, 4); got != tSCIEn {
		t.Errorf("PM1 control at reset = %#x, want SCI_EN only", got)
	}
	write16(p, 4, 0)
	if got := read16(p, 4); got&tSCIEn == 0 {
		t.Errorf("SCI_EN cleared by a write (%#x); it is fixed at 1", got)
	}
	write16(p, 4, 3<<10|tSlpEn|1<<1|1<<2|1<<15)
	// SLP_TYP and BM_RLD stick; SLP_EN and GBL_RLS are write-only;
	// reserved bit 15 reads 0.
	if got, want := read16(p, 4), uint16(3<<10|1<<1|tSCIEn); got != want {
		t.Errorf("PM1 control = %#x, want %#x", got, want)
	}
}

func TestStatusWriteOneToClear(t *testing.T) {
	p, _, _ := newTestPM()
	p.sts = pm1StsMask
	write16(p, 0, 0)
	if got := read16(p, 0); got != pm1StsMask {
		t.Errorf("writing 0 changed status to %#x", got)
	}
	write16(p, 0, 1<<8) // PWRBTN_STS
	if got, want := read16(p, 0), uint16(pm1StsMask&^(1<<8)); got != want {
		t.Errorf("after clearing PWRBTN_STS: %#x, want %#x", got, want)
	}
	p.Write(1, []byte{0x80}) // WAK_STS, through the high byte alone
	if got, want := read16(p, 0), uint16(pm1StsMask&^(1<<8|1<<15)); got != want {
		t.Errorf("after clearing WAK_STS by byte: %#x, want %#x", got, want)
	}
	p.Write(0, []byte{0xff})
	if got, want := read16(p, 0), uint16(pm1StsMask&0xff00&^(1<<8|1<<15)); got != want {
		t.Errorf("after clearing the low byte: %#x, want %#x", got, want)
	}
}

func TestEnableIsStorage(t *testing.T) {
	p, _, _ := newTestPM()
	write16(p, 2, 0xffff)
	if got := read16(p, 2); got != pm1EnMask {
		t.Errorf("PM1 enable = %#x, want the defined bits %#x", got, uint16(pm1EnMask))
	}
	// GBL_EN must stick: ACPICA decides whether the global lock exists
	// by reading it back.
	write16(p, 2, 1<<5)
	if got := read16(p, 2); got != 1<<5 {
		t.Errorf("PM1 enable = %#x after writing GBL_EN", got)
	}
	p.Write(3, []byte{0x01}) // PWRBTN_EN via the high byte
	if got := read16(p, 2); got != 1<<5|1<<8 {
		t.Errorf("PM1 enable = %#x after a high-byte write, want %#x", got, 1<<5|1<<8)
	}
}

func TestByteAndDwordAccesses(t *testing.T) {
	p, off, _ := newTestPM()
	// S5 through single bytes: low byte, then the high byte holding both
	// SLP_TYP (bits 2-4) and SLP_EN (bit 5).
	p.Write(4, []byte{0x01})
	if off.get() != 0 {
		t.Fatal("poweroff from a low-byte write")
	}
	p.Write(5, []byte{SleepTypeS5<<2 | 1<<5})
	if off.get() != 1 {
		t.Fatalf("byte-wise S5: %d poweroffs, want 1", off.get())
	}

	// One dword across PM1 enable and PM1 control.
	p, off, _ = newTestPM()
	p.Write(2, []byte{0x20, 0x01, 0x00, SleepTypeS5<<2 | 1<<5})
	if off.get() != 1 {
		t.Errorf("dword S5 at offset 2: %d poweroffs, want 1", off.get())
	}
	if got := read16(p, 2); got != 1<<5|1<<8 {
		t.Errorf("PM1 enable = %#x after the dword write", got)
	}

	// A dword read spanning the whole event block matches two words.
	p.sts = 1 << 8
	var b [4]byte
	p.Read(0, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got != uint32(read16(p, 2))<<16|uint32(read16(p, 0)) {
		t.Errorf("dword read %#x disagrees with word reads", got)
	}
	// Odd, straddling and out-of-block accesses are answered, not
	// refused: reserved bytes and bytes past the block read as 0.
	var q [8]byte
	for i := range q {
		q[i] = 0xee
	}
	p.Read(5, q[:])
	if q[0] != SleepTypeS5<<2 || q[1] != 0 || q[2] != 0 || q[3] != 0 {
		t.Errorf("8-byte read at 5 = % x", q)
	}
	p.Read(12, q[:])
	if q != [8]byte{} {
		t.Errorf("read straddling the end = % x, want zeros", q)
	}
	p.Read(^uint64(0)-1, q[:4])
	if q != [8]byte{} {
		t.Errorf("read at the top of the address space = % x, want zeros", q)
	}
	p.Write(^uint64(0)-1, []byte{1, 2, 3, 4})
	p.Write(14, []byte{1, 2, 3, 4, 5, 6, 7, 8})
}

func TestReset(t *testing.T) {
	p, off, rst := newTestPM()
	p.Write(8, []byte{ResetValue + 1})
	if rst.get() != 0 {
		t.Fatal("reset on the wrong value")
	}
	p.Write(8, []byte{ResetValue})
	if rst.get() != 1 || off.get() != 0 {
		t.Fatalf("%d resets, %d poweroffs; want 1, 0", rst.get(), off.get())
	}
	// The register is one byte wide; a word write reaching it from
	// offset 7 still delivers its high byte there.
	p.Write(7, []byte{0, ResetValue})
	if rst.get() != 2 {
		t.Errorf("word write at 7: %d resets, want 2", rst.get())
	}
	var b [1]byte
	p.Read(8, b[:])
	if b[0] != 0 {
		t.Errorf("reset register reads %#x, want 0", b[0])
	}
}

func TestNilCallbacks(t *testing.T) {
	p := New(nil, nil)
	write16(p, 4, SleepTypeS5<<10|tSlpEn)
	p.Write(8, []byte{ResetValue})
}

// TestCallbacksRunUnlocked: a callback that touches the device (as a
// machine's stop path might, to log state) must not deadlock.
func TestCallbacksRunUnlocked(t *testing.T) {
	var p *PM
	var seen uint16
	p = New(func() { seen = read16(p, 4) }, nil)
	write16(p, 4, SleepTypeS5<<10|tSlpEn)
	if seen != SleepTypeS5<<10|tSCIEn {
		t.Errorf("callback read PM1 control %#x", seen)
	}
}

// TestConcurrentAccess is for -race: vCPU threads hit the block at once.
func TestConcurrentAccess(t *testing.T) {
	p, _, _ := newTestPM()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 4)
			for range 2000 {
				w := 1 << r.IntN(3)
				o := uint64(r.IntN(Size))
				if r.IntN(2) == 0 {
					p.Read(o, buf[:w])
				} else {
					for i := range w {
						buf[i] = byte(r.Uint32())
					}
					p.Write(o, buf[:w])
				}
			}
		}()
	}
	wg.Wait()
}
