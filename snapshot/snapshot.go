// Package snapshot owns the on-disk format of a vmm snapshot: a directory
// with two files.
//
//   - state: a header, a manifest saying what the snapshot was made from
//     (encoded by package pack), the machine's state (an opaque blob to
//     this package: the machine package encodes it), and a BLAKE2b-256
//     over all of it. Parse
//     checks the magic, the format version, every length and the hash
//     before anything is decoded, so a truncated or corrupted file is one
//     error and never a half-restored guest.
//   - memory: guest RAM, the regions one after the other, written sparsely
//     (all-zero 4 KiB pages are holes), so a restore can map it
//     MAP_PRIVATE and many jobs share its pages in the page cache; then
//     a trailer page naming the RAM's full hash, which the manifest
//     names too. The two files are written and renamed one after the
//     other, so a restore that reads them while a new snapshot replaces
//     them, or after a save that failed between the two, could find one
//     of each save; the trailer tells it so, where the sampled pages of
//     two saves of the same guest can be alike.
//
// Reading the whole memory file at every restore would cost what the
// mapping saves, so the manifest records its size, a full BLAKE2b-256
// (for an offline check, Verify: vmm snapshot -verify) and the BLAKE2b-256 of sampleCount pages
// spread over it, which Open checks: reading 64 pages catches a
// truncated, replaced or zeroed file without reading hundreds of MiB.
//
// The hash is BLAKE2b-256 (golang.org/x/crypto/blake2b), not SHA-256:
// as collision-resistant, and crypto/sha256 brings Go's whole FIPS 140
// module with it (AES, SHA-3, SHA-512, a DRBG: 0.15 MB of vmm's code and
// read-only data, resident in every vmm) for one hash.
//
// It is its own package so the format, and its fuzzed parser, are apart
// from KVM: nothing here imports kvm or machine.
package snapshot

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/vmm-dev/vmm/internal/inputfile"
	"github.com/vmm-dev/vmm/internal/pack"
)

// FormatVersion is the version of this layout and of the machine state
// it carries. A snapshot of another version is refused, never converted.
// Version 3 encodes the manifest and the state with package pack (2 had
// them in JSON); 4 added Manifest.JobInputPort; 5 the memory file's
// trailer.
const FormatVersion = 5

// File names inside a snapshot directory.
const (
	StateFile  = "state"
	MemoryFile = "memory"
)

// magic starts the state file, and memoryMagic the memory file's
// trailer (then the RAM's BLAKE2b-256, then zeros to a page).
var (
	magic       = [8]byte{'V', 'M', 'M', 'S', 'N', 'A', 'P', 0}
	memoryMagic = [8]byte{'V', 'M', 'M', 'R', 'A', 'M', 0, 0}
)

// Header layout: magic, u32 format version, u32 manifest length, u64
// state length, all little-endian; then manifest, state, BLAKE2b-256.
const (
	headerSize = 8 + 4 + 4 + 8
	sumSize    = blake2b.Size256
	// MaxManifest and MaxState bound what Parse accepts, so a damaged
	// length field cannot make it allocate gigabytes.
	MaxManifest = 1 << 20
	MaxState    = 64 << 20
	// PageSize is the unit of the sparse memory file and of samples.
	PageSize    = 4096
	sampleCount = 64
)

// ErrCorrupt wraps every error about a damaged or truncated snapshot.
var ErrCorrupt = errors.New("snapshot is corrupt or truncated")

// FileID names an input file by path and content.
type FileID struct {
	Path string
	Hash string // BLAKE2b-256, hex
	Size int64
}

// Device is one virtio device the guest was booted with, in bus order.
type Device struct {
	Kind     string // "blk", "net", "fs" or "console" (vmm run's job output port)
	Serial   string
	Tag      string // fs: the mount tag; console: the port's name
	ReadOnly bool
	Capacity int64  // blk: bytes
	MAC      string // net
}

