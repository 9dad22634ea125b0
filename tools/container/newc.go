package container

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// newc is the "new ASCII" cpio format Linux unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte
// header of a 6-byte magic and 13 eight-digit hex fields, the NUL-ended
// name padded to 4 bytes, then the data padded to 4 bytes. An entry named
// TRAILER!!! ends an archive; more archives may follow after zero padding.
const (
	newcMagic    = "070701"
	newcMagicCRC = "070702" // same layout, with a data checksum we ignore
	newcHdrLen   = 110
	newcTrailer  = "TRAILER!!!"
	// maxName bounds a name (PATH_MAX, include/uapi/linux/limits.h):
	// the kernel refuses longer ones too, and the length field could
	// otherwise ask us to allocate 4 GiB.
	maxName = 4096
)

// Mode bits of a newc entry (include/uapi/linux/stat.h).
const (
	modeType  = 0o170000
	modeDir   = 0o040000
	modeReg   = 0o100000
	modeLink  = 0o120000
	modePerms = 0o7777
)

// entry is one archive member. Data reads exactly Size bytes of it.
type entry struct {
	Name         string
	Mode         uint32
	Ino          uint32
	NLink        uint32
	Size         uint32
	Major, Minor uint32 // device the file was on (hard link identity)
}

// newcReader reads newc entries from a stream, one at a time, without
// ever holding more than one name in memory.
type newcReader struct {
	r    *bufio.Reader
	left int64 // unread data of the current entry
	pad  int   // padding after it
	hdr  [newcHdrLen]byte
}

// openArchive returns a reader for an initramfs: a newc archive, or one
// compressed with gzip (the format `make kernel` and distro tools use).
func openArchive(r io.Reader) (*newcReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("initramfs: gzip: %w", err)
		}
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	return &newcReader{r: br}, nil
}

// errEnd means the stream ended cleanly after a trailer.
var errEnd = errors.New("end of archive")

// next skips what is left of the current entry and reads the next header.
// It returns errEnd at the end of the last archive.
func (n *newcReader) next() (entry, error) {
	if err := n.skip(); err != nil {
		return entry{}, err
	}
	for {
		// Zero padding may separate concatenated archives; it comes in
		// whole 4-byte units, as the kernel requires.
		b, err := n.r.Peek(4)
		if errors.Is(err, io.EOF) && allZero(b) {
			return entry{}, errEnd // the end, maybe after a little padding
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return entry{}, fmt.Errorf("initramfs: %w", err)
		}
		if len(b) == 4 && bytes.Equal(b, []byte{0, 0, 0, 0}) {
			n.r.Discard(4)
			continue
		}
		break
	}
	if _, err := io.ReadFull(n.r, n.hdr[:]); err != nil {
		return entry{}, fmt.Errorf("initramfs: header: %w", unexpected(err))
	}
	if m := string(n.hdr[:6]); m != newcMagic && m != newcMagicCRC {
		return entry{}, fmt.Errorf("initramfs: bad magic %q (not a newc cpio archive)", m)
	}
	var f [13]uint32
	for i := range f {
		field := n.hdr[6+8*i : 14+8*i]
		v, err := strconv.ParseUint(string(field), 16, 32)
		if err != nil {
			return entry{}, fmt.Errorf("initramfs: header field %d %q: not hex", i, field)
		}
		f[i] = uint32(v)
	}
	e := entry{Ino: f[0], Mode: f[1], NLink: f[4], Size: f[6], Major: f[7], Minor: f[8]}
	nameSize := f[11]
	if nameSize == 0 || nameSize > maxName {
		return entry{}, fmt.Errorf("initramfs: name size %d out of range", nameSize)
	}
	name := make([]byte, nameSize)
	if _, err := io.ReadFull(n.r, name); err != nil {
		return entry{}, fmt.Errorf("initramfs: name: %w", unexpected(err))
	}
	if name[nameSize-1] != 0 {
		return entry{}, fmt.Errorf("initramfs: name %q not NUL-terminated", name)
	}
	e.Name = string(name[:nameSize-1])
	if _, err := n.r.Discard(pad4(newcHdrLen + int64(nameSize))); err != nil {
		return entry{}, fmt.Errorf("initramfs: %s: %w", e.Name, unexpected(err))
	}
	n.left, n.pad = int64(e.Size), pad4(int64(e.Size))
	if e.Name == newcTrailer {
		if err := n.skip(); err != nil {
			return entry{}, err
		}
		return n.next()
	}
	return e, nil
}

// Read reads the current entry's data.
func (n *newcReader) Read(p []byte) (int, error) {
	if n.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > n.left {
		p = p[:n.left]
	}
	k, err := n.r.Read(p)
	n.left -= int64(k)
	if errors.Is(err, io.EOF) && n.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

func (n *newcReader) skip() error {
	if _, err := n.r.Discard(int(n.left) + n.pad); err != nil {
		return fmt.Errorf("initramfs: data: %w", unexpected(err))
	}
	n.left, n.pad = 0, 0
	return nil
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

func pad4(n int64) int { return int((4 - n%4) % 4) }

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
