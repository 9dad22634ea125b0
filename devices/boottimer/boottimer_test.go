package boottimer

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/devices/boottimer/report"
	"github.com/vmm-dev/vmm/guestabi"
)

// newAt returns a Timer started at a fixed point, and stamps phases at
// given offsets through the unexported clock-free path.
func newAt() *Timer { return New(time.Now()) }

func TestGuestWrites(t *testing.T) {
	tests := []struct {
		name   string
		offset uint64
		data   []byte
		want   guestabi.Phase // 0: nothing recorded beyond guestabi.VMMStart
	}{
		{"init-start", 0, []byte{byte(guestabi.InitStart)}, guestabi.InitStart},
		{"ready", 0, []byte{byte(guestabi.Ready)}, guestabi.Ready},
		{"custom guest code", 0, []byte{0x42}, 0x42},
		{"highest code", 0, []byte{0xff}, 0xff},
		{"host code refused", 0, []byte{byte(guestabi.Poweroff)}, 0},
		{"vmm-start forged", 0, []byte{byte(guestabi.VMMStart)}, 0},
		{"zero", 0, []byte{0}, 0},
		{"word write", 0, []byte{byte(guestabi.Ready), 0}, 0},
		{"dword write", 0, []byte{byte(guestabi.Ready), 0, 0, 0}, 0},
		{"empty write", 0, nil, 0},
		{"offset 1", 1, []byte{byte(guestabi.Ready)}, 0},
		{"huge offset", ^uint64(0), []byte{byte(guestabi.Ready)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm := newAt()
			tm.Write(tt.offset, tt.data)
			st := tm.Stamps()
			if tt.want == 0 {
				if len(st) != 1 || st[0].Phase != guestabi.VMMStart {
					t.Fatalf("stamps %v, want only vmm-start", st)
				}
				return
			}
			if len(st) != 2 || st[1].Phase != tt.want {
				t.Fatalf("stamps %v, want vmm-start then %v", st, tt.want)
			}
		})
	}
}

func TestFirstStampWins(t *testing.T) {
	tm := newAt()
	tm.stamp(guestabi.Ready, 5*time.Millisecond)
	tm.stamp(guestabi.Ready, 9*time.Millisecond)
	tm.Write(0, []byte{byte(guestabi.Ready)}) // now: far later than 5 ms? no: must not replace either way
	tm.stamp(guestabi.InitStart, 3*time.Millisecond)
	tm.stamp(guestabi.FirstRun, -time.Second) // clamped, not lost
	got := tm.Stamps()
	want := []report.Stamp{{Phase: guestabi.VMMStart}, {Phase: guestabi.FirstRun}, {Phase: guestabi.InitStart, Since: 3 * time.Millisecond}, {Phase: guestabi.Ready, Since: 5 * time.Millisecond}}
	if len(got) != len(want) {
		t.Fatalf("stamps %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stamp %d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
}

func TestMarkUsesTheStartTime(t *testing.T) {
	tm := New(time.Now().Add(-time.Hour))
	tm.Mark(guestabi.MemoryReady)
	st := tm.Stamps()
	if len(st) != 2 || st[1].Phase != guestabi.MemoryReady || st[1].Since < time.Hour || st[1].Since > time.Hour+time.Minute {
		t.Fatalf("stamps %v, want memory-ready about 1h after start", st)
	}
}

func TestReadIsAllOnes(t *testing.T) {
	tm := newAt()
	for _, n := range []int{1, 2, 4} {
		b := make([]byte, n)
		tm.Read(0, b)
		for _, v := range b {
			if v != 0xff {
				t.Fatalf("read %d bytes: %x", n, b)
			}
		}
	}
	if len(tm.Stamps()) != 1 {
		t.Fatal("a read stamped something")
	}
}

func TestConcurrentMarks(t *testing.T) {
	tm := newAt()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				tm.Mark(guestabi.FirstExit)
				tm.Write(0, []byte{byte(i)})
			}
		}()
	}
	wg.Wait()
	seen := map[guestabi.Phase]int{}
	for _, s := range tm.Stamps() {
		seen[s.Phase]++
	}
	for p, n := range seen {
		if n != 1 {
			t.Fatalf("phase %v stamped %d times", p, n)
		}
	}
	// Every guest code (0x10-0xff), plus vmm-start and first-exit.
	if want := 256 - int(guestabi.GuestMin) + 2; len(seen) != want {
		t.Fatalf("%d phases stamped, want %d", len(seen), want)
	}
}

func TestHotPathsAllocateNothing(t *testing.T) {
	tm := newAt()
	b := []byte{byte(guestabi.Ready)}
	if n := testing.AllocsPerRun(100, func() {
		tm.Write(0, b)
		tm.Mark(guestabi.FirstExit)
		tm.Read(0, b[:1])
	}); n != 0 {
		t.Fatalf("%v allocations per write+mark+read", n)
	}
}

func TestReportRoundTrip(t *testing.T) {
	tm := newAt()
	tm.stamp(guestabi.MemoryReady, 1500*time.Microsecond)
	tm.stamp(guestabi.InitStart, 812300*time.Microsecond)
	tm.stamp(0x42, 900*time.Millisecond)
	tm.stamp(guestabi.VMMExit, 2*time.Second+time.Microsecond)
	var b strings.Builder
	if err := tm.WriteReport(&b); err != nil {
		t.Fatal(err)
	}
	want := "boot-timer: vmm-start 0.000ms\n" +
		"boot-timer: memory-ready 1.500ms\n" +
		"boot-timer: init-start 812.300ms\n" +
		"boot-timer: guest-0x42 900.000ms\n" +
		"boot-timer: vmm-exit 2000.001ms\n"
	if b.String() != want {
		t.Fatalf("report:\n%s\nwant:\n%s", b.String(), want)
	}
	// Among other output, as it comes from vmm's stderr.
	in := "vmm: something\n" + b.String() + "trailing\n"
	got, err := report.ParseReport(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	orig := tm.Stamps()
	if len(got) != len(orig) {
		t.Fatalf("parsed %v, want %v", got, orig)
	}
	for i := range got {
		if got[i].Phase != orig[i].Phase || (got[i].Since-orig[i].Since).Abs() > time.Microsecond {
			t.Fatalf("parsed %v, want %v", got[i], orig[i])
		}
	}
}
