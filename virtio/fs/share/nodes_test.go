package share

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmm-dev/vmm/internal/rawsys"
)

// A descriptor closed while a request uses it stays open until that
// request is done, and is closed then; once closed, do refuses.
func TestFDFile(t *testing.T) {
	open := func() int {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	isOpen := func(fd int) bool { _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); return err != unix.EBADF }

	f := newFDFile(open(), rawsys.Raw())
	fd := f.r.fd
	err := f.do(func(got int) error {
		if got != fd {
			t.Errorf("do gave fd %d, want %d", got, fd)
		}
		f.close() // a RELEASE racing the request
		f.close() // and a second one: harmless
		if !isOpen(got) {
			t.Error("closed under a running request")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if isOpen(fd) {
		t.Error("still open after the last request ended")
	}
	if err := f.do(func(int) error { t.Error("ran after close"); return nil }); err != unix.EBADF {
		t.Errorf("do after close: %v, want EBADF", err)
	}

	g := newFDFile(open(), rawsys.Raw())
	fd = g.r.fd
	g.close()
	if isOpen(fd) {
		t.Error("an idle descriptor was not closed at once")
	}
}
