package guestabi

import (
	"fmt"
	"path"
	"strings"

	"github.com/vmm-dev/vmm/internal/pack"
)

// Paths inside the guest.
const (
	// SpecPath is where the job description appears; its presence is
	// what tells the guest init to run a job instead of a shell.
	SpecPath = "/vmm/job"
	// ShareDir is where -share's files appear.
	ShareDir = "/share"
	// OutDir is the directory whose contents come back with -out.
	OutDir = "/out"
	// OutSerial is the virtio-blk serial (GET_ID) of the scratch disk
	// the guest writes its tar stream to; the guest finds the disk by
	// it in /sys/block/vd*/serial rather than by position.
	OutSerial = "vmm-out"
	// JobTTY is the serial port that carries the job's stdin and stdout
	// (COM2); the console (ttyS0) keeps the kernel's messages and the
	// job's stderr. vmm holds the job's input until the guest has made
	// the tty raw and raised OUT1 on it (ioctl TIOCMBIS TIOCM_OUT1), so
	// no input meets the cooked line discipline a tty is opened with.
	JobTTY = "/dev/ttyS1"
)

// Spec is the job, encoded by EncodeSpec (package pack) in SpecPath.
type Spec struct {
	// Args is the command and its arguments; Args[0] is looked up in
	// PATH if it has no slash.
	Args []string
	// Env is added to the environment (KEY=VALUE).
	Env []string
	// Dir is the working directory; empty means ShareDir when files are
	// shared, else /.
	Dir string
	// Out says whether the guest copies OutDir back.
	Out bool
	// Mounts are virtio-fs shares the guest mounts before the job runs
	// (`vmm run -share`, which is mounted at ShareDir).
	Mounts []Mount
	// RootTag, when set, names a virtio-fs share the job runs in as its
	// root file system (`vmm run -rootfs`): read-only, under a tmpfs
	// overlay that takes the job's writes, with fresh /proc, /sys, /dev
	// and /tmp. Mounts and OutDir appear inside it at their paths.
	RootTag string
}

// Tags of the virtio-fs shares `vmm run` attaches: -share's, mounted at
// ShareDir, and -rootfs's, the job's root.
const (
	JobShareTag = "vmm-share"
	JobRootTag  = "vmm-root"
)

// Mount is one virtio-fs share as the guest mounts it:
// `mount -t virtiofs Tag Path`.
type Mount struct {
	Tag      string
	Path     string
	ReadOnly bool
}

// MaxTagLen is the longest virtio-fs tag: the config space's tag field is
// 36 bytes, NUL-padded, with no terminator needed when full (virtio v1.2
// §5.11.4).
const MaxTagLen = 36

// ValidTag reports what is wrong with a virtio-fs tag, or nil.
func ValidTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen || strings.ContainsAny(tag, "\x00,") {
		return fmt.Errorf("virtio-fs tag %q: want 1 to %d bytes, without NUL or comma", tag, MaxTagLen)
	}
	return nil
}

// Validate rejects what the guest could not run.
func (s Spec) Validate() error {
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fmt.Errorf("no command to run")
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", e)
		}
	}
	for _, m := range s.Mounts {
		if err := ValidTag(m.Tag); err != nil {
			return err
		}
		if !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" {
			return fmt.Errorf("mount point %q: want a clean absolute path other than /", m.Path)
		}
	}
	if s.RootTag != "" {
		if err := ValidTag(s.RootTag); err != nil {
			return err
		}
	}
	return nil
}

// ParseSpec reads a job description; the guest calls it on SpecPath.
func ParseSpec(b []byte) (Spec, error) {
	var s Spec
	if err := pack.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	return s, nil
}

// EncodeSpec encodes s for SpecPath. The caller has validated s
// (runjob.Layer does); ParseSpec validates it again in the guest.
func EncodeSpec(s Spec) ([]byte, error) {
	return pack.Marshal(s)
}
