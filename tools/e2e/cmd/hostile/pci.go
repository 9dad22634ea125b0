//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The -transport pci attack: vmm's virtio devices as virtio-pci
// functions (machine/pci.go, virtio/pci.go, package pci). The queues
// behind them are the same code as virtio-mmio's, which the default
// attack crafts queues for; what is new to a guest is the PCI
// configuration space (reached through ports 0xCF8-0xCFF) and BAR 0's
// structures. So this attack
//
//  1. unbinds Linux's virtio-pci driver from every virtio function;
//  2. makes random configuration cycles through the ports, to every
//     device number of bus 0 (mostly vmm's functions), other buses and
//     functions, at every width, with random addresses latched between
//     (BARs moved, decoding toggled, MSI-X enabled and masked);
//  3. puts each function's configuration back as Linux left it and
//     writes random values of every width at every offset of the first
//     function's structures in BAR 0 (common configuration, ISR, device
//     configuration, notification slots, MSI-X table and PBA) and of
//     every function's device configuration;
//  4. resets each function, masks its MSI-X entries, restores its
//     configuration, binds the driver again and uses it honestly: sector
//     0 read back from both disks, the pattern written to sector 1 of the
//     writable one, the card back as a network interface.
const (
	pciSysfs      = "/sys/bus/pci/devices"
	pciDriverPath = "/sys/bus/pci/drivers/virtio-pci"
	virtioVendor  = 0x1af4
	pciConfigAddr = 0xcf8
	// pciConfigCycles is how many random configuration cycles step 2
	// makes: each is two port exits through emulated nested SVM.
	pciConfigCycles = 3000
	// barSize is vmm's BAR 0 (virtio.PCIBARSize) and the offsets of its
	// structures in it (virtio/pci.go), as the capabilities announce.
	barSize      = 0x8000
	barCommon    = 0x0000
	barISR       = 0x1000
	barDevice    = 0x2000
	barNotify    = 0x3000
	barTable     = 0x4000
	barPBA       = 0x5000
	commonStatus = 0x14
	msixEntries  = 2
)

// pciFunc is one virtio function the guest kernel found.
type pciFunc struct {
	name   string // sysfs name, 0000:00:01.0
	device uint64 // PCI device ID: 0x1040 + the virtio device type
	bar0   uint64
	saved  []byte // the configuration space before the attack
}

func findPCIFunctions() ([]pciFunc, error) {
	dirs, err := filepath.Glob(pciSysfs + "/*")
	if err != nil {
		return nil, err
	}
	var fs []pciFunc
	for _, d := range dirs {
		vendor, err := readHex(filepath.Join(d, "vendor"))
		if err != nil || vendor != virtioVendor {
			continue
		}
		dev, err := readHex(filepath.Join(d, "device"))
		if err != nil {
			return nil, err
		}
		res, err := os.ReadFile(filepath.Join(d, "resource"))
		if err != nil {
			return nil, err
		}
		first, _, _ := strings.Cut(string(res), " ")
		bar0, err := strconv.ParseUint(strings.TrimPrefix(first, "0x"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/resource: %w", d, err)
		}
		cfg, err := os.ReadFile(filepath.Join(d, "config"))
		if err != nil {
			return nil, err
		}
		if len(cfg) < 256 {
			return nil, fmt.Errorf("%s/config: %d bytes, want 256", d, len(cfg))
		}
		fs = append(fs, pciFunc{name: filepath.Base(d), device: dev, bar0: bar0, saved: cfg[:256]})
	}
	if len(fs) == 0 {
		return nil, errors.New("no virtio PCI function in " + pciSysfs)
	}
	return fs, nil
}

func readHex(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 64)
}

