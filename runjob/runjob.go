// Package runjob is the host side of `vmm run`'s contract with the guest
// init that runs its job (the contract itself, the job description and
// the paths both sides use, is package guestabi): it packs the job for
// the guest, and has the results the guest hands back unpacked. Shared
// directories are not packed: `vmm run -share` attaches them live over
// virtio-fs, and the job spec says where the guest mounts them.
//
// In, vmm appends an uncompressed cpio archive to the initrd (Linux
// unpacks concatenated archives into one rootfs) holding /vmm/job.json.
// Out, the guest writes a tar stream of its output directory onto a
// scratch virtio-blk disk with serial guestabi.OutSerial, and once the
// guest is gone the vmm-unpack helper unpacks it (package runjob/outtar),
// driven by Collector. The exit status travels through guestabi.ExitPort.
package runjob

import (
	"strings"

	"github.com/vmm-dev/vmm/guestabi"
)

// Layer builds the cpio archive vmm appends to the initrd: the job spec.
func Layer(spec guestabi.Spec) ([]byte, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	js := guestabi.EncodeSpec(spec)
	var w cpioWriter
	w.dir("vmm", 0o755)
	w.file(strings.TrimPrefix(guestabi.SpecPath, "/"), 0o644, js)
	return w.finish(), nil
}
