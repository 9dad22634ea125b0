//go:build linux && amd64

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where vmm puts its virtio-mmio windows (machine/layout.go): one 4 KiB
// page each from mmioBase, of which the first windowSize bytes are
// registers and configuration (virtio.MMIOSize).
const (
	mmioBase   = 0xd0000000
	mmioStride = 0x1000
	windowSize = 0x200
	pageSize   = 0x1000
	// acpiID is the ACPI hardware ID vmm gives virtio-mmio devices, the
	// name their platform devices get ("LNRO0005:00", ...).
	acpiID = "LNRO0005"
	// unbindPath detaches a platform device from the virtio_mmio driver.
	unbindPath = "/sys/bus/platform/drivers/virtio-mmio/unbind"
)

// holePages are pages of the 32-bit MMIO hole and above RAM where vmm has
// no device: accesses there exit to vmm's unclaimed-MMIO path. The
// in-kernel IOAPIC (0xfec00000) and local APIC (0xfee00000) pages are
// left alone: KVM serves them, and garbage there kills the guest's
// interrupts.
var holePages = []uint64{
	0xc0000000,  // the start of the hole (RAM ends below it)
	0xd0100000,  // far past the last virtio window
	0xe0000000,  // where a PC would put PCI MMCONFIG
	0xfed00000,  // where a PC would put the HPET
	0xfffff000,  // the last page below 4 GiB (a BIOS would be here)
	0x100000000, // 4 GiB: RAM would resume here with more than 3 GiB
}

// mmioDevice is one virtio-mmio window the guest kernel found.
type mmioDevice struct {
	name string // platform device, e.g. LNRO0005:00
	addr uint64
}

// findDevices lists vmm's virtio-mmio windows from /proc/iomem (root sees
// real addresses there), in address order.
func findDevices() ([]mmioDevice, error) {
	f, err := os.Open("/proc/iomem")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseIOMem(f)
}

// parseIOMem reads /proc/iomem's "start-end : name" lines, nested ones
// indented, and checks the windows are where vmm puts them.
func parseIOMem(r io.Reader) ([]mmioDevice, error) {
	seen := map[uint64]bool{}
	var devs []mmioDevice
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rng, name, ok := strings.Cut(strings.TrimSpace(sc.Text()), " : ")
		if !ok || !strings.HasPrefix(name, acpiID+":") {
			continue
		}
		lo, _, _ := strings.Cut(rng, "-")
		addr, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/iomem line %q: %w", sc.Text(), err)
		}
		if !seen[addr] { // the driver's claim repeats its device's line
			seen[addr] = true
			devs = append(devs, mmioDevice{name: name, addr: addr})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].addr < devs[j].addr })
	for i, d := range devs {
		if want := uint64(mmioBase + i*mmioStride); d.addr != want {
			return nil, fmt.Errorf("device %s at %#x, want %#x: not vmm's layout", d.name, d.addr, want)
		}
	}
	if len(devs) == 0 {
		return nil, errors.New("no " + acpiID + " device in /proc/iomem")
	}
	return devs, nil
}

// unbind takes the device from the guest's virtio_mmio driver, which
// resets it and releases its window: with CONFIG_IO_STRICT_DEVMEM (as in
// Debian's kernels) /dev/mem refuses to map a range a driver holds.
func unbind(d mmioDevice) error {
	if _, err := os.Stat("/sys/bus/platform/devices/" + d.name + "/driver"); errors.Is(err, os.ErrNotExist) {
		return nil // no driver bound
	}
	if err := os.WriteFile(unbindPath, []byte(d.name), 0o200); err != nil {
		return fmt.Errorf("unbind %s: %w", d.name, err)
	}
	return nil
}

// mapPhys maps n bytes of guest-physical address space at addr (page
// aligned) through /dev/mem.
func mapPhys(mem *os.File, addr uint64, n int) ([]byte, error) {
	b, err := unix.Mmap(int(mem.Fd()), int64(addr), n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap /dev/mem at %#x+%#x: %w", addr, n, err)
	}
	return b, nil
}

