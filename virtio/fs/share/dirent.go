package share

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// direntHeader is struct linux_dirent64 up to d_name: le64 d_ino, le64
// d_off, le16 d_reclen, u8 d_type (getdents64(2)).
const direntHeader = 19

// dirent is one record getdents64 returned.
type dirent struct {
	ino  uint64
	off  uint64 // where the next record starts: what the guest seeks to
	typ  uint8  // DT_*
	name []byte
}

// parseDirent decodes the record at the start of b and returns the rest.
func parseDirent(b []byte) (dirent, []byte, bool) {
	if len(b) < direntHeader {
		return dirent{}, nil, false
	}
	reclen := int(binary.NativeEndian.Uint16(b[16:]))
	if reclen <= direntHeader || reclen > len(b) {
		return dirent{}, nil, false
	}
	name := b[direntHeader:reclen]
	i := bytes.IndexByte(name, 0)
	if i < 0 {
		return dirent{}, nil, false
	}
	return dirent{
		ino:  binary.NativeEndian.Uint64(b[0:]),
		off:  binary.NativeEndian.Uint64(b[8:]),
		typ:  b[18],
		name: name[:i],
	}, b[reclen:], true
}

// readDir serves READDIR and READDIRPLUS without keeping state between
// requests: it seeks the directory to the offset the guest gives (0, or
// the d_off of the last entry it got), reads records from there and adds
// them until the reply is full. A record that does not fit is read again
// by the next request, which seeks back to it. This is what telldir and
// seekdir promise on every Linux file system, and it keeps a guest that
// opens many directories from making the server hold buffers for them.
//
// READDIRPLUS also looks each entry up, one component at a time as
// LOOKUP does, and counts it as a lookup; "." and ".." and entries that
// vanished meanwhile go without (node ID 0, which the guest does not
// count).
func (fs *fsys) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	h := fs.t.handle(in.Fh, true)
	if h == nil {
		return fuse.EBADF
	}
	if in.Offset > math.MaxInt64 {
		return fuse.EINVAL
	}
	bp := fs.dirents.Get().(*[]byte)
	defer fs.dirents.Put(bp)
	buf := *bp
	h.mu.Lock()
	defer h.mu.Unlock()
	added := false
	err := h.do(func(fd int) error {
		if _, err := unix.Seek(fd, int64(in.Offset), io.SeekStart); err != nil {
			return err
		}
		for {
			var n int
			if err := retry(func() (err error) { n, err = unix.Getdents(fd, buf); return err }); err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			for b := buf[:n]; len(b) > 0; {
				d, rest, ok := parseDirent(b)
				if !ok {
					return unix.EIO
				}
				b = rest
				if !fs.addEntry(fd, out, &d, plus) {
					return nil
				}
				added = true
			}
		}
	})
	if err != nil && added {
		return fuse.OK // the guest gets the entries, and the error next time
	}
	return status(err)
}

// addEntry adds d to out and reports whether it fit.
func (fs *fsys) addEntry(dirfd int, out *fuse.DirEntryList, d *dirent, plus bool) bool {
	e := fuse.DirEntry{
		Name: string(d.name),
		Ino:  d.ino,
		Mode: uint32(d.typ) << 12, // DT_* is S_IFMT >> 12
		Off:  d.off,
	}
	if !plus {
		return out.AddDirEntry(e)
	}
	eo := out.AddDirLookupEntry(e)
	if eo == nil {
		return false
	}
	if e.Name == "." || e.Name == ".." {
		return true
	}
	fd, err := openPath(fs.sys, dirfd, e.Name)
	if err != nil {
		return true
	}
	if st := fs.register(fd, eo); !st.Ok() {
		*eo = fuse.EntryOut{}
	}
	return true
}
