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
	"strings"

	"github.com/vmm-dev/vmm/guestabi"
)

// Layer builds the cpio archive vmm appends to the initrd: the job spec,
// and with share != "" that directory's tree under guestabi.ShareDir (regular
// files, directories and symlinks; other file types, files of 4 GiB or
// more, which newc cannot hold, and entries that change type while they
// are read are refused rather than silently left out). A symlink naming
// the share itself is followed; symlinks inside it are copied as links.
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
