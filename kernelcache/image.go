package kernelcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/inputfile"
	"github.com/vmm-dev/vmm/kernelimage"
)

// mapped is a file's bytes, read through a read-only mapping of the file,
// or held on the heap. A page of a mapping past the file's end (the file
// was cut short after it was mapped), or one the disk fails to read, is a
// SIGBUS on first touch, which would kill vmm; Read turns that into an
// error.
type mapped struct {
	what    string // the file, for errors: "kernel cache entry PATH", "kernel PATH"
	data    []byte
	mapping []byte // what to unmap, or nil for bytes on the heap
}

// Read calls f with the bytes. What f keeps of them (a parsed ELF's
// segments, a bzImage's payload) must be read only inside Read and not
// after Close. If the file becomes unreadable while f reads it, Read
// returns an error instead of letting the fault kill the process.
func (m *mapped) Read(f func(data []byte) error) error {
	if err := m.guard(func() error { return f(m.data) }); err != nil {
		if errors.Is(err, errUnreadable) {
			return fmt.Errorf("%s %w", m.what, err)
		}
		return err
	}
	return nil
}

// errUnreadable is a fault on a mapping (guard).
var errUnreadable = errors.New("was cut short or could not be read while vmm read it")

// guard runs f, turning a fault on the mapping into errUnreadable: with
// debug.SetPanicOnFault, the runtime panics with an error that has an
// Addr method instead of crashing, in this goroutine only. A fault
// anywhere else (guest memory, a wild pointer) and any other panic go on.
func (m *mapped) guard(f func() error) (err error) {
	if m.mapping == nil {
		return f()
	}
	// reflect gives the mapping's address without package unsafe.
	start := reflect.ValueOf(m.mapping).Pointer()
	end := start + uintptr(len(m.mapping))
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			fault, ok := r.(interface{ Addr() uintptr })
			if !ok || fault.Addr() < start || fault.Addr() >= end {
				panic(r)
			}
			err = errUnreadable
		}
	}()
	return f()
}

// Close releases the mapping; Read must not be called after it.
func (m *mapped) Close() error {
	mp := m.mapping
	m.mapping, m.data = nil, nil
	if mp == nil {
		return nil
	}
	return unix.Munmap(mp)
}

// Image is the -kernel file, mapped read-only instead of read whole. A
// boot whose vmlinux comes from the cache (found through the key index)
// then reads only the bzImage's setup header, a page or two: reading all
// of Debian's 14 MB bzImage onto the heap took 50-125 ms of a warm
// boot's setup in this project's nested L1, and a bzImage booted as it
// is went through the heap on its way into guest memory. A pipe (-kernel
// <(...)), or a file on a file system that cannot map it, is read onto
// the heap, as before.
//
// A mapping shows the file as it is at each read, where a copy showed it
// as it was once: Read therefore checks, after every read, that the file
// still has the size and times it had when it was opened, and fails
// otherwise, so a kernel rewritten in place between the header's parse
// and the payload's load is an error, not the new payload booted under
// the old header.
type Image struct {
	mapped
	file *os.File // the regular file, kept open for fstat
	id   fileID   // its identity and times when opened
	src  *Source  // nil: no key index for this file
}

// maxRead bounds what OpenImage reads onto the heap (a pipe, or a file
// that cannot be mapped) and what Image.stable copies there: far above
// any kernel (Debian's bzImage is 14 MB, its vmlinux 53 MB), below what
// would exhaust the heap. A mapped file costs only what is read of it.
const maxRead = 1 << 30

