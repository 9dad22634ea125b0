package runjob

import "fmt"

// cpioWriter writes the "newc" cpio format the kernel's initramfs
// unpacker reads (Documentation/driver-api/early-userspace/buffer-format.rst):
// a 110-byte ASCII header, the NUL-terminated name and the data, each
// padded to 4 bytes, closed by the entry TRAILER!!!.
type cpioWriter struct {
	buf []byte
	ino uint32
}

// Mode bits of the header's c_mode (the S_IF* values of stat(2)).
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
)

func (w *cpioWriter) dir(name string, perm uint32) { w.entry(name, cpioDir|perm, 2, nil) }
func (w *cpioWriter) file(name string, perm uint32, data []byte) {
	w.entry(name, cpioRegular|perm, 1, data)
}

func (w *cpioWriter) entry(name string, mode, nlink uint32, data []byte) {
	w.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check.
	w.buf = fmt.Appendf(w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, 0)
	w.pad()
	w.buf = append(w.buf, data...)
	w.pad()
}

func (w *cpioWriter) pad() {
	for len(w.buf)%4 != 0 {
		w.buf = append(w.buf, 0)
	}
}

func (w *cpioWriter) finish() []byte {
	w.ino = 0
	w.entry("TRAILER!!!", 0, 1, nil)
	return w.buf
}
