package blk

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// QEMU permission masks (include/block/block-common.h).
const (
	qRead      = 1 << permConsistentRead
	qWrite     = 1 << permWrite
	qUnchanged = 1 << permWriteUnchanged
	qResize    = 1 << permResize
	qAll       = qRead | qWrite | qUnchanged | qResize
)

// qemuUser is how a QEMU program uses an image: the permissions it takes
// and those it lets others have.
type qemuUser struct {
	name          string
	perm, shared  uint64
	openReadWrite bool
}

// qemuOpen opens path as QEMU would for u, emulating its locking
// (block/file-posix.c) with fcntl directly: a shared OFD lock on byte
// 100+p for each permission p it takes and on byte 200+p for each it
// does not share, then a test that no other description holds 200+p for
// a permission it takes nor 100+p for one it does not share.
func qemuOpen(t *testing.T, path string, u qemuUser) (*os.File, error) {
	t.Helper()
	flag := os.O_RDONLY
	if u.openReadWrite {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := f.Fd()
	lock := func(off int64) error {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: off, Len: 1}
		return unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
	}
	free := func(off int64) error {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: off, Len: 1}
		if err := unix.FcntlFlock(fd, unix.F_OFD_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != unix.F_UNLCK {
			return errors.New("held")
		}
		return nil
	}
	for p := int64(0); p < 4; p++ {
		if u.perm&(1<<p) != 0 {
			err = errors.Join(err, lock(100+p))
		}
		if u.shared&(1<<p) == 0 {
			err = errors.Join(err, lock(200+p))
		}
	}
	for p := int64(0); p < 4 && err == nil; p++ {
		if u.perm&(1<<p) != 0 {
			err = free(200 + p)
		}
		if u.shared&(1<<p) == 0 && err == nil {
			err = free(100 + p)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// opener is one of the two users of an image in TestLockAgainstQEMU:
// vmm (ro says read-only) or an emulated QEMU.
type opener struct {
	vmm  bool
	ro   bool
	qemu qemuUser
}

func (o opener) String() string {
	switch {
	case o.vmm && o.ro:
		return "vmm read-only"
	case o.vmm:
		return "vmm read-write"
	}
	return o.qemu.name
}

// open returns a closer for the image opened, or the error.
func (o opener) open(t *testing.T, path string) (func(), error) {
	if o.vmm {
		d, err := Open(Options{Path: path, ReadOnly: o.ro})
		if err != nil {
			return nil, err
		}
		return func() { d.Close() }, nil
	}
	f, err := qemuOpen(t, path, o.qemu)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// TestLockAgainstQEMU opens one image twice, in either order, by vmm and
// by emulated QEMU users, and checks which pairs may share it: those
// QEMU lets share it among its own. OFD locks belong to the open file
// description, so one process stands for two. Before vmm took QEMU's
// locks (it used flock), every pair with one vmm and one QEMU was let in.
func TestLockAgainstQEMU(t *testing.T) {
	// The QEMU users the tests stand in for, as QEMU 7.2 locks a raw
	// image (seen in /proc/locks). A virtio-blk device asks for
	// consistent reads, and writes unless readonly=on, and shares
	// consistent reads, unchanged writes and resizes (hw/block/block.c,
	// blkconf_apply_backend_options, resizable): bytes 100, 101 and 201,
	// or 100 and 201. qemu-io and qemu-img on a raw image share
	// everything (the raw format passes its user's permissions through):
	// bytes 100 and 101, or 100 with -r.
	qemuRW := qemuUser{"QEMU device", qRead | qWrite, qRead | qUnchanged | qResize, true}
	qemuRO := qemuUser{"QEMU device readonly=on", qRead, qRead | qUnchanged | qResize, false}
	qemuShareRW := qemuUser{"QEMU device share-rw=on", qRead | qWrite, qAll, true}
	qemuIO := qemuUser{"qemu-io", qRead | qWrite, qAll, true}
	qemuIORead := qemuUser{"qemu-io -r", qRead, qAll, false}
	vmmRW := opener{vmm: true}
	vmmRO := opener{vmm: true, ro: true}
	q := func(u qemuUser) opener { return opener{qemu: u} }
	for _, tt := range []struct {
		first, second opener
		ok            bool
	}{
		// vmm and vmm.
		{vmmRW, vmmRW, false},
		{vmmRO, vmmRO, true},
		{vmmRW, vmmRO, false},
		{vmmRO, vmmRW, false},
		// vmm and QEMU, both orders.
		{vmmRW, q(qemuRW), false},
		{q(qemuRW), vmmRW, false},
		{vmmRO, q(qemuRW), false},
		{q(qemuRW), vmmRO, false},
		{vmmRW, q(qemuRO), false},
		{q(qemuRO), vmmRW, false},
		{vmmRO, q(qemuRO), true},
		{q(qemuRO), vmmRO, true},
		{vmmRW, q(qemuShareRW), false},
		{q(qemuShareRW), vmmRW, false},
		{vmmRW, q(qemuIO), false},
		{q(qemuIO), vmmRW, false},
		{vmmRO, q(qemuIO), false},
		{q(qemuIO), vmmRO, false},
		{vmmRW, q(qemuIORead), true}, // QEMU lets qemu-io -r read what its device writes
		{q(qemuIORead), vmmRW, true},
		{vmmRO, q(qemuIORead), true},
		{q(qemuIORead), vmmRO, true},
		// QEMU and QEMU: the emulation agrees with what QEMU does.
		{q(qemuRW), q(qemuRW), false},
		{q(qemuRO), q(qemuRO), true},
		{q(qemuRW), q(qemuRO), false},
		{q(qemuRW), q(qemuIO), false},
		{q(qemuRW), q(qemuIORead), true},
		{q(qemuShareRW), q(qemuShareRW), true},
	} {
		t.Run(tt.first.String()+" then "+tt.second.String(), func(t *testing.T) {
			path := tempDisk(t, "disk.img", 4096)
			close1, err := tt.first.open(t, path)
			if err != nil {
				t.Fatalf("first open: %v", err)
			}
			close2, err := tt.second.open(t, path)
			if close2 != nil {
				close2()
			}
			if tt.ok != (err == nil) {
				t.Errorf("second open: %v; want ok=%v", err, tt.ok)
			}
			if err != nil && tt.second.vmm {
				msg := err.Error()
				if !strings.Contains(msg, path) || !strings.Contains(msg, "another process") || strings.Contains(msg, "\n") {
					t.Errorf("error %q is not one line naming %s and another process", msg, path)
				}
			}
			close1()
			// Once the first is closed, the second gets in.
			close2, err = tt.second.open(t, path)
			if err != nil {
				t.Errorf("second open after the first closed: %v", err)
			} else {
				close2()
			}
		})
	}
}

// TestLockBytes checks the bytes vmm holds, as another description sees
// them: QEMU's "consistent read" and "write" permission bytes, and its
// "write" and "resize" not-shared bytes.
func TestLockBytes(t *testing.T) {
	for _, tt := range []struct {
		ro   bool
		held []int64
	}{
		{false, []int64{100, 101, 201, 203}},
		{true, []int64{100, 201, 203}},
	} {
		path := tempDisk(t, "disk.img", 4096)
		d, err := Open(Options{Path: path, ReadOnly: tt.ro})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var held []int64
		for off := int64(0); off < 300; off++ {
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: off, Len: 1}
			if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
				t.Fatal(err)
			}
			if lk.Type != unix.F_UNLCK {
				if lk.Type != unix.F_RDLCK {
					t.Errorf("byte %d: lock type %d, want a shared lock", off, lk.Type)
				}
				held = append(held, off)
			}
		}
		f.Close()
		d.Close()
		if !equalInts(held, tt.held) {
			t.Errorf("read-only %v: bytes %v held, want %v", tt.ro, held, tt.held)
		}
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
