// Package runjob is the host side of `vmm run`'s contract with the guest
// init that runs its job (the contract itself, the job description and
// the paths both sides use, is package guestabi): it packs the job and
// the files it shares for the guest, and unpacks the results the guest
// hands back.
//
// Both directions avoid new devices. In, vmm appends an uncompressed cpio
// archive to the initrd (Linux unpacks concatenated archives into one
// rootfs): /vmm/job.json and the shared directory under /share. Out, the
// guest writes a tar stream of its output directory onto a scratch
// virtio-blk disk with serial guestabi.OutSerial, and vmm extracts it after the
// guest is gone. The exit status travels through guestabi.ExitPort.
package runjob

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vmm-dev/vmm/guestabi"
)

// Layer builds the cpio archive vmm appends to the initrd: the job spec,
// and with share != "" that directory's tree under guestabi.ShareDir (regular
// files, directories and symlinks; other file types are refused rather
// than silently left out).
func Layer(spec guestabi.Spec, share string) ([]byte, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var w cpioWriter
	w.dir("vmm", 0o755)
	w.file(strings.TrimPrefix(guestabi.SpecPath, "/"), 0o644, js)
	if share != "" {
		if err := addTree(&w, share, strings.TrimPrefix(guestabi.ShareDir, "/")); err != nil {
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
