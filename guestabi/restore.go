package guestabi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmm-dev/vmm/internal/pack"
)

// Snapshots (`vmm snapshot`, `vmm run -snapshot`). A guest booted for a
// snapshot has WaitParam on its kernel command line: its init prepares
// everything a job needs except the job, opens JobTTY, writes one byte to
// WaitPort and blocks reading a JobMessage from JobTTY. vmm saves the
// machine at that write; every restore of it resumes in that read, and
// vmm sends the job there.
const (
	// WaitParam on the kernel command line asks the init to wait for
	// its job on JobTTY instead of reading SpecPath.
	WaitParam = "vmm.wait=job"
	// WaitPort is the I/O port the init writes when it waits for a job.
	// 0xF8 is next to ExitPort in the range a PC left to the x87
	// coprocessor (0xF0-0xFF), which nothing in an x86-64 kernel
	// touches.
	WaitPort     = 0xf8
	WaitPortSize = 1
)

// What the init writes to WaitPort: WaitReady, with WaitInputPort set
// when it has found the job's input port (JobInputPort), so that vmm
// sends a restored job's stdin there (JobMessage's Spec.StdinPort)
// rather than after the message on JobTTY. An init that writes 1 gets
// its job's input on JobTTY.
const (
	WaitReady     = 1
	WaitInputPort = 2
)

// jobMagic starts a JobMessage on the wire, so an init reading something
// else (a stray byte, a cold-boot host) fails clearly. Version 2 is the
// encoding of package pack (1 was JSON); 3 added Spec.StdoutPort, 4
// Spec.StderrPipe and 5 Spec.StdinPort.
var jobMagic = [8]byte{'V', 'M', 'M', 'J', 'O', 'B', '5', '\n'}

// MaxJobMessage bounds a JobMessage's encoding.
const MaxJobMessage = 1 << 20

// EntropySize is how many bytes of host randomness a JobMessage carries:
// 256 bits, what the kernel's CRNG wants to be seeded.
const EntropySize = 32

// JobMessage is what vmm sends a restored init on JobTTY: the job, and
// what makes the restored machine fresh (every restore of one snapshot
// would otherwise continue the same random generator and clock).
type JobMessage struct {
	Spec Spec
	// Entropy is host randomness the init mixes into the kernel's pool
	// and reseeds the CRNG with, before the job runs.
	Entropy []byte
	// UnixNano is the host's wall clock when the message was sent; the
	// init sets the guest's clock to it.
	UnixNano int64
}

// EncodeJobMessage frames m for JobTTY: magic, little-endian u32 length,
// m encoded by package pack.
func EncodeJobMessage(m JobMessage) ([]byte, error) {
	if err := m.Spec.Validate(); err != nil {
		return nil, err
	}
	j, err := pack.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(j) > MaxJobMessage {
		return nil, fmt.Errorf("job message of %d bytes: at most %d", len(j), MaxJobMessage)
	}
	out := make([]byte, 12, 12+len(j))
	copy(out, jobMagic[:])
	binary.LittleEndian.PutUint32(out[8:], uint32(len(j)))
	return append(out, j...), nil
}

// ReadJobMessage reads one framed JobMessage from r and checks it.
func ReadJobMessage(r io.Reader) (JobMessage, error) {
	var m JobMessage
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return m, fmt.Errorf("job message: %w", err)
	}
	if !bytes.Equal(hdr[:8], jobMagic[:]) {
		return m, fmt.Errorf("job message: bad magic %q", hdr[:8])
	}
	n := binary.LittleEndian.Uint32(hdr[8:])
	if n > MaxJobMessage {
		return m, fmt.Errorf("job message: %d bytes, at most %d", n, MaxJobMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return m, fmt.Errorf("job message: %w", err)
	}
	if err := pack.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("job message: %w", err)
	}
	if err := m.Spec.Validate(); err != nil {
		return m, fmt.Errorf("job message: %w", err)
	}
	if len(m.Entropy) < EntropySize {
		return m, fmt.Errorf("job message: %d bytes of entropy, want %d", len(m.Entropy), EntropySize)
	}
	return m, nil
}
