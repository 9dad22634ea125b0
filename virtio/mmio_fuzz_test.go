package virtio_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vmm-dev/vmm/virtio"
	"github.com/vmm-dev/vmm/virtio/virtiotest"
)

// An mmioOp is one step of FuzzMMIO, 7 bytes: kind, offset (16 bits
// little-endian) and a 32-bit value. Kind bits 0-1 pick the action, bits
// 2-3 the access width.
const mmioOpLen = 7

const (
	opRead   = 0 // guest reads offset
	opWrite  = 1 // guest writes value to offset
	opDevice = 2 // the running device: value bit 0 raises Env.Interrupt, bit 1 calls Env.Fail
	opClose  = 3 // the machine closes the transport
)

var opWidths = [4]int{4, 1, 2, 8}

func mmioOp(action byte, width int, off uint64, v uint32) []byte {
	w := byte(0)
	for i, x := range opWidths {
		if x == width {
			w = byte(i)
		}
	}
	b := []byte{action | w<<2, byte(off), byte(off >> 8), 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[3:], v)
	return b
}

func mmioWrite(off uint64, v uint32) []byte { return mmioOp(opWrite, 4, off, v) }

// mmioInitOps is a driver's whole initialization (virtio v1.2 §3.1.1)
// with queue q set up at goodQueue(q).
func mmioInitOps(q int) []byte {
	cfg := goodQueue(q)
	var ops []byte
	for _, o := range [][]byte{
		mmioWrite(virtio.MMIOStatus, 0),
		mmioOp(opRead, 4, virtio.MMIOMagicValue, 0),
		mmioWrite(virtio.MMIOStatus, virtio.StatusAcknowledge),
		mmioWrite(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver),
		mmioWrite(virtio.MMIODeviceFeaturesSel, 1),
		mmioOp(opRead, 4, virtio.MMIODeviceFeatures, 0),
		mmioWrite(virtio.MMIODriverFeaturesSel, 1),
		mmioWrite(virtio.MMIODriverFeatures, uint32(offered>>32)),
		mmioWrite(virtio.MMIODriverFeaturesSel, 0),
		mmioWrite(virtio.MMIODriverFeatures, uint32(offered&0xffffffff)),
		mmioWrite(virtio.MMIOStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK),
		mmioOp(opRead, 4, virtio.MMIOStatus, 0),
		mmioWrite(virtio.MMIOQueueSel, uint32(q)),
		mmioOp(opRead, 4, virtio.MMIOQueueNumMax, 0),
		mmioWrite(virtio.MMIOQueueNum, uint32(cfg.Size)),
		mmioWrite(virtio.MMIOQueueDescLow, uint32(cfg.Desc)),
		mmioWrite(virtio.MMIOQueueDescHigh, uint32(cfg.Desc>>32)),
		mmioWrite(virtio.MMIOQueueDriverLow, uint32(cfg.Avail)),
		mmioWrite(virtio.MMIOQueueDriverHigh, uint32(cfg.Avail>>32)),
		mmioWrite(virtio.MMIOQueueDeviceLow, uint32(cfg.Used)),
		mmioWrite(virtio.MMIOQueueDeviceHigh, uint32(cfg.Used>>32)),
		mmioWrite(virtio.MMIOQueueReady, 1),
		mmioWrite(virtio.MMIOStatus, fullStatus),
		mmioOp(opRead, 2, virtio.MMIOConfig+6, 0),
		mmioWrite(virtio.MMIOQueueNotify, uint32(q)),
		mmioOp(opDevice, 4, 0, 1),
		mmioOp(opRead, 4, virtio.MMIOInterruptStatus, 0),
		mmioWrite(virtio.MMIOInterruptACK, virtio.InterruptUsedBuffer),
	} {
		ops = append(ops, o...)
	}
	return ops
}

// mmioSeeds are FuzzMMIO's seeds, also checked in under
// testdata/fuzz/FuzzMMIO.
func mmioSeeds() map[string][]byte {
	reset := append(mmioInitOps(0), mmioOp(opDevice, 4, 0, 2)...)
	reset = append(reset, mmioWrite(virtio.MMIOStatus, 0)...)
	reset = append(reset, mmioInitOps(1)...)
	reset = append(reset, mmioOp(opClose, 4, 0, 0)...)
	return map[string][]byte{
		"init":  mmioInitOps(0),
		"reset": reset,
		"garbage": []byte("\x01\x70\x00\x0f\x00\x00\x00\x05\x13\x01\xff\xff\xff\xff" +
			"\x09\x38\x00\x01\x02\x03\x04\x0d\xfc\x01\x00\x00\x00\x00\x02\x00\x00\x03\x00\x00\x00" +
			"\x01\x44\x00\x01\x00\x00\x00\x01\x70\x00\xff\xff\xff\xff\x03\x00\x00\x00\x00\x00\x00"),
	}
}