// OpenImage opens the kernel file at path. Its Source is nil unless the
// file is a regular file on a trustedFS (see keyindex.go). The caller
// reads it through Read and closes it.
func OpenImage(path string) (*Image, error) {
	f, err := inputfile.Open(path, inputfile.RegularOrPipe)
	if err != nil {
		return nil, err
	}
	at := time.Now()
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	what := "kernel " + path
	id, ok := fileIDOf(st)
	if !ok {
		defer f.Close()
		b, err := readPipe(f, maxRead) // a pipe: -kernel <(...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &Image{mapped: mapped{what: what, data: b}}, nil
	}
	im := &Image{mapped: mapped{what: what}, file: f, id: id}
	if st.Size() > 0 { // mmap refuses a length of 0; an empty file parses as one
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			// A file system without mmap (ENODEV): read it, as before.
			b, err := readAtMost(f, maxRead)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			im.data = b
		} else {
			im.data, im.mapping = m, m
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil || !slices.Contains(trustedFS, int64(sfs.Type)) {
		return im, nil
	}
	im.src = &Source{id: id, at: at}
	return im, nil
}

// pipeHeader is how much of a piped kernel readPipe checks before it
// reads the rest: up to the end of a bzImage's "HdrS" magic, at
// 0x202 (bootparam; Documentation/arch/x86/boot.rst), which also covers
// an ELF header's magic.
const (
	pipeHeader     = 0x206
	bzImageMagicAt = 0x202
	bzImageMagic   = "HdrS"
)

// readPipe reads a piped kernel to its end, at most limit bytes, once
// its first bytes show a bzImage or an ELF file: a pipe of anything else
// (cat /dev/urandom) is refused at once rather than read to the limit.
// A pipe shorter than the header is returned as it is, for the parser
// to refuse in its own words.
func readPipe(r io.Reader, limit int64) ([]byte, error) {
	head := make([]byte, pipeHeader)
	n, err := io.ReadFull(r, head)
	switch {
	case err == io.EOF:
		// A FIFO is opened without waiting for its writer (package
		// inputfile), so one nobody has open for writing yet reads as
		// empty.
		return nil, errors.New("a pipe or FIFO that gave no data (a FIFO is read at once: start its writer first)")
	case err == io.ErrUnexpectedEOF:
		return head[:n], nil
	case err != nil:
		return nil, err
	case !kernelimage.IsELF(head) && string(head[bzImageMagicAt:pipeHeader]) != bzImageMagic:
		return nil, fmt.Errorf("not a Linux bzImage or vmlinux (no %q at %#x, no ELF magic)", bzImageMagic, bzImageMagicAt)
	}
	return readAtMost(io.MultiReader(bytes.NewReader(head), r), limit)
}

// readAtMost reads r to its end, failing past limit bytes.
func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than any kernel (over %d MiB)", limit>>20)
	}
	return b, nil
}

// Read is mapped.Read, failing if the file changed meanwhile (see Image).
func (im *Image) Read(f func(data []byte) error) error {
	if err := im.mapped.Read(f); err != nil {
		return err
	}
	return im.checkSame()
}

// checkSame fails if the file no longer has the size and times it had
// when it was opened. Bytes on the heap are not the file's any more, and
// always pass.
func (im *Image) checkSame() error {
	if im.mapping == nil || im.same() {
		return nil
	}
	return im.errChanged()
}

// errChanged is the error for a file that changed while vmm read it.
func (im *Image) errChanged() error { return fmt.Errorf("%s changed while vmm read it", im.what) }

// same reports whether the file still has the size and times it had when
// it was opened.
func (im *Image) same() bool {
	if im.file == nil {
		return false
	}
	st, err := im.file.Stat()
	if err != nil {
		return false
	}
	id, ok := fileIDOf(st)
	return ok && id == im.id
}

// unchanged reports whether the key index may be used for the file: it
// is on a trusted file system and unchanged since it was opened.
func (im *Image) unchanged() bool { return im.src != nil && im.same() }

// stable returns the whole image on the heap, and its Source. Hashing
// and decompressing read the same copy, so an entry is always the kernel
// its key names; a file that changed since it was opened is an error, as
// the header the caller parsed is the old file's.
func (im *Image) stable() ([]byte, *Source, error) {
	if im.mapping == nil {
		// Already on the heap: a pipe's (no file, no Source), or a
		// file's read whole.
		if im.file != nil && !im.same() {
			return nil, nil, im.errChanged()
		}
		return im.data, im.src, nil
	}
	if len(im.data) > maxRead {
		// A bzImage with gigabytes appended, or a sparse file: the copy
		// would be that size. The caller boots it without the cache.
		return nil, nil, fmt.Errorf("%s: %d MiB, larger than any kernel (at most %d MiB are copied for the cache)", im.what, len(im.data)>>20, maxRead>>20)
	}
	var b []byte
	if err := im.Read(func(data []byte) error { b = bytes.Clone(data); return nil }); err != nil {
		return nil, nil, err
	}
	return b, im.src, nil
}

// Close unmaps the image and closes its file.
func (im *Image) Close() error {
	err := im.mapped.Close()
	if im.file != nil {
		if cerr := im.file.Close(); err == nil {
			err = cerr
		}
		im.file = nil
	}
	return err
}
