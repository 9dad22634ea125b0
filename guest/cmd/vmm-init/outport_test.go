package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFindPort(t *testing.T) {
	dir := t.TempDir()
	for dev, name := range map[string]string{
		"vport0p0": "org.qemu.guest_agent.0\n",
		"vport1p0": "vmm.job-stdout\n",
		"vport2p0": "vmm.job-stdout-not\n",
	} {
		os.MkdirAll(filepath.Join(dir, dev), 0o755)
		os.WriteFile(filepath.Join(dir, dev, "name"), []byte(name), 0o644)
	}
	os.MkdirAll(filepath.Join(dir, "vport3p0"), 0o755) // no name yet
	for _, tc := range []struct {
		dir, name, want string
		ok              bool
	}{
		{dir, "vmm.job-stdout", "vport1p0", true},
		{dir, "org.qemu.guest_agent.0", "vport0p0", true},
		{dir, "vmm.job", "", false},
		{dir, "", "", false},
		{filepath.Join(dir, "missing"), "vmm.job-stdout", "", false},
	} {
		got, ok := findPort(tc.dir, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("findPort(%q) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHasVirtioConsole(t *testing.T) {
	for _, tc := range []struct {
		ids  []string // a "+" suffix: a driver is bound
		want int
	}{
		{[]string{"0x0001\n+", "0x0002\n+"}, 0},
		{[]string{"0x0001\n+", "0x0003\n+"}, 1},
		{[]string{"0x0001\n+", "0x0003\n"}, 0},
		{[]string{"0x0003\n+", "0x0001\n+", "0x0003\n+"}, 2},
		{nil, 0},
	} {
		dir, drivers := t.TempDir(), t.TempDir()
		for i, id := range tc.ids {
			d := filepath.Join(dir, "virtio"+string(rune('0'+i)))
			os.MkdirAll(d, 0o755)
			id, bound := strings.CutSuffix(id, "+")
			os.WriteFile(filepath.Join(d, "device"), []byte(id), 0o644)
			if bound {
				os.Symlink(drivers, filepath.Join(d, "driver"))
			}
		}
		if got := virtioConsoles(dir); got != tc.want {
			t.Errorf("%q: %d consoles, want %d", tc.ids, got, tc.want)
		}
		if got := hasVirtioConsole(dir); got != (tc.want > 0) {
			t.Errorf("%q: hasVirtioConsole %v", tc.ids, got)
		}
	}
	if hasVirtioConsole(filepath.Join(t.TempDir(), "none")) {
		t.Error("a missing sysfs directory has a console")
	}
}

// syncBuffer is a port that records what it is given, each write taking
// delay (a host reader slower than the guest).
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	err   error
	delay time.Duration
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	return s.b.Write(p)
}

func (s *syncBuffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// portStdout's finish returns with everything the job wrote copied: at
// end of file, or, when something the job left running holds the pipe
// and keeps writing to it (a daemon logging every 10 ms), once the job's
// own bytes are through. Before the bound (2026-12-06) such a daemon kept
// finish, and so the VM, waiting for good.
func TestPortStdout(t *testing.T) {
	for _, orphan := range []bool{false, true} {
		port := &syncBuffer{}
		w, finish, err := portStdout(port, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The job, as a copy of the descriptor that the job's exit
		// closes.
		job, err := dupFile(w)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("output line\n"), 20000) // more than a pipe holds
		wrote := make(chan struct{})
		stopDaemon := make(chan struct{})
		go func() {
			job.Write(want)
			close(wrote)
			if !orphan {
				job.Close()
				return
			}
			defer job.Close()
			for {
				select {
				case <-stopDaemon:
					return
				case <-time.After(10 * time.Millisecond):
					job.Write([]byte("daemon\n"))
				}
			}
		}()
		// The job ends once its writes are in the pipe.
		<-wrote
		ended := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			finish()
			ended <- time.Since(start)
		}()
		select {
		case took := <-ended:
			if took > 2*time.Second {
				t.Errorf("orphan %v: finish took %v", orphan, took)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("orphan %v: finish did not return", orphan)
		}
		close(stopDaemon)
		got := port.bytes()
		if !bytes.HasPrefix(got, want) {
			t.Errorf("orphan %v: copied %d bytes, not the job's %d first", orphan, len(got), len(want))
		}
		if !orphan && len(got) != len(want) {
			t.Errorf("copied %d bytes, want %d", len(got), len(want))
		}
	}
}

// A pipe whose reader cannot say what it holds (no FIONREAD: not a
// syscall.Conn) still ends, the job's bytes all copied though the pipe
// still held some when the job ended and a slow host took each write,
// and the pipe stays open: the copy stops at its first read that waits.
func TestCopyEndsWithoutFIONREAD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close() // an orphan's, held past the job's end
	port := &syncBuffer{delay: 2 * finishPoll}
	c := &outCopy{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.run(port, nil, deadlineOnly{r}); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	want := bytes.Repeat([]byte("the job's output\n"), 3000) // 51,000 bytes: fits the pipe
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { c.end(deadlineOnly{r}, done); close(ended) }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the copy did not end")
	}
	if got := port.bytes(); !bytes.Equal(got, want) {
		t.Errorf("copied %d bytes, want %d", len(got), len(want))
	}
}

// A wake-up from finish that lands as bytes arrive fails one read, not
// the copy: the job ended with bytes in the pipe and a deadline already
// passed, and all of them are copied.
func TestCopyLateWakeUp(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	want := bytes.Repeat([]byte("x"), 50000)
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	c := &outCopy{}
	c.jobEnded()
	r.SetReadDeadline(time.Now())
	port := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- c.run(port, nil, r) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the copy did not end")
	}
	if got := port.bytes(); !bytes.Equal(got, want) {
		t.Errorf("copied %d bytes, want %d", len(got), len(want))
	}
}

// deadlineOnly is a pipe's read end without its descriptor.
type deadlineOnly struct{ f *os.File }

func (d deadlineOnly) Read(p []byte) (int, error)        { return d.f.Read(p) }
func (d deadlineOnly) SetReadDeadline(t time.Time) error { return d.f.SetReadDeadline(t) }

// A port that fails is reported, and the job's output is still drained,
// so that the job never blocks on a full pipe.
func TestCopyOutPortFails(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	port := &syncBuffer{err: errors.New("ENODEV")}
	done := make(chan error, 1)
	go func() { done <- (&outCopy{}).run(port, nil, r) }()
	if _, err := w.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a failing port was not reported")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("copy stopped draining the pipe")
	}
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "job's stdout"), nil
}

