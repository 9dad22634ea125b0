//go:build linux && amd64

// Command hostile is a guest program that attacks the VMM it runs under
// (issue 5: "a hostile guest"). The end-to-end suite runs it as a `vmm
// run` job, shared into the guest with -share, on a guest with two disks,
// one writable, one read-only, and a network card on -nic user. As root it
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
//  3. drives the writable disk and both queues of the card itself with
//     queues it builds in locked memory of its own (their guest-physical
//     addresses from /proc/self/pagemap): queue rings outside RAM,
//     misaligned or of impossible sizes; chains with loops, indices and
//     buffers out of range, lengths up to 4 GiB, nested, looping or
//     oversized indirect tables, an avail index far ahead (the same
//     cases on every queue, cases.go); bad requests in sound chains on
//     the disk; and on the card (net.go) transmit chains shorter than
//     the virtio-net header, larger than the device's maximum or with
//     writable buffers, receive buffers read-only or shorter than the
//     header, frames spread over mergeable buffers (num_buffers), and
//     notifications of queues the card does not have. Each must be
//     refused (DEVICE_NEEDS_RESET) or answered as the virtio spec asks.
//     A receive queue is only looked at when a frame comes, so those
//     cases send an ARP request for the user network's gateway;
//  4. asks the read-only disk to write, zero and discard;
//  5. writes garbage to the read-only disk's registers while an honest
//     driver streams reads through it on another thread;
//  6. resets every device it attacked and uses it honestly: a sector
//     written, flushed and read back on the writable disk, sector 0 read
//     on both, and an ARP exchange with the gateway on the card.
//
// With -transport pci, on vmm's virtio-pci transport, it attacks the PCI
// configuration space and BARs instead and recovers through Linux's own
// driver (pci.go); the queues behind either transport are the same code.
//
// It prints what it did and found on stdout, one line per step or case,
// and exits 0 when every device behaved as expected, exitMisbehaved when
// one did not and exitFatal when it could not mount the attack: the
// guest's init reports that through vmm's exit port. (Not 1, which `vmm
// run` uses for its own failures.) What vmm itself did
// (no crash, a log line for the malformed queues, the images untouched
// but for step 6's write) is for the test to check on the host side.
//
// devices_test.go runs steps 3 and 6 on vmm's own devices and transport
// without KVM, so a case whose expectation is wrong fails there first.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
	transport := flag.String("transport", "mmio", "the transport of vmm's virtio devices: mmio (the whole attack above) or pci (pci.go)")
	flag.Parse()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	if *transport == "pci" {
		rep := &report{w: os.Stdout}
		rep.line("hostile: seed %d", *seed)
		sector := []byte(strings.Repeat(*pattern, sectorSize/len(*pattern)+1)[:sectorSize])
		os.Exit(runPCI(rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15)), rep, sector))
	}
	os.Exit(run(*seed, *pattern, *garbage))
}

// report prints progress lines to w and counts the failures.
type report struct {
	w          io.Writer
	ok, failed int
}

func (r *report) line(format string, args ...any) { fmt.Fprintf(r.w, format+"\n", args...) }

func (r *report) check(name, detail string, err error) {
	if err != nil {
		r.failed++
		fmt.Fprintf(r.w, "case %s: FAIL: %v\n", name, err)
		return
	}
	r.ok++
	fmt.Fprintf(r.w, "case %s: ok: %s\n", name, detail)
}

