// Package fusetest is the client side of FUSE for tests of the virtio-fs
// device and its server: it encodes requests from go-fuse's wire types
// and decodes replies, as the guest's kernel would. It is its own
// package so the device's tests and the server's share one encoder
// without either exporting test helpers.
//
// go-fuse's request structs embed fuse.InHeader and have no implicit
// padding, so encoding/binary lays them out exactly as linux/fuse.h
// does; the server's tests check that against the kernel's sizes.
package fusetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Opcodes (enum fuse_opcode, linux/fuse.h); go-fuse does not export
// them.
const (
	OpLookup      = 1
	OpForget      = 2
	OpGetattr     = 3
	OpSetattr     = 4
	OpReadlink    = 5
	OpSymlink     = 6
	OpMknod       = 8
	OpMkdir       = 9
	OpUnlink      = 10
	OpRmdir       = 11
	OpRename      = 12
	OpLink        = 13
	OpOpen        = 14
	OpRead        = 15
	OpWrite       = 16
	OpStatfs      = 17
	OpRelease     = 18
	OpFsync       = 20
	OpSetxattr    = 21
	OpGetxattr    = 22
	OpFlush       = 25
	OpInit        = 26
	OpOpendir     = 27
	OpReaddir     = 28
	OpReleasedir  = 29
	OpFsyncdir    = 30
	OpGetlk       = 31
	OpAccess      = 34
	OpCreate      = 35
	OpInterrupt   = 36
	OpDestroy     = 38
	OpIoctl       = 39
	OpBatchForget = 42
	OpFallocate   = 43
	OpReaddirplus = 44
	OpRename2     = 45
	OpLseek       = 46
	OpCopyRange   = 47
	OpStatx       = 52
)

// Sizes of the headers (linux/fuse.h).
const (
	InHeaderSize  = 40 // struct fuse_in_header
	OutHeaderSize = 16 // struct fuse_out_header
)

// Encode builds a request: in's bytes (a go-fuse request struct such as
// fuse.OpenIn, which starts with its fuse.InHeader, or nil for requests
// that are a bare header) followed by the payloads, with the header's
// length, opcode, unique and node ID set. The rest of the header (the
// caller) is in's.
func Encode(opcode uint32, unique, node uint64, in any, payloads ...[]byte) []byte {
	var b bytes.Buffer
	if in == nil {
		in = fuse.InHeader{}
	}
	if err := binary.Write(&b, binary.LittleEndian, in); err != nil {
		panic(fmt.Sprintf("fusetest: encoding %T: %v", in, err)) // a bug in the test
	}
	for _, p := range payloads {
		b.Write(p)
	}
	r := b.Bytes()
	le := binary.LittleEndian
	le.PutUint32(r[0:], uint32(len(r)))
	le.PutUint32(r[4:], opcode)
	le.PutUint64(r[8:], unique)
	le.PutUint64(r[16:], node)
	return r
}

// RenameIn is struct fuse_rename_in, RENAME's argument: go-fuse's
// fuse.RenameIn is RENAME2's fuse_rename2_in, 8 bytes longer.
type RenameIn struct {
	fuse.InHeader
	Newdir uint64
}

// Name is a NUL-terminated name, as LOOKUP, CREATE and the like carry.
func Name(s string) []byte { return append([]byte(s), 0) }

// Init is an INIT request as Linux 6.x sends it on a virtio-fs mount
// (protocol 7.38 with the capabilities the kernel offers), for
// MaxReadAhead 128 KiB.
func Init(unique uint64) []byte {
	flags := uint64(fuse.CAP_ASYNC_READ | fuse.CAP_POSIX_LOCKS | fuse.CAP_ATOMIC_O_TRUNC |
		fuse.CAP_EXPORT_SUPPORT | fuse.CAP_BIG_WRITES | fuse.CAP_DONT_MASK | fuse.CAP_FLOCK_LOCKS |
		fuse.CAP_AUTO_INVAL_DATA | fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ASYNC_DIO |
		fuse.CAP_WRITEBACK_CACHE | fuse.CAP_NO_OPEN_SUPPORT | fuse.CAP_PARALLEL_DIROPS |
		fuse.CAP_HANDLE_KILLPRIV | fuse.CAP_POSIX_ACL | fuse.CAP_ABORT_ERROR | fuse.CAP_MAX_PAGES |
		fuse.CAP_CACHE_SYMLINKS | fuse.CAP_NO_OPENDIR_SUPPORT | fuse.CAP_EXPLICIT_INVAL_DATA |
		fuse.CAP_SETXATTR_EXT | fuse.CAP_INIT_EXT | fuse.CAP_SECURITY_CTX | fuse.CAP_CREATE_SUPP_GROUP |
		fuse.CAP_PASSTHROUGH)
	return Encode(OpInit, unique, 0, fuse.InitIn{
		Major:        7,
		Minor:        38,
		MaxReadAhead: 128 << 10,
		Flags:        uint32(flags),
		Flags2:       uint32(flags >> 32),
	})
}

