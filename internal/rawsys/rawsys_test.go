package rawsys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFileCalls runs each call on a file in a temporary directory and
// checks what it did with the os package, and that a failure is the
// bare unix.Errno the share compares with ==.
func TestFileCalls(t *testing.T) {
	for _, c := range []Calls{Raw(), {}} {
		t.Run(fmt.Sprintf("raw=%v", c.IsRaw()), func(t *testing.T) { testFileCalls(t, c) })
	}
}

func testFileCalls(t *testing.T, c Calls) {
	dir := t.TempDir()
	dfd, err := c.Openat(unix.AT_FDCWD, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("Openat dir: %v", err)
	}
	defer c.Close(dfd)

	fd, err := c.Openat(dfd, "f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o640)
	if err != nil {
		t.Fatalf("Openat create: %v", err)
	}
	if _, err := c.Openat(dfd, "f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o640); err != unix.EEXIST {
		t.Errorf("Openat existing with O_EXCL: %v, want EEXIST", err)
	}
	if _, err := c.Openat(dfd, "a\x00b", unix.O_RDONLY, 0); err == nil {
		t.Error("Openat of a name with NUL: no error")
	}

	// Two buffers, one empty in between (skipped, as the kernel would
	// skip it), at an offset past 4 GiB to check the offset's halves.
	const off = 5 << 30
	n, err := c.Pwritev(fd, [][]byte{[]byte("hello, "), nil, []byte("world")}, off)
	if err != nil || n != 12 {
		t.Fatalf("Pwritev: %d, %v", n, err)
	}
	var st unix.Stat_t
	if err := c.Fstat(fd, &st); err != nil {
		t.Fatalf("Fstat: %v", err)
	}
	if st.Size != off+12 || st.Mode&0o777 != 0o640&^uint32(umask()) {
		t.Errorf("Fstat: size %d mode %o", st.Size, st.Mode&0o777)
	}
	a, b := make([]byte, 5), make([]byte, 7)
	if n, err := c.Preadv(fd, [][]byte{a, b}, off+7); err != nil || n != 5 || string(a) != "world" {
		t.Errorf("Preadv: %d %v %q", n, err, a)
	}
	if err := c.Fstat(-1, &st); err != unix.EBADF {
		t.Errorf("c.Fstat(-1): %v, want EBADF", err)
	}
	var fst, want unix.Statfs_t
	if err := unix.Statfs(dir, &want); err != nil {
		t.Fatal(err)
	}
	if err := c.Fstatfs(fd, &fst); err != nil || fst.Type != want.Type || fst.Fsid != want.Fsid {
		t.Errorf("Fstatfs: type %#x fsid %v, %v; want %#x %v", fst.Type, fst.Fsid, err, want.Type, want.Fsid)
	}
	if err := c.Fstatfs(-1, &fst); err != unix.EBADF {
		t.Errorf("c.Fstatfs(-1): %v, want EBADF", err)
	}

	if err := c.Fchownat(fd, "", os.Getuid(), os.Getgid(), unix.AT_EMPTY_PATH); err != nil {
		t.Errorf("Fchownat to own IDs: %v", err)
	}
	if err := c.Close(fd); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(fd); err != unix.EBADF {
		t.Errorf("second Close: %v, want EBADF", err)
	}
	if err := c.Unlinkat(dfd, "f", 0); err != nil {
		t.Fatalf("Unlinkat: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "f")); !os.IsNotExist(err) {
		t.Errorf("after Unlinkat: %v", err)
	}
	if err := c.Unlinkat(dfd, "f", 0); err != unix.ENOENT {
		t.Errorf("Unlinkat again: %v, want ENOENT", err)
	}
}

func umask() int {
	m := unix.Umask(0)
	unix.Umask(m)
	return m
}

// TestVectorLimits checks Preadv and Pwritev past what they do raw: more
// than MaxIO bytes, or more than maxIovecs buffers, go through unix's
// wrappers and still move every byte.
func TestVectorLimits(t *testing.T) {
	c := Raw()
	f, err := os.Create(filepath.Join(t.TempDir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	split := func(b []byte, size int) [][]byte {
		var iov [][]byte
		for len(b) > 0 {
			k := min(size, len(b))
			iov = append(iov, b[:k])
			b = b[k:]
		}
		return iov
	}
	for _, tc := range []struct {
		name  string
		total int
		piece int
	}{
		{"one buffer", 4096, 4096},
		{"raw limit", MaxIO, 4096},
		{"past MaxIO", MaxIO + 1, 4096},
		{"past maxIovecs", maxIovecs + 1, 1},
		{"1 MiB in pages", 1 << 20, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := pattern(tc.total)
			if n, err := c.Pwritev(fd, split(want, tc.piece), 100); err != nil || n != tc.total {
				t.Fatalf("Pwritev: %d, %v", n, err)
			}
			got := make([]byte, tc.total)
			if n, err := c.Preadv(fd, split(got, tc.piece), 100); err != nil || n != tc.total {
				t.Fatalf("Preadv: %d, %v", n, err)
			}
			if !bytes.Equal(got, want) {
				t.Error("read back differs")
			}
		})
	}
}

// TestReadWrite checks Read and Write on an eventfd, as the devices use
// them: a non-blocking read of an empty one is EAGAIN, a write adds to
// the counter and a read returns and clears it.
func TestReadWrite(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var buf [8]byte
	if _, err := Read(fd, buf[:]); err != unix.EAGAIN {
		t.Fatalf("Read of an empty eventfd: %v, want EAGAIN", err)
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	for range 3 {
		if n, err := Write(fd, one); err != nil || n != 8 {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if n, err := Read(fd, buf[:]); err != nil || n != 8 || buf[0] != 3 {
		t.Fatalf("Read: %d, %v, %v", n, err, buf)
	}
	if _, err := Write(fd, one[:4]); err != unix.EINVAL {
		t.Errorf("Write of 4 bytes: %v, want EINVAL", err)
	}
	if n, err := Read(fd, nil); err != unix.EINVAL || n != 0 {
		t.Errorf("Read into nothing: %d, %v, want EINVAL", n, err)
	}
}

// TestNoAllocs: the calls the devices make per request allocate nothing
// (the ones taking a name allocate its NUL-terminated copy, as unix's do).
func TestNoAllocs(t *testing.T) {
	c := Raw()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, 4096)
	iov := [][]byte{buf[:2048], buf[2048:]}
	var st unix.Stat_t
	allocs := testing.AllocsPerRun(100, func() {
		c.Pwritev(fd, iov, 0)
		c.Preadv(fd, iov, 0)
		c.Fstat(fd, &st)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request", allocs)
	}
}