func run(seed uint64, pattern string, garbageWrites int) int {
	rep := &report{w: os.Stdout}
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

	// Find the writable and the read-only disk and the NIC before the
	// garbage makes a mess of their registers.
	var rw, ro, nic *device
	var mac net.HardwareAddr
	for _, m := range devs {
		regs, err := mapPhys(mem, m.addr, pageSize)
		if err != nil {
			return fatal(err)
		}
		d := &device{mmioDevice: m, regs: regs[:windowSize]}
		d.id = d.r32(regDeviceID)
		switch d.id {
		case deviceBlock:
			d.w32(regDevFeatSel, 0)
			readOnly := d.r32(regDeviceFeatures)&(1<<5) != 0 // VIRTIO_BLK_F_RO (virtio v1.2 §5.2.3)
			rep.line("hostile: %s: block device, read-only %v", m.name, readOnly)
			switch {
			case readOnly && ro == nil:
				ro = d
			case !readOnly && rw == nil:
				rw = d
			}
		case deviceNet:
			if nic != nil {
				continue
			}
			nic = d
			lo, hi := d.r32(regConfig), d.r32(regConfig+4)
			mac = net.HardwareAddr{byte(lo), byte(lo >> 8), byte(lo >> 16), byte(lo >> 24), byte(hi), byte(hi >> 8)}
			rep.line("hostile: %s: network device, MAC %v", m.name, mac)
		default:
			rep.line("hostile: %s: device %d", m.name, d.id)
		}
	}
	if rw == nil || ro == nil || nic == nil {
		return fatal(fmt.Errorf("need a writable and a read-only disk and a NIC, found %d devices", len(devs)))
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

	pages, err := allocDMA(11)
	if err != nil {
		return fatal(err)
	}
	if err := rw.reset(); err != nil {
		return fatal(err)
	}
	capacity := rw.capacity()
	rep.line("hostile: %s: %d sectors; crafted queues follow", rw.name, capacity)
	b := bufs{misc: pages[1], data: pages[2]}
	attackDisks(rep, rw, ro, capacity, pages[0], b)
	n := newNIC(nic, mac, pages[6:11])
	attackNIC(rep, n)

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
	detail, err = n.roundTrip()
	rep.check("recovery-"+nic.name, detail, err)
	rep.line("hostile: done: %d cases ok, %d failed", rep.ok, rep.failed)
	if rep.failed > 0 {
		return exitMisbehaved
	}
	return 0
}

// attackDisks runs the crafted queues on the writable disk (the
// virtqueue-level cases, then bad requests) and the refused writes on the
// read-only one.
func attackDisks(rep *report, rw, ro *device, capacity uint64, ringPage dmaPage, b bufs) {
	blk := &target{d: rw, queue: 0, queues: 1, rings: []dmaPage{ringPage}, b: b, chain: blkChain}
	for _, c := range append(queueCrafts(blk, blkHonest), blkCrafts(capacity)...) {
		detail, err := runCraft(blk, c)
		rep.check("blk/"+c.name, detail, err)
	}
	roT := &target{d: ro, queue: 0, queues: 1, rings: []dmaPage{ringPage}, b: b, chain: blkChain}
	for _, c := range roCrafts() {
		detail, err := runCraft(roT, c)
		rep.check("blk/"+c.name, detail, err)
	}
}

// nic is the network card and the pages the attack drives it with.
type nic struct {
	d       *device
	mac     net.HardwareAddr
	rings   [2]dmaPage // RX, TX
	b       bufs
	arpPage dmaPage
}

// newNIC takes five pages: the two rings, buffers and the ARP request.
func newNIC(d *device, mac net.HardwareAddr, pages []dmaPage) *nic {
	return &nic{d: d, mac: mac, rings: [2]dmaPage{pages[0], pages[1]}, b: bufs{misc: pages[2], data: pages[3]}, arpPage: pages[4]}
}

func (n *nic) roundTrip() (string, error) {
	return netRoundTrip(n.d, n.mac, n.rings, n.b, n.arpPage)
}

// attackNIC runs an honest exchange first (which also takes whatever the
// user network queued while the device was down), then the virtqueue
// cases on the receive and the transmit queue, then what is particular
// to virtio-net.
func attackNIC(rep *report, n *nic) {
	detail, err := n.roundTrip()
	rep.check("net/honest-arp", detail, err)
	rx, tx := netTargets(n.d, n.mac, n.rings, n.b, n.arpPage)
	for _, c := range append(queueCrafts(rx, rxHonest(rx, n.mac)), rxCrafts(rx, n.mac)...) {
		detail, err := runCraft(rx, c)
		rep.check("net-rx/"+c.name, detail, err)
	}
	for _, c := range append(queueCrafts(tx, txHonest(tx)), txCrafts(tx)...) {
		detail, err := runCraft(tx, c)
		rep.check("net-tx/"+c.name, detail, err)
	}
	detail, err = missingQueue(tx)
	rep.check("net/missing-queue", detail, err)
}