func (f pciFunc) unbind() error {
	if _, err := os.Stat(filepath.Join(pciSysfs, f.name, "driver")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return os.WriteFile(pciDriverPath+"/unbind", []byte(f.name), 0o200)
}

func (f pciFunc) bind() error {
	return os.WriteFile(pciDriverPath+"/bind", []byte(f.name), 0o200)
}

// restore writes back the configuration Linux had: decoding off first,
// then the BARs, interrupt line and capabilities (MSI-X's Message
// Control), then the Command register as it was.
func (f pciFunc) restore() error {
	cfg, err := os.OpenFile(filepath.Join(pciSysfs, f.name, "config"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer cfg.Close()
	for _, w := range []struct {
		off int64
		b   []byte
	}{
		{0x04, []byte{0, 0}},
		{0x10, f.saved[0x10:0x28]},
		{0x3c, f.saved[0x3c:0x3d]},
		{0x40, f.saved[0x40:0x100]},
		{0x04, f.saved[0x04:0x06]},
	} {
		if _, err := cfg.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("%s: restore config at %#x: %w", f.name, w.off, err)
		}
	}
	return nil
}

// attackConfigPorts makes random configuration cycles: a random address
// latched at 0xCF8 (mostly enabled, bus 0, one of the first few device
// numbers) and a random access of every width to the data ports, with odd
// accesses to the address register between.
func attackConfigPorts(rng *rand.Rand, funcs int) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(pciConfigAddr, 8, 1); err != nil {
		return "", fmt.Errorf("ioperm 0xcf8-0xcff: %w", err)
	}
	defer unix.Ioperm(pciConfigAddr, 8, 0)
	start := time.Now()
	for i := 0; i < pciConfigCycles; i++ {
		addr := rng.Uint32()
		if rng.IntN(8) != 0 {
			// A config cycle to bus 0, device 0..funcs, function 0
			// mostly: where vmm's host bridge and functions are.
			dev := uint32(rng.IntN(funcs + 1))
			addr = 1<<31 | dev<<11 | addr&0xfc
			if rng.IntN(8) == 0 {
				addr |= uint32(rng.IntN(8)) << 8
			}
		}
		outl(pciConfigAddr, addr)
		w := []int{1, 2, 4}[rng.IntN(3)]
		port := uint16(pciConfigAddr + 4 + rng.IntN(5-w)/w*w)
		if rng.IntN(2) == 0 {
			out(port, w, rng.Uint64())
		} else {
			_ = in(port, w)
		}
		if rng.IntN(16) == 0 {
			// Not a config cycle: a narrow access to the address
			// register, which must neither latch nor reach a device.
			p := uint16(pciConfigAddr + rng.IntN(4))
			out(p, 1, rng.Uint64())
			_ = in(p, 1)
		}
	}
	outl(pciConfigAddr, 0)
	return fmt.Sprintf("pci: %d random configuration cycles through 0xcf8-0xcff to %d device numbers of bus 0 and elsewhere, %.1fs",
		pciConfigCycles, funcs+1, time.Since(start).Seconds()), nil
}

// barRanges are what the sweep covers of a function's BAR 0: everything
// of the first function's (its transport code is every function's), and
// the device configuration of the others (each device type's own code).
func barRanges(first bool) [][2]int {
	dev := [2]int{barDevice, barDevice + 0x100}
	if !first {
		return [][2]int{dev}
	}
	return [][2]int{
		{barCommon, barCommon + 0x100}, {barISR, barISR + unclaimedSpan}, dev,
		{barNotify, barNotify + unclaimedSpan}, {barTable, barTable + unclaimedSpan},
		{barPBA, barPBA + unclaimedSpan}, {barSize - unclaimedSpan, barSize},
	}
}

// attackBARs garbles the BARs (see barRanges), each function's
// configuration restored first so the BAR is where Linux put it.
func attackBARs(mem *os.File, fs []pciFunc, rng *rand.Rand) ([]string, error) {
	var lines []string
	for i, f := range fs {
		if err := f.restore(); err != nil {
			return nil, err
		}
		start := time.Now()
		b, err := mapPhys(mem, f.bar0, barSize)
		if err != nil {
			return nil, err
		}
		n := sweep(b, barRanges(i == 0), rng)
		unix.Munmap(b)
		lines = append(lines, fmt.Sprintf("pci: %s: %d accesses in BAR 0 at %#x, all widths, %.1fs", f.name, n, f.bar0, time.Since(start).Seconds()))
	}
	return lines, nil
}

// quiesce resets each function and masks its MSI-X entries through BAR
// 0, so what the garbage left running stops and nothing fires when the
// driver enables MSI-X again.
func quiesce(mem *os.File, fs []pciFunc) error {
	for _, f := range fs {
		if err := f.restore(); err != nil {
			return err
		}
		b, err := mapPhys(mem, f.bar0, barSize)
		if err != nil {
			return err
		}
		write(b, commonStatus, 1, 0)
		for v := 0; v < msixEntries; v++ {
			write(b, uintptr(barTable+16*v+12), 4, 1)
		}
		unix.Munmap(b)
	}
	return nil
}

// recoverPCI binds the driver to each function again and uses what it
// finds: each disk's sector 0 read back (and the pattern written over
// sector 1 of the writable one), the card's interface present.
func recoverPCI(rep *report, fs []pciFunc, sector []byte) {
	for _, f := range fs {
		if err := f.bind(); err != nil {
			rep.check("recovery-"+f.name, "", fmt.Errorf("bind virtio-pci: %w", err))
			continue
		}
		kind, name, err := waitChild(f, 20*time.Second)
		if err != nil {
			rep.check("recovery-"+f.name, "", err)
			continue
		}
		switch kind {
		case "block":
			head, err := useDisk(name, sector)
			rep.check("recovery-"+f.name, name+" sector 0 starts "+head, err)
			if err == nil {
				rep.line("hostile: %s sector0 %s", name, head)
			}
		case "net":
			rep.check("recovery-"+f.name, "network interface "+name+" back", nil)
		default:
			rep.check("recovery-"+f.name, kind+" "+name+" back", nil)
		}
	}
}

// waitChild waits for the driver to bring the function back: for a
// disk (device 0x1042) or a card (0x1041) until its block device or
// network interface is registered, for any other device until a virtio
// driver is bound. It returns which it is and its name.
func waitChild(f pciFunc, d time.Duration) (kind, name string, err error) {
	want := map[uint64]string{0x1041: "net", 0x1042: "block"}[f.device]
	deadline := time.Now().Add(d)
	for {
		if want != "" {
			if m, _ := filepath.Glob(filepath.Join(pciSysfs, f.name, "virtio*", want, "*")); len(m) > 0 {
				return want, filepath.Base(m[0]), nil
			}
		} else if m, _ := filepath.Glob(filepath.Join(pciSysfs, f.name, "virtio*", "driver")); len(m) > 0 {
			return "virtio", filepath.Base(filepath.Dir(m[0])), nil
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("%s: no device came back within %v of binding the driver", f.name, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// useDisk reads sector 0 of /dev/name and, if the disk is writable,
// writes sector over sector 1 and reads it back.
func useDisk(name string, sector []byte) (string, error) {
	ro, err := os.ReadFile("/sys/block/" + name + "/ro")
	if err != nil {
		return "", err
	}
	path := "/dev/" + name
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		dev, err := os.ReadFile("/sys/block/" + name + "/dev")
		if err != nil {
			return "", err
		}
		major, minor, _ := strings.Cut(strings.TrimSpace(string(dev)), ":")
		ma, _ := strconv.Atoi(major)
		mi, _ := strconv.Atoi(minor)
		if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil {
			return "", fmt.Errorf("mknod %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if strings.TrimSpace(string(ro)) == "1" {
		f, err = os.Open(path)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 16)
	if _, err := f.ReadAt(head, 0); err != nil {
		return "", fmt.Errorf("read sector 0 of %s: %w", path, err)
	}
	if strings.TrimSpace(string(ro)) != "1" {
		if _, err := f.WriteAt(sector, sectorSize); err != nil {
			return "", fmt.Errorf("write sector 1 of %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("flush %s: %w", path, err)
		}
		back := make([]byte, len(sector))
		if _, err := f.ReadAt(back, sectorSize); err != nil || !bytes.Equal(back, sector) {
			return "", fmt.Errorf("sector 1 of %s did not read back what was written (%v)", path, err)
		}
	}
	return hex.EncodeToString(head), nil
}

// runPCI is the -transport pci attack (see the comment at the top).
func runPCI(rng *rand.Rand, rep *report, sector []byte) int {
	fatal := func(err error) int {
		rep.line("hostile: fatal: %v", err)
		return exitFatal
	}
	fs, err := findPCIFunctions()
	if err != nil {
		return fatal(err)
	}
	for _, f := range fs {
		if err := f.unbind(); err != nil {
			return fatal(fmt.Errorf("unbind %s: %w", f.name, err))
		}
		rep.line("hostile: %s (device %#x, BAR 0 at %#x) unbound from virtio-pci", f.name, f.device, f.bar0)
	}
	mem, err := os.OpenFile("/dev/mem", os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return fatal(err)
	}
	defer mem.Close()
	line, err := attackPorts(rng)
	if err != nil {
		return fatal(err)
	}
	rep.line("hostile: %s", line)
	if line, err = attackConfigPorts(rng, len(fs)); err != nil {
		return fatal(err)
	}
	rep.line("hostile: %s", line)
	lines, err := attackBARs(mem, fs, rng)
	if err != nil {
		return fatal(err)
	}
	for _, l := range lines {
		rep.line("hostile: %s", l)
	}
	if err := quiesce(mem, fs); err != nil {
		return fatal(err)
	}
	recoverPCI(rep, fs, sector)
	rep.line("hostile: done: %d cases ok, %d failed", rep.ok, rep.failed)
	if rep.failed > 0 {
		return exitMisbehaved
	}
	return 0
}