// sweep writes random values of every width at every aligned offset of
// each [lo, hi) range of b and reads each back, then makes accesses that
// straddle each page boundary inside b. It returns the number of
// accesses.
func sweep(b []byte, ranges [][2]int, rng *rand.Rand) int {
	n := 0
	for _, r := range ranges {
		for _, w := range []int{1, 2, 4, 8} {
			for off := r[0]; off+w <= r[1]; off += w {
				write(b, uintptr(off), w, rng.Uint64())
				_ = read(b, uintptr(off), w)
				n += 2
			}
		}
	}
	// KVM splits an access that crosses a page into one per page: both
	// halves reach vmm, the second at offset 0 of the next page.
	for page := pageSize; page < len(b); page += pageSize {
		for _, w := range []int{2, 4, 8} {
			for off := page - w + 1; off < page; off++ {
				write(b, uintptr(off), w, rng.Uint64())
				_ = read(b, uintptr(off), w)
				n += 2
			}
		}
	}
	return n
}

// unclaimedSpan is how much of an unclaimed area the sweep covers: vmm
// has nothing anywhere in it, and every offset takes the same path, so
// the first 64 bytes (every width at every offset, 240 exits) are as
// good as a whole page at a sixty-fourth of the exits. Each is a round
// trip through emulated nested SVM, and the emulator's own guest
// crashes (see nested.ErrGuestCrashed) grow with their number.
const unclaimedSpan = 64

// configOffset is where a virtio-mmio window's device-specific
// configuration starts (virtio v1.2 §4.2.2: "Config", 0x100).
const configOffset = 0x100

// windowRanges are what the sweep covers of the mapping of n windows and
// the page after: the first window's registers, every window's
// configuration and the unclaimed bytes after it, and the start of the
// page after the last. The registers below configOffset are one
// transport's code in vmm whatever the device (virtio.MMIO), so one
// window's are as good as all of them, at a third of the exits; each
// device type's configuration is its own code.
func windowRanges(n int) [][2]int {
	var rs [][2]int
	for i := 0; i < n; i++ {
		lo := i * mmioStride
		if i > 0 {
			lo += configOffset
		}
		rs = append(rs, [2]int{lo, i*mmioStride + windowSize + unclaimedSpan})
	}
	return append(rs, [2]int{n * mmioStride, n*mmioStride + unclaimedSpan})
}

// attackMMIO garbles every virtio-mmio window (and the unclaimed bytes
// after it, the page boundaries, and the start of the page after the
// last), then the start of a few unclaimed pages of the MMIO hole and
// above RAM. It returns one summary line per area.
func attackMMIO(mem *os.File, devs []mmioDevice, rng *rand.Rand) ([]string, error) {
	var lines []string
	start := time.Now()
	span := (len(devs) + 1) * mmioStride
	win, err := mapPhys(mem, mmioBase, span)
	if err != nil {
		return nil, err
	}
	n := sweep(win, windowRanges(len(devs)), rng)
	unix.Munmap(win)
	lines = append(lines, fmt.Sprintf("mmio: %d accesses over %#x-%#x (the first virtio window's registers, the configuration of all %d and the unclaimed bytes after each, the page after), all widths, page-crossing included, %.1fs",
		n, mmioBase, mmioBase+span-1, len(devs), time.Since(start).Seconds()))
	for _, addr := range holePages {
		start := time.Now()
		b, err := mapPhys(mem, addr, pageSize)
		if err != nil {
			// Not every address maps (the guest's physical address
			// width, PAT): say so and go on with the others.
			lines = append(lines, fmt.Sprintf("mmio: %#x: not mapped: %v", addr, err))
			continue
		}
		n := sweep(b, [][2]int{{0, unclaimedSpan}}, rng)
		unix.Munmap(b)
		lines = append(lines, fmt.Sprintf("mmio: %d accesses at %#x (unclaimed), %.1fs", n, addr, time.Since(start).Seconds()))
	}
	return lines, nil
}