// ErrReply is wrapped by Parse for a reply that is malformed.
var ErrReply = errors.New("fusetest: malformed reply")

// Parse splits a reply into its header and body, checking that the
// header's length is the reply's.
func Parse(reply []byte) (fuse.OutHeader, []byte, error) {
	var h fuse.OutHeader
	if len(reply) < OutHeaderSize {
		return h, nil, fmt.Errorf("%w: %d bytes", ErrReply, len(reply))
	}
	binary.Read(bytes.NewReader(reply), binary.LittleEndian, &h)
	if int(h.Length) != len(reply) {
		return h, nil, fmt.Errorf("%w: length field %d, %d bytes", ErrReply, h.Length, len(reply))
	}
	if h.Status > 0 {
		return h, nil, fmt.Errorf("%w: positive error %d", ErrReply, h.Status)
	}
	return h, reply[OutHeaderSize:], nil
}

// Decode reads a go-fuse reply struct (fuse.EntryOut, fuse.AttrOut, ...)
// from the start of body.
func Decode(body []byte, out any) error {
	if err := binary.Read(bytes.NewReader(body), binary.LittleEndian, out); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrReply, out, err)
	}
	return nil
}

// DecodeInit reads an INIT reply body (struct fuse_init_out, 64 bytes,
// or its first 24 bytes for protocol 7.22 and older). go-fuse's
// InitOut has an unexported field, which encoding/binary cannot fill.
func DecodeInit(body []byte) (fuse.InitOut, error) {
	var o fuse.InitOut
	if len(body) != 24 && len(body) != 64 {
		return o, fmt.Errorf("%w: INIT reply of %d bytes", ErrReply, len(body))
	}
	b := make([]byte, 64)
	copy(b, body)
	le := binary.LittleEndian
	o.Major = le.Uint32(b[0:])
	o.Minor = le.Uint32(b[4:])
	o.MaxReadAhead = le.Uint32(b[8:])
	o.Flags = le.Uint32(b[12:])
	o.MaxBackground = le.Uint16(b[16:])
	o.CongestionThreshold = le.Uint16(b[18:])
	o.MaxWrite = le.Uint32(b[20:])
	o.TimeGran = le.Uint32(b[24:])
	o.MaxPages = le.Uint16(b[28:])
	o.MapAlignment = le.Uint16(b[30:])
	o.Flags2 = le.Uint32(b[32:])
	o.MaxStackDepth = le.Uint32(b[36:])
	o.RequestTimeout = le.Uint16(b[40:])
	return o, nil
}

// DirEntryPlus is one READDIRPLUS record.
type DirEntryPlus struct {
	Entry fuse.EntryOut
	fuse.DirEntry
}

// direntSize is struct fuse_dirent up to its name (linux/fuse.h).
const direntSize = 24

// ParseDirPlus decodes a READDIRPLUS reply body (struct
// fuse_direntplus records, each padded to 8 bytes).
func ParseDirPlus(body []byte) ([]DirEntryPlus, error) {
	entrySize := binary.Size(fuse.EntryOut{})
	var out []DirEntryPlus
	for len(body) > 0 {
		if len(body) < entrySize+direntSize {
			return out, fmt.Errorf("%w: %d bytes left of a direntplus", ErrReply, len(body))
		}
		var e DirEntryPlus
		if err := Decode(body, &e.Entry); err != nil {
			return out, err
		}
		d := body[entrySize:]
		le := binary.LittleEndian
		e.Ino = le.Uint64(d[0:])
		e.Off = le.Uint64(d[8:])
		nameLen := int(le.Uint32(d[16:]))
		e.Mode = le.Uint32(d[20:]) << 12
		rec := entrySize + direntSize + nameLen
		if nameLen > len(d)-direntSize {
			return out, fmt.Errorf("%w: name of %d bytes overruns the reply", ErrReply, nameLen)
		}
		e.Name = string(d[direntSize : direntSize+nameLen])
		out = append(out, e)
		rec = (rec + 7) &^ 7
		body = body[min(rec, len(body)):]
	}
	return out, nil
}

// ParseDir decodes a READDIR reply body.
func ParseDir(body []byte) ([]fuse.DirEntry, error) {
	return fuse.ParseDirEntries(body)
}