// FuzzMMIO drives the transport with arbitrary register accesses, device
// interrupts and failures. It must never panic or touch memory outside
// RAM, the device must be started only after FEATURES_OK was accepted
// and with a feature set the driver may have, and a guest can cause only
// a bounded number of log lines.
func FuzzMMIO(f *testing.F) {
	for _, seed := range mmioSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) { runMMIOOps(t, ops) })
}

// TestMMIOSeedsActivate proves the seeds reach the deep end: the init
// seed starts the device, the reset seed starts it twice.
func TestMMIOSeedsActivate(t *testing.T) {
	seeds := mmioSeeds()
	for name, want := range map[string]int{"init": 1, "reset": 2} {
		if got := runMMIOOps(t, seeds[name]); got != want {
			t.Errorf("seed %s: %d activations, want %d", name, got, want)
		}
	}
}

var errFuzzFail = errors.New("fuzz failure")

// decodeOp splits the step at the head of ops (mmioOpLen bytes) into its
// kind, its offset modulo span, and its value as an access of the
// kind's width.
func decodeOp(ops []byte, span uint64) (kind byte, off uint64, data []byte) {
	kind = ops[0]
	off = uint64(binary.LittleEndian.Uint16(ops[1:])) % span
	data = make([]byte, 8)
	copy(data, ops[3:7])
	copy(data[4:], ops[3:7])
	return kind, off, data[:opWidths[kind>>2&3]]
}

// deviceOp is an opDevice step: the running device raises Env.Interrupt
// (bit 0 of v) and Env.Fail (bit 1).
func deviceOp(dev *fakeDevice, v byte) {
	envs, _, _ := dev.state()
	if !dev.running() || len(envs) == 0 {
		return
	}
	env := envs[len(envs)-1]
	if v&1 != 0 {
		env.Interrupt()
	}
	if v&2 != 0 {
		env.Fail(errFuzzFail)
	}
}

// runMMIOOps is FuzzMMIO's body; it returns how often the device was
// activated.
func runMMIOOps(t *testing.T, ops []byte) int {
	dev := newFakeDevice(offered, 8, 8)
	mem := virtiotest.NewMem(memBase, memSize)
	irq := &countIRQ{}
	notifiers := []virtio.Notifier{&countNotifier{}, &countNotifier{}}
	var (
		logMu sync.Mutex
		logs  []string
	)
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
	}
	m, err := virtio.NewMMIO(dev, mem, irq, notifiers, logf)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	status := func() uint32 {
		var b [4]byte
		m.Read(virtio.MMIOStatus, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	closed := false
	activations := 0
	for ; len(ops) >= mmioOpLen; ops = ops[mmioOpLen:] {
		kind, off, data := decodeOp(ops, virtio.MMIOSize+8)
		switch kind & 3 {
		case opRead:
			m.Read(off, data)
		case opWrite:
			m.Write(off, data)
		case opDevice:
			deviceOp(dev, data[0])
		case opClose:
			m.Close()
			closed = true
		}

		envs, _, misuse := dev.state()
		if misuse != "" {
			t.Fatal(misuse)
		}
		st := status()
		if len(envs) > activations {
			activations = len(envs)
			env := envs[len(envs)-1]
			if env.Features&^offered != 0 || env.Features&(1<<virtio.FeatureVersion1) == 0 {
				t.Fatalf("activated with features %#x, offered %#x", env.Features, offered)
			}
			if len(env.Queues) != 2 || len(env.Notifiers) != 2 {
				t.Fatalf("activated with %d queues, %d notifiers", len(env.Queues), len(env.Notifiers))
			}
		}
		if dev.running() && st&(virtio.StatusFeaturesOK|virtio.StatusDriverOK) != virtio.StatusFeaturesOK|virtio.StatusDriverOK {
			t.Fatalf("device running with status %#x", st)
		}
		if closed && (dev.running() || st != 0) {
			t.Fatalf("closed transport: device active %v, status %#x", dev.running(), st)
		}
		if kind&3 == opWrite && off == virtio.MMIOStatus && len(data) == 4 && binary.LittleEndian.Uint32(data) == 0 {
			var isr [4]byte
			m.Read(virtio.MMIOInterruptStatus, isr[:])
			if dev.running() || st != 0 || binary.LittleEndian.Uint32(isr[:]) != 0 {
				t.Fatalf("after reset: device active %v, status %#x, interrupt status %x", dev.running(), st, isr)
			}
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
	return activations
}
