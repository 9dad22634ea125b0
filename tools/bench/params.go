package bench

import (
	"errors"
	"fmt"
)

// Params sizes the workload. The defaults make each figure take 2-8
// seconds nested under TCG, where a guest moves about 50-150 MiB/s through
// virtio-blk and 2-4 MiB/s through virtio-net, so that one round (two
// boots) takes about 1.5 minutes; directly on KVM they finish much faster,
// which is fine for ratios but noisier.
type Params struct {
	Rounds      int   `json:"-"`            // in Report.Rounds
	SeqBytes    int64 `json:"seq_bytes"`    // per sequential read and write
	RandSeconds int   `json:"rand_seconds"` // random-read duration
	TCPBytes    int64 `json:"tcp_bytes"`    // per TCP direction
	DiskBytes   int64 `json:"disk_bytes"`   // the raw image both VMMs serve
	GuestMiB    int   `json:"guest_mib"`    // guest RAM

	// The shared-directory workload (vmm's virtio-fs against QEMU's
	// 9p), in boots of its own with Layout.FSKernel: FSFiles small
	// files of FSFileSize bytes created, stat'ed and read back, and a
	// file of FSSeqBytes read sequentially twice, from an emptied page
	// cache each time. FSFiles 0 leaves it out.
	FSFiles    int   `json:"fs_files"`
	FSFileSize int   `json:"fs_file_size"`
	FSSeqBytes int64 `json:"fs_seq_bytes"`

	// VMMFlags are added to every vmm command line, to measure one of
	// its choices (-virtio-transport mmio) against the default.
	VMMFlags []string `json:"vmm_flags,omitempty"`
}

// NestedFSFiles is the shared-directory workload's file count in a
// nested run when none is given: each file costs several round trips to
// the file server, 15-80 ms apiece under TCG, so DefaultParams' 10,000
// would take over an hour per boot.
const NestedFSFiles = 1000

// DefaultParams are `make bench`'s sizes.
func DefaultParams() Params {
	return Params{Rounds: 5, SeqBytes: 256 << 20, RandSeconds: 5, TCPBytes: 16 << 20, DiskBytes: 256 << 20, GuestMiB: 1024,
		FSFiles: 10000, FSFileSize: 1024, FSSeqBytes: 256 << 20}
}

// Check rejects sizes that cannot work.
func (p Params) Check() error {
	switch {
	case p.Rounds < 1:
		return errors.New("rounds must be at least 1")
	case p.SeqBytes < 1<<20 || p.SeqBytes%(1<<20) != 0:
		return fmt.Errorf("sequential size %d: want a positive multiple of 1 MiB (the block size)", p.SeqBytes)
	case p.DiskBytes < p.SeqBytes:
		return fmt.Errorf("disk size %d is smaller than the sequential size %d", p.DiskBytes, p.SeqBytes)
	case p.DiskBytes%(1<<20) != 0:
		return fmt.Errorf("disk size %d: want a multiple of 1 MiB", p.DiskBytes)
	case p.RandSeconds < 1:
		return errors.New("random-read duration must be at least 1 s")
	case p.TCPBytes < 1:
		return errors.New("TCP size must be positive")
	case p.GuestMiB < 128:
		return fmt.Errorf("guest memory %d MiB: want at least 128", p.GuestMiB)
	case p.FSFiles < 0:
		return fmt.Errorf("shared-directory files %d: want 0 (none) or more", p.FSFiles)
	case p.FSFiles > 0 && (p.FSFileSize < 0 || p.FSFileSize > 1<<20):
		return fmt.Errorf("shared-directory file size %d: want 0 to 1 MiB", p.FSFileSize)
	case p.FSFiles > 0 && (p.FSSeqBytes < 1<<20 || p.FSSeqBytes%(1<<20) != 0):
		return fmt.Errorf("shared-directory sequential size %d: want a positive multiple of 1 MiB", p.FSSeqBytes)
	}
	return nil
}

// fs says whether the shared-directory workload runs.
func (p Params) fs() bool { return p.FSFiles > 0 }

func (p Params) describe() string {
	s := fmt.Sprintf("sequential %s per direction in 1 MiB O_DIRECT blocks, random read 4 KiB O_DIRECT for %d s, TCP %s per direction over each network (a TAP, and a user-mode network whose host end is 127.0.0.1), on a %s raw image in RAM, guest %d MiB / 1 vCPU",
		mib(p.SeqBytes), p.RandSeconds, mib(p.TCPBytes), mib(p.DiskBytes), p.GuestMiB)
	if p.fs() {
		s += fmt.Sprintf("; shared directory (in RAM): %d files of %d bytes created (then sync), stat'ed and read back, and a %s file read twice in 1 MiB reads, the guest's caches dropped before each phase but the first",
			p.FSFiles, p.FSFileSize, mib(p.FSSeqBytes))
	}
	return s
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