// A host reader slower than the job, with the job already ended and the
// pipe full: finish waits for all of it, however long each write to the
// port takes (many times finishPoll here), with or without something
// the job left running holding the pipe.
func TestPortStdoutSlowReader(t *testing.T) {
	for _, orphan := range []bool{false, true} {
		port := &syncBuffer{delay: 10 * finishPoll}
		w, finish, err := portStdout(port, nil)
		if err != nil {
			t.Fatal(err)
		}
		job, err := dupFile(w)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("0123456789abcdef"), 4096*3) // 192 KiB: the pipe's 64 KiB and more
		wrote := make(chan struct{})
		go func() {
			job.Write(want)
			if !orphan {
				job.Close()
			}
			close(wrote)
		}()
		// The job ends as soon as its last write is in the pipe.
		<-wrote
		finish()
		if got := port.bytes(); !bytes.Equal(got, want) {
			t.Errorf("orphan %v: copied %d bytes of %d", orphan, len(got), len(want))
		}
		if orphan {
			job.Close()
		}
	}
}

// A port that fails mid-output (its device reset or unbound under the
// job) hands the rest, the failed write included, to the serial port.
func TestPortFailsOverToSerial(t *testing.T) {
	port := &failAfter{n: 3}
	tty := &syncBuffer{}
	w, finish, err := portStdout(port, tty)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range 10 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		// One read, so one write, per line: the port takes three
		// lines and fails the fourth, whatever the scheduling.
		for deadline := time.Now().Add(5 * time.Second); len(port.ok.bytes())+len(tty.bytes()) < want.Len(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("line %d did not come out", i)
			}
		}
	}
	finish()
	got := append(port.ok.bytes(), tty.bytes()...)
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("port then serial: %q, want %q", got, want.Bytes())
	}
	if len(tty.bytes()) == 0 {
		t.Error("nothing went to the serial port")
	}
}

// failAfter takes n writes, then fails every one.
type failAfter struct {
	n  int
	ok syncBuffer
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("no such device")
	}
	f.n--
	return f.ok.Write(p)
}
