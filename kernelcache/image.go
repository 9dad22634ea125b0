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
// of Debian's 14 MB bzImage onto the heap took 110-125 ms of a warm
// boot's 380 ms setup in this project's nested L1, and a bzImage booted
// as it is went through the heap on its way into guest memory. A pipe
// (-kernel <(...)) is read onto the heap, as before.
type Image struct {
	mapped
	file *os.File // the regular file mapped, kept open for Stable's fstat
	src  *Source  // nil: no key index for this file
}

// maxImage bounds the kernel files OpenImage maps or reads: far above any
// kernel (Debian's bzImage is 14 MB, its vmlinux 53 MB), far below what
// would exhaust the address space or the heap.
const maxImage = 1 << 30

// OpenImage opens the kernel file at path. Its Source is nil unless the
// file is a regular file on a trustedFS (see keyindex.go). The caller
// reads it through Read and closes it.
func OpenImage(path string) (*Image, error) {
	f, err := os.Open(path)
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
	if !st.Mode().IsRegular() {
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxImage+1)) // a pipe: -kernel <(...)
		if err != nil {
			return nil, err
		}
		if len(b) > maxImage {
			return nil, fmt.Errorf("%s: larger than any kernel (over %d MiB)", path, maxImage>>20)
		}
		return &Image{mapped: mapped{what: what, data: b}}, nil
	}
	if st.Size() > maxImage {
		f.Close()
		return nil, fmt.Errorf("%s: larger than any kernel (%d MiB)", path, st.Size()>>20)
	}
	im := &Image{mapped: mapped{what: what}, file: f}
	if st.Size() > 0 { // mmap refuses a length of 0; an empty file parses as one
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			// A file system without mmap (ENODEV): read it, as before.
			b := make([]byte, st.Size())
			if _, err := io.ReadFull(f, b); err != nil {
				f.Close()
				return nil, fmt.Errorf("%s changed while read: %w", path, err)
			}
			im.data = b
		} else {
			im.data, im.mapping = m, m
		}
	}
	id, ok := fileIDOf(st)
	if !ok {
		return im, nil
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil || !slices.Contains(trustedFS, int64(sfs.Type)) {
		return im, nil
	}
	im.src = &Source{id: id, at: at}
	return im, nil
}

// unchanged reports whether the file still has the size and times it had
// when it was opened, so what was read of it since is of that version.
func (im *Image) unchanged() bool {
	if im.src == nil || im.file == nil {
		return false
	}
	st, err := im.file.Stat()
	if err != nil {
		return false
	}
	id, ok := fileIDOf(st)
	return ok && id == im.src.id
}

// stable returns the whole image on the heap, and its Source if the file
// did not change while it was copied (nil otherwise). Hashing and
// decompressing read the same copy, so an entry is always the kernel its
// key names even if the file is rewritten meanwhile; the mapping would
// show each read the file as it is at that moment.
func (im *Image) stable() ([]byte, *Source, error) {
	if im.mapping == nil {
		// Already on the heap: a pipe's (no Source), or a file's read
		// whole, whose status is checked as for a copy.
		if im.src != nil && !im.unchanged() {
			return im.data, nil, nil
		}
		return im.data, im.src, nil
	}
	var b []byte
	if err := im.Read(func(data []byte) error { b = bytes.Clone(data); return nil }); err != nil {
		return nil, nil, err
	}
	if !im.unchanged() {
		return b, nil, nil
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
