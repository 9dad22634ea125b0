// Package runjob is the contract between `vmm run` and the guest init that
// runs its job: the job description vmm hands in, the files it shares,
// and the results the guest hands back.
//
// Both directions avoid new devices. In, vmm appends an uncompressed cpio
// archive to the initrd (Linux unpacks concatenated archives into one
// rootfs): /vmm/job.json and the shared directory under /share. Out, the
// guest writes a tar stream of its output directory onto a scratch
// virtio-blk disk with serial OutSerial, and vmm extracts it after the
// guest is gone. The exit status travels through package exitport.
package runjob

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Paths inside the guest.
const (
	// SpecPath is where the job description appears; its presence is
	// what tells the guest init to run a job instead of a shell.
	SpecPath = "/vmm/job.json"
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
	// job's stderr.
	JobTTY = "/dev/ttyS1"
)

// Statuses the guest reports for a job that did not run to its own exit
// status, following the shell's conventions.
const (
	StatusNotExecutable = 126 // found but could not be executed
	StatusNotFound      = 127 // no such command
	StatusSignalBase    = 128 // killed by signal N: 128+N
)

// Spec is the job, as JSON in SpecPath.
type Spec struct {
	// Args is the command and its arguments; Args[0] is looked up in
	// PATH if it has no slash.
	Args []string `json:"args"`
	// Env is added to the environment (KEY=VALUE).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means ShareDir when files are
	// shared, else /.
	Dir string `json:"dir,omitempty"`
	// Out says whether the guest copies OutDir back.
	Out bool `json:"out,omitempty"`
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
	return nil
}

// ParseSpec reads a job description; the guest calls it on SpecPath.
func ParseSpec(b []byte) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	return s, nil
}

// Layer builds the cpio archive vmm appends to the initrd: the job spec,
// and with share != "" that directory's tree under ShareDir (regular
// files, directories and symlinks; other file types are refused rather
// than silently left out).
func Layer(spec Spec, share string) ([]byte, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var w cpioWriter
	w.dir("vmm", 0o755)
	w.file(strings.TrimPrefix(SpecPath, "/"), 0o644, js)
	if share != "" {
		if err := addTree(&w, share, strings.TrimPrefix(ShareDir, "/")); err != nil {
			return nil, err
		}
	}
	return w.finish(), nil
}

func addTree(w *cpioWriter, root, under string) error {
	st, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("-share: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("-share %s: not a directory", root)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("-share: %w", err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := path.Join(under, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("-share: %w", err)
		}
		perm := uint32(info.Mode().Perm())
		switch {
		case d.IsDir():
			w.dir(name, perm)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("-share: %w", err)
			}
			w.file(name, perm, b)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("-share: %w", err)
			}
			w.symlink(name, target)
		default:
			return fmt.Errorf("-share: %s: not a regular file, directory or symlink", p)
		}
		return nil
	})
}
