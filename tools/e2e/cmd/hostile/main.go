//go:build linux && amd64

// Command hostile is a guest program that attacks the VMM it runs under
// (issue 5: "a hostile guest"). The end-to-end suite runs it as a `vmm
// run` job, shared into the guest with -share, on a guest with two disks:
// one writable, one read-only. As root it
//
//  1. writes random values to the I/O ports and reads each back (every
//     port vmm has and 8 neighbours either side with all widths; a
//     sample of the others, where vmm has nothing, with a byte), except
//     the few that would end the run or that KVM serves itself
//     (ports.go);
//  2. unbinds the guest's virtio_mmio driver from every device and,
//     through /dev/mem, writes random values of every width at every
//     offset of every virtio-mmio window, the unclaimed bytes after it
//     and across its page boundaries, and the start of a few unclaimed
//     pages elsewhere (mmio.go);
//  3. drives the writable disk itself with queues it builds in locked
//     memory of its own (their guest-physical addresses from
//     /proc/self/pagemap): queue rings outside RAM, misaligned or of
//     impossible sizes; chains with loops, indices and buffers out of
//     range, lengths up to 4 GiB, nested, looping or oversized indirect
//     tables, an avail index far ahead; and bad requests in sound
//     chains. Each must be refused (DEVICE_NEEDS_RESET) or answered
//     (an error status) as the virtio spec asks (cases.go);
//  4. asks the read-only disk to write, zero and discard;
//  5. writes garbage to the read-only disk's registers while an honest
//     driver streams reads through it on another thread;
//  6. resets both disks and does honest I/O on them: a sector written,
//     flushed and read back on the writable disk, sector 0 read on both.
//
// It prints what it did and found on stdout, one line per step or case,
// and exits 0 when every device behaved as expected, exitMisbehaved when
// one did not and exitFatal when it could not mount the attack: the
// guest's init reports that through vmm's exit port. (Not 1, which `vmm
// run` uses for its own failures.) What vmm itself did
// (no crash, a log line for the malformed queues, the images untouched
// but for step 6's write) is for the test to check on the host side.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// Exit statuses besides 0.
const (
	exitMisbehaved = 3
	exitFatal      = 4
)

func main() {
	seed := flag.Uint64("seed", 0, "random seed; 0 picks one from the clock (printed, to replay a run)")
	pattern := flag.String("pattern", "hostile-recovery ", "text repeated over the sector the recovery step writes")
	garbage := flag.Int("garbage-writes", 1000, "register writes while an honest driver runs")
	flag.Parse()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	os.Exit(run(*seed, *pattern, *garbage))
}

// report prints progress lines and counts the failures.
type report struct{ ok, failed int }

func (r *report) line(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func (r *report) check(name, detail string, err error) {
	if err != nil {
		r.failed++
		fmt.Printf("case %s: FAIL: %v\n", name, err)
		return
	}
	r.ok++
	fmt.Printf("case %s: ok: %s\n", name, detail)
}

func run(seed uint64, pattern string, garbageWrites int) int {
	rep := &report{}
	fatal := func(err error) int {
		rep.line("hostile: fatal: %v", err)
		return exitFatal
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rep.line("hostile: seed %d", seed)
	devs, err := findDevices()
	if err != nil {
		return fatal(err)
	}
	for _, d := range devs {
		if err := unbind(d); err != nil {
			return fatal(err)
		}
		rep.line("hostile: %s at %#x unbound from virtio_mmio", d.name, d.addr)
	}
	mem, err := os.OpenFile("/dev/mem", os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return fatal(err)
	}
	defer mem.Close()

	// Find the writable and the read-only disk before the garbage makes
	// a mess of their registers.
	var rw, ro *device
	for _, m := range devs {
		regs, err := mapPhys(mem, m.addr, pageSize)
		if err != nil {
			return fatal(err)
		}
		d := &device{mmioDevice: m, regs: regs[:windowSize]}
		d.w32(regDevFeatSel, 0)
		readOnly := d.r32(regDeviceFeatures)&(1<<5) != 0 // VIRTIO_BLK_F_RO (virtio v1.2 §5.2.3)
		rep.line("hostile: %s: device %d, read-only %v", m.name, d.r32(regDeviceID), readOnly)
		switch {
		case readOnly && ro == nil:
			ro = d
		case !readOnly && rw == nil:
			rw = d
		}
	}
	if rw == nil || ro == nil {
		return fatal(fmt.Errorf("need a writable and a read-only disk, found %d devices", len(devs)))
	}

	line, err := attackPorts(rng)
	if err != nil {
		return fatal(err)
	}
	rep.line("hostile: %s", line)
	lines, err := attackMMIO(mem, devs, rng)
	if err != nil {
		return fatal(err)
	}
	for _, l := range lines {
		rep.line("hostile: %s", l)
	}

	pages, err := allocDMA(6)
	if err != nil {
		return fatal(err)
	}
	if err := rw.reset(); err != nil {
		return fatal(err)
	}
	capacity := rw.capacity()
	rep.line("hostile: %s: %d sectors; crafted queues follow", rw.name, capacity)
	b := bufs{misc: pages[1], data: pages[2]}
	for _, c := range crafts(capacity) {
		detail, err := runCraft(rw, c, pages[0], b)
		rep.check(c.name, detail, err)
	}
	for _, c := range roCrafts() {
		detail, err := runCraft(ro, c, pages[0], b)
		rep.check(c.name, detail, err)
	}
	roBufs := bufs{misc: pages[4], data: pages[5]}
	detail, err := garbageWhileRunning(ro, pages[3], roBufs, garbageWrites, rng)
	rep.check("garbage-while-running", detail, err)

	sector := []byte(strings.Repeat(pattern, sectorSize/len(pattern)+1)[:sectorSize])
	for _, t := range []struct {
		d       *device
		pattern []byte
	}{{rw, sector}, {ro, nil}} {
		head, err := roundTrip(t.d, pages[0], b, t.pattern)
		rep.check("recovery-"+t.d.name, "sector 0 starts "+head, err)
		if err == nil {
			rep.line("hostile: %s sector0 %s", t.d.name, head)
		}
	}
	rep.line("hostile: done: %d cases ok, %d failed", rep.ok, rep.failed)
	if rep.failed > 0 {
		return exitMisbehaved
	}
	return 0
}