// Memory describes the memory file.
type Memory struct {
	// Size is the RAM's, which the file holds before its trailer page.
	Size uint64
	// Hash is the BLAKE2b-256 of the RAM (the file but its trailer), for
	// Verify, and what the trailer names.
	Hash string
	// SampleHash is that of the pages at SampleOffsets(Size), which
	// Open checks.
	SampleHash string
}

// Manifest says what a snapshot was made from and by whom.
type Manifest struct {
	VMMVersion string
	Created    time.Time
	Kernel     FileID
	Initrd     *FileID
	Cmdline    string
	MemSize    uint64
	CPUs       int
	Devices    []Device
	// JobInputPort says the guest's init found the job's input port (a
	// console device among Devices) before it waited: a restored job's
	// piped stdin can go there (guestabi.WaitInputPort).
	JobInputPort bool
	// HostCPU is the vendor and feature flags of the CPU the guest saw,
	// for people; the restore's check compares CPUID itself.
	HostCPU string
	Memory  Memory
}

// Encode lays out the state file.
func Encode(m Manifest, state []byte) ([]byte, error) {
	mb, err := pack.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("snapshot manifest: %w", err)
	}
	if len(mb) > MaxManifest || len(state) > MaxState {
		return nil, fmt.Errorf("snapshot: manifest of %d bytes or state of %d bytes over the limits (%d, %d)", len(mb), len(state), MaxManifest, MaxState)
	}
	out := make([]byte, headerSize, headerSize+len(mb)+len(state)+sumSize)
	copy(out, magic[:])
	binary.LittleEndian.PutUint32(out[8:], FormatVersion)
	binary.LittleEndian.PutUint32(out[12:], uint32(len(mb)))
	binary.LittleEndian.PutUint64(out[16:], uint64(len(state)))
	out = append(out, mb...)
	out = append(out, state...)
	sum := blake2b.Sum256(out)
	return append(out, sum[:]...), nil
}

