package virtio_test

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// A FuzzPCI step is 7 bytes, as FuzzMMIO's: kind, BAR offset (16 bits,
// taken modulo the BAR size) and a 32-bit value. Kind bits 0-1 pick the
// action, bits 2-3 the width. opClose is replaced by a write of the MSI-X
// capability's Message Control, the one configuration-space input the
// transport takes.
const opControl = opClose

func pciOp(action byte, width int, off uint64, v uint32) []byte {
	return mmioOp(action, width, off, v)
}

// pciInitOps is Linux's probe as initDevice does it, then MSI-X on with
// both entries programmed and unmasked, a kick and a used buffer.
func pciInitOps() []byte {
	cfg := goodQueue(0)
	var ops []byte
	for _, o := range [][]byte{
		pciOp(opWrite, 1, pStatus, 0),
		pciOp(opWrite, 1, pStatus, virtio.StatusAcknowledge|virtio.StatusDriver),
		pciOp(opWrite, 4, pDrvFeatSel, 0),
		pciOp(opWrite, 4, pDrvFeat, uint32(offered&0xffffffff)),
		pciOp(opWrite, 4, pDrvFeatSel, 1),
		pciOp(opWrite, 4, pDrvFeat, uint32(offered>>32)),
		pciOp(opWrite, 1, pStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK),
		pciOp(opWrite, 2, pConfigVec, 0),
		pciOp(opWrite, 2, pQueueSel, 0),
		pciOp(opWrite, 2, pQueueSize, uint32(cfg.Size)),
		pciOp(opWrite, 2, pQueueVec, 1),
		pciOp(opWrite, 4, pQueueDesc, uint32(cfg.Desc)),
		pciOp(opWrite, 4, pQueueDriver, uint32(cfg.Avail)),
		pciOp(opWrite, 4, pQueueDevice, uint32(cfg.Used)),
		pciOp(opWrite, 2, pQueueEnable, 1),
		pciOp(opWrite, 1, pStatus, fullStatus),
		pciOp(opControl, 2, 0, 1<<15),
		pciOp(opWrite, 4, pTable, 0xfee00000),
		pciOp(opWrite, 4, pTable+8, 0x40),
		pciOp(opWrite, 4, pTable+12, 0),
		pciOp(opWrite, 4, pTable+16, 0xfee00000),
		pciOp(opWrite, 4, pTable+24, 0x41),
		pciOp(opWrite, 4, pTable+28, 0),
		pciOp(opWrite, 2, pNotify, 0),
		pciOp(opDevice, 4, 0, 1),
		pciOp(opRead, 4, pPBA, 0),
	} {
		ops = append(ops, o...)
	}
	return ops
}

// pciSeeds are FuzzPCI's seeds, also checked in under
// testdata/fuzz/FuzzPCI.
func pciSeeds() map[string][]byte {
	masked := append(pciInitOps(), pciOp(opControl, 2, 0, 1<<15|1<<14)...)
	masked = append(masked, pciOp(opDevice, 4, 0, 3)...)
	masked = append(masked, pciOp(opControl, 2, 0, 1<<15)...)
	masked = append(masked, pciOp(opWrite, 1, pStatus, 0)...)
	return map[string][]byte{
		"init":   pciInitOps(),
		"masked": masked,
		"odd widths": []byte("\x05\x16\x00\x01\x00\x00\x00\x0d\x20\x00\xff\xff\xff\xff" +
			"\x01\x02\x40\x01\x00\x00\x00\x0c\x04\x40\x00\x00\x00\x00\x09\x00\x10\x00\x00\x00\x00"),
	}
}

// FuzzPCI drives BAR 0 of the transport with arbitrary accesses, device
// interrupts and failures and MSI-X control writes. It must never panic
// or touch memory outside RAM, start the device only with accepted
// features, send a vector that is masked, or log without bound.
func FuzzPCI(f *testing.F) {
	for _, seed := range pciSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) { runPCIOps(t, ops) })
}

// TestPCISeedsActivate proves the init seed reaches a running device
// that sends vector 1.
func TestPCISeedsActivate(t *testing.T) {
	if got := runPCIOps(t, pciSeeds()["init"]); got != 1 {
		t.Fatalf("init seed: vector 1 sent %d times, want 1", got)
	}
}

// runPCIOps is FuzzPCI's body; it returns how often vector 1 was sent.
func runPCIOps(t *testing.T, ops []byte) int64 {
	dev := newFakeDevice(offered, 8, 8)
	mem := virtiotest.NewMem(memBase, memSize)
	vecs := []*countIRQ{{}, {}}
	var (
		logMu sync.Mutex
		logs  []string
	)
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
	}
	p, err := virtio.NewPCI(dev, mem, []virtio.Interrupt{vecs[0], vecs[1]}, &routeLog{},
		[]virtio.Notifier{&countNotifier{}, &countNotifier{}}, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	read := func(off uint64, n int) uint64 {
		b := make([]byte, 8)
		p.Read(off, b[:n])
		return binary.LittleEndian.Uint64(b)
	}
	var control uint32
	held := func(v int) bool {
		return control&(1<<15) == 0 || control&(1<<14) != 0 || read(pTable+uint64(16*v)+12, 4)&1 != 0
	}
	for ; len(ops) >= mmioOpLen; ops = ops[mmioOpLen:] {
		kind, off, data := decodeOp(ops, virtio.PCIBARSize)
		heldBefore := []bool{held(0), held(1)}
		sent := []int64{vecs[0].n.Load(), vecs[1].n.Load()}
		switch kind & 3 {
		case opRead:
			p.Read(off, data)
		case opWrite:
			p.Write(off, data)
		case opDevice:
			deviceOp(dev, data[0])
		case opControl:
			control = binary.LittleEndian.Uint32(ops[3:])
			p.WriteMSIXControl(uint16(control))
		}
		envs, _, misuse := dev.state()
		if misuse != "" {
			t.Fatal(misuse)
		}
		if n := len(envs); n > 0 {
			env := envs[n-1]
			if env.Features&^offered != 0 || env.Features&(1<<virtio.FeatureVersion1) == 0 {
				t.Fatalf("activated with features %#x, offered %#x", env.Features, offered)
			}
		}
		st := read(pStatus, 1)
		if dev.running() && st&(virtio.StatusFeaturesOK|virtio.StatusDriverOK) != virtio.StatusFeaturesOK|virtio.StatusDriverOK {
			t.Fatalf("device running with status %#x", st)
		}
		for v := range vecs {
			if heldBefore[v] && held(v) && vecs[v].n.Load() != sent[v] {
				t.Fatalf("vector %d sent while masked (control %#x)", v, control)
			}
		}
		if v := read(pConfigVec, 2); v != virtio.NoVector && v >= virtio.PCIMSIXVectors {
			t.Fatalf("config vector %#x beyond the table", v)
		}
	}
	if err := mem.CheckGuards(); err != nil {
		t.Fatal(err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if len(logs) > 16 {
		t.Fatalf("%d log lines: a guest can flood the log: %q", len(logs), logs)
	}
	return vecs[1].n.Load()
}