// Parse checks and splits a state file. The state returned aliases b.
func Parse(b []byte) (Manifest, []byte, error) {
	var m Manifest
	if len(b) < headerSize+sumSize {
		return m, nil, fmt.Errorf("%w: state file of %d bytes", ErrCorrupt, len(b))
	}
	if !bytes.Equal(b[:8], magic[:]) {
		return m, nil, fmt.Errorf("%w: not a vmm snapshot (bad magic)", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != FormatVersion {
		return m, nil, fmt.Errorf("snapshot format %d, this vmm reads format %d: make the snapshot again with this vmm", v, FormatVersion)
	}
	ml := uint64(binary.LittleEndian.Uint32(b[12:]))
	sl := binary.LittleEndian.Uint64(b[16:])
	if ml > MaxManifest || sl > MaxState {
		return m, nil, fmt.Errorf("%w: manifest of %d bytes, state of %d", ErrCorrupt, ml, sl)
	}
	if want := headerSize + ml + sl + sumSize; uint64(len(b)) != want {
		return m, nil, fmt.Errorf("%w: state file is %d bytes, its header says %d", ErrCorrupt, len(b), want)
	}
	body := b[:len(b)-sumSize]
	if sum := blake2b.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return m, nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if err := pack.Unmarshal(body[headerSize:headerSize+ml], &m); err != nil {
		return m, nil, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	if err := m.validate(); err != nil {
		return m, nil, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	return m, body[headerSize+ml:], nil
}

func (m *Manifest) validate() error {
	switch {
	case m.MemSize == 0 || m.MemSize%PageSize != 0:
		return fmt.Errorf("memory size %d", m.MemSize)
	case m.Memory.Size != m.MemSize:
		return fmt.Errorf("memory file of %d bytes for %d of RAM", m.Memory.Size, m.MemSize)
	case m.CPUs < 1:
		return fmt.Errorf("%d vCPUs", m.CPUs)
	}
	for _, d := range m.Devices {
		if d.Kind != "blk" && d.Kind != "net" && d.Kind != "fs" && d.Kind != "console" {
			return fmt.Errorf("device kind %q", d.Kind)
		}
		if d.Capacity < 0 {
			return fmt.Errorf("%s device of %d bytes", d.Kind, d.Capacity)
		}
	}
	return nil
}

// SampleOffsets are the page offsets whose contents Memory.SampleHash
// covers: sampleCount pages spread evenly, the last page included.
func SampleOffsets(size uint64) []uint64 {
	pages := size / PageSize
	if pages == 0 {
		return nil
	}
	n := uint64(sampleCount)
	if pages < n {
		n = pages
	}
	out := make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		out = append(out, (i*(pages-1)/max(n-1, 1))*PageSize)
	}
	return out
}

// newHash is BLAKE2b-256 (see the package doc for why).
func newHash() hash.Hash {
	h, err := blake2b.New256(nil)
	if err != nil {
		panic(err) // only a key over 64 bytes fails, and there is none
	}
	return h
}

// sampleHash hashes the sampled pages of r.
func sampleHash(r io.ReaderAt, size uint64) (string, error) {
	h := newHash()
	page := make([]byte, PageSize)
	for _, off := range SampleOffsets(size) {
		if _, err := r.ReadAt(page, int64(off)); err != nil {
			return "", err
		}
		h.Write(page)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Write saves a snapshot into dir (created if missing): the memory file
// from regions (guest RAM in order), sparsely, then the state file. The
// manifest's Memory is filled in here. Each file is written under a
// temporary name of its own and renamed, so a snapshot interrupted
// half-way is not mistaken for a whole one and two saves into one
// directory do not write into one file. The files are the owner's alone
// (os.CreateTemp makes them 0600): the memory file is the guest's RAM,
// with whatever the initramfs and the guest held. The memory file is
// read-only (0400): every restored vmm maps it, and one cut short or
// rewritten in place (cp over it) while they run would change their
// guests' RAM under them or fault vmm; a new snapshot replaces it by
// rename, which they do not see.
func Write(dir string, m Manifest, state []byte, regions [][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	mem, written, err := writeMemory(dir, regions)
	if err != nil {
		return err
	}
	m.Memory = mem
	if m.Memory.Size != m.MemSize {
		err = fmt.Errorf("snapshot: %d bytes of RAM regions for a %d-byte machine", m.Memory.Size, m.MemSize)
	}
	var b []byte
	if err == nil {
		b, err = Encode(m, state)
	}
	if err == nil {
		err = writeFile(filepath.Join(dir, StateFile), b)
	}
	if err != nil {
		// The memory file renamed into place pairs with no state file
		// (Open would say so): removed, unless another save has put
		// its own there since.
		path := filepath.Join(dir, MemoryFile)
		if now, serr := os.Lstat(path); serr == nil && os.SameFile(now, written) {
			os.Remove(path)
		}
	}
	return err
}

// tmpPattern names a file while it is written (os.CreateTemp's
// pattern after the file's name), before it is renamed into place.
const tmpPattern = ".tmp-*"

func writeFile(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+tmpPattern)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// writeMemory writes the non-zero pages of regions at their offsets into
// a file truncated to their total size, leaving holes for the rest, then
// the trailer. It returns what it wrote and the file it renamed into
// place.
func writeMemory(dir string, regions [][]byte) (Memory, os.FileInfo, error) {
	path := filepath.Join(dir, MemoryFile)
	f, err := os.CreateTemp(dir, MemoryFile+tmpPattern)
	if err != nil {
		return Memory{}, nil, fmt.Errorf("snapshot memory: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) (Memory, os.FileInfo, error) {
		f.Close()
		os.Remove(tmp)
		return Memory{}, nil, fmt.Errorf("snapshot memory: %w", err)
	}
	var size uint64
	for _, r := range regions {
		if len(r)%PageSize != 0 {
			return fail(fmt.Errorf("RAM region of %d bytes is not whole pages", len(r)))
		}
		size += uint64(len(r))
	}
	if err := f.Truncate(int64(size) + PageSize); err != nil {
		return fail(err)
	}
	h := newHash()
	zero := make([]byte, PageSize)
	var off int64
	for _, r := range regions {
		for p := 0; p < len(r); p += PageSize {
			page := r[p : p+PageSize]
			h.Write(page)
			if !bytes.Equal(page, zero) {
				if _, err := f.WriteAt(page, off); err != nil {
					return fail(err)
				}
			}
			off += PageSize
		}
	}
	sum := h.Sum(nil)
	mem := Memory{Size: size, Hash: hex.EncodeToString(sum)}
	if _, err := f.WriteAt(trailer(sum), int64(size)); err != nil {
		return fail(err)
	}
	if mem.SampleHash, err = sampleHash(f, size); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o400); err != nil {
		return fail(err)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return Memory{}, nil, fmt.Errorf("snapshot memory: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return Memory{}, nil, fmt.Errorf("snapshot memory: %w", err)
	}
	return mem, st, nil
}

// trailer is the memory file's last page for RAM whose hash is sum.
func trailer(sum []byte) []byte {
	t := make([]byte, PageSize)
	copy(t, memoryMagic[:])
	copy(t[len(memoryMagic):], sum)
	return t
}

// errOtherSave is a memory file whose trailer names other RAM than the
// state file's manifest: the two are from different saves.
var errOtherSave = errors.New("its state and memory files are from different saves (one made while this read them, or one that failed between its two files): make it again")

// Snapshot is an opened snapshot: its manifest and machine state
// checked, and its memory file open for mapping.
type Snapshot struct {
	Manifest Manifest
	State    []byte
	// Memory is the memory file, open read-only; the caller maps it and
	// closes it.
	Memory *os.File
}

// Open reads and checks the snapshot in dir: the state file whole, the
// memory file's size, trailer and sampled pages. Files of two saves are
// read again, three times over about a second: a save under way renames
// its state file in place right after its memory file.
func Open(dir string) (*Snapshot, error) {
	for wait := 50 * time.Millisecond; ; wait *= 4 {
		s, err := openOnce(dir)
		if !errors.Is(err, errOtherSave) || wait > time.Second {
			return s, err
		}
		time.Sleep(wait)
	}
}

func openOnce(dir string) (*Snapshot, error) {
	if err := CheckDir(dir); err != nil {
		return nil, err
	}
	sf, err := inputfile.Open(filepath.Join(dir, StateFile), inputfile.Regular)
	if errors.Is(err, fs.ErrNotExist) {
		// Most likely the wrong directory (or one a failed save left
		// empty): say what a snapshot is, not only what is missing.
		return nil, fmt.Errorf("snapshot %s: not a snapshot: it has no %s file (vmm snapshot -o DIR makes one): %w", dir, StateFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	defer sf.Close()
	if err := checkOwned(sf); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	b, err := io.ReadAll(io.LimitReader(sf, headerSize+MaxManifest+MaxState+sumSize+1))
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	m, state, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	mf, err := inputfile.Open(filepath.Join(dir, MemoryFile), inputfile.Regular)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	err = checkOwned(mf)
	st, serr := mf.Stat()
	if err == nil {
		err = serr
	}
	if err == nil && (!st.Mode().IsRegular() || uint64(st.Size()) != m.Memory.Size+PageSize) {
		err = fmt.Errorf("%w: memory file is %d bytes, manifest says %d", ErrCorrupt, st.Size(), m.Memory.Size+PageSize)
	}
	if err == nil {
		err = checkTrailer(mf, m.Memory)
	}
	if err == nil {
		var got string
		if got, err = sampleHash(mf, m.Memory.Size); err == nil && got != m.Memory.SampleHash {
			err = fmt.Errorf("%w: memory file's sampled pages do not match the manifest", ErrCorrupt)
		}
	}
	if err != nil {
		mf.Close()
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return &Snapshot{Manifest: m, State: state, Memory: mf}, nil
}

// ErrUnsafe is a snapshot directory or file that another user could
// change: that user could put a guest of their own in its place, which
// would then run with the restoring user's -share, -out and disks.
var ErrUnsafe = errors.New("another user could change it, and so choose the guest a restore runs")

// CheckDir refuses a snapshot directory that another user could put
// other files in: one that everyone may write without the sticky bit
// (which keeps them from renaming the user's files), or, unless vmm runs
// as root, one of a user other than vmm's or root. A directory its group
// may write passes: with per-user groups (umask 002) that is the user's
// own. vmm snapshot checks it before the boot, restores before reading
// anything.
func CheckDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", dir, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !st.IsDir():
		return fmt.Errorf("snapshot %s: not a directory", dir)
	case !ok:
		return nil
	case !trustedUID(sys.Uid):
		return fmt.Errorf("snapshot %s: the directory is owned by uid %d: %w", dir, sys.Uid, ErrUnsafe)
	case sys.Mode&0o002 != 0 && sys.Mode&syscall.S_ISVTX == 0:
		return fmt.Errorf("snapshot %s: the directory has mode %o: %w", dir, sys.Mode&0o7777, ErrUnsafe)
	}
	return nil
}

// checkOwned refuses a snapshot file that everyone may write, or, unless
// vmm runs as root, one of a user other than vmm's or root.
func checkOwned(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return nil
	case !trustedUID(sys.Uid):
		return fmt.Errorf("%s is owned by uid %d: %w", filepath.Base(f.Name()), sys.Uid, ErrUnsafe)
	case sys.Mode&0o002 != 0:
		return fmt.Errorf("%s has mode %o: %w", filepath.Base(f.Name()), sys.Mode&0o7777, ErrUnsafe)
	}
	return nil
}

// trustedUID is the user running vmm, or root, who can change anything
// anyway; vmm run as root trusts every owner, as root running a program
// of a user's does (sudo vmm run -snapshot ~/snap, a CI cache unpacked
// as root with its files' owners kept).
func trustedUID(uid uint32) bool { return trusts(os.Geteuid(), uid) }

// trusts is trustedUID for vmm running as euid.
func trusts(euid int, uid uint32) bool { return euid == 0 || uid == 0 || int64(uid) == int64(euid) }

// checkTrailer reads the memory file's trailer and compares it with the
// manifest's hash of the RAM.
func checkTrailer(f io.ReaderAt, m Memory) error {
	got := make([]byte, PageSize)
	if _, err := f.ReadAt(got, int64(m.Size)); err != nil {
		return err
	}
	sum, err := hex.DecodeString(m.Hash)
	if err != nil || len(sum) != sumSize {
		return fmt.Errorf("%w: manifest's memory hash %q", ErrCorrupt, m.Hash)
	}
	if !bytes.Equal(got[:len(memoryMagic)], memoryMagic[:]) {
		return fmt.Errorf("%w: memory file has no trailer", ErrCorrupt)
	}
	if !bytes.Equal(got, trailer(sum)) {
		return errOtherSave
	}
	return nil
}

// Verify reads the whole memory file and checks it against the
// manifest's full hash: what Open leaves out to stay fast.
func (s *Snapshot) Verify() error {
	h := newHash()
	if _, err := io.Copy(h, io.NewSectionReader(s.Memory, 0, int64(s.Manifest.Memory.Size))); err != nil {
		return fmt.Errorf("snapshot memory: %w", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != s.Manifest.Memory.Hash {
		return fmt.Errorf("%w: memory file does not match its hash", ErrCorrupt)
	}
	return nil
}

// Close closes the memory file.
func (s *Snapshot) Close() error { return s.Memory.Close() }

// HashFile identifies an input file for the manifest. Only a regular
// file has an end to hash to.
func HashFile(path string) (FileID, error) {
	f, err := inputfile.Open(path, inputfile.Regular)
	if err != nil {
		return FileID{}, err
	}
	defer f.Close()
	h := newHash()
	n, err := io.Copy(h, f)
	if err != nil {
		return FileID{}, fmt.Errorf("%s: %w", path, err)
	}
	return FileID{Path: path, Hash: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}
