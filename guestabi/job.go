package guestabi

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// Paths inside the guest.
const (
	// SpecPath is where the job description appears; its presence is
	// what tells the guest init to run a job instead of a shell.
	SpecPath = "/vmm/job.json"
	// ShareDir is where -share's files appear.
	ShareDir = "/share"
	// OutDir is the directory whose contents come back with -out.
	OutDir = "/out"
	// OutSerial is the virtio-blk serial (GET_ID) of the scratch disk
	// the guest writes its tar stream to; the guest finds the disk by
	// it in /sys/block/vd*/serial rather than by position.
	OutSerial = "vmm-out"
	// JobTTY is the serial port (COM2) that carries the job's stdin
	// unless Spec.StdinPort sends that to JobInputPort, and its stdout
	// unless Spec.StdoutPort sends that to JobOutputPort; the console
	// (ttyS0) keeps the kernel's messages and the job's stderr. vmm holds the job's input until the guest has made
	// the tty raw and raised OUT1 on it (ioctl TIOCMBIS TIOCM_OUT1), so
	// no input meets the cooked line discipline a tty is opened with.
	JobTTY = "/dev/ttyS1"
)

// Spec is the job, as JSON in SpecPath (the field names below): a
// contract any init can follow, so it stays JSON though vmm no longer
// links encoding/json (see EncodeSpec). The guest's init reads it with
// package guest/internal/jobspec.
type Spec struct {
	// Args is the command and its arguments; Args[0] is looked up in
	// PATH if it has no slash.
	Args []string `json:"args"`
	// Env is added to the environment (KEY=VALUE).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; empty means ShareDir when files are
	// shared, else /.
	Dir string `json:"dir,omitempty"`
	// Out says whether the guest copies OutDir back.
	Out bool `json:"out,omitempty"`
	// Mounts are virtio-fs shares the guest mounts before the job runs
	// (`vmm run -share`, which is mounted at ShareDir).
	Mounts []Mount `json:"mounts,omitempty"`
	// RootTag, when set, names a virtio-fs share the job runs in as its
	// root file system (`vmm run -rootfs`): read-only, under a tmpfs
	// overlay that takes the job's writes, with fresh /proc, /sys, /dev
	// and /tmp. Mounts and OutDir appear inside it at their paths.
	RootTag string `json:"root_tag,omitempty"`
	// StdoutPort asks for the job's stdout on the virtio-console port
	// named JobOutputPort instead of JobTTY: a pipe the init copies to
	// the port, pages at a time, where the UART costs an exit per byte.
	// vmm sets it when its own stdout is not a terminal (a CI log, a
	// pipe, a file), so that a job at a terminal still has one. An init
	// that finds no such port uses JobTTY.
	StdoutPort bool `json:"stdout_port,omitempty"`
	// StderrPipe asks for the job's stderr as a pipe the init copies to
	// the console byte for byte, where the console itself is a terminal
	// (isatty true, each \n written as \r\n, colour from compilers
	// that check). vmm sets it when its own stderr is not a terminal, as
	// docker gives a job without -t pipes, so a log or `2>file` gets
	// exactly what the job wrote; at a terminal the job keeps the
	// console.
	StderrPipe bool `json:"stderr_pipe,omitempty"`
	// StdinPort asks for the job's stdin from the virtio-console port
	// named JobInputPort instead of JobTTY: the init opens the port,
	// which tells vmm to send the input there, and relays it to a pipe
	// that ends where vmm's stdin ends (the port's host side closing).
	// A job's input through the UART costs two exits per byte, so a
	// megabyte took many minutes nested. vmm sets it when its own stdin
	// is a pipe, a socket or a file and the VM has the port: a booted
	// one where it fits among the virtio devices, a restored one whose
	// snapshot's init found it (snapshot.Manifest.JobInputPort). A
	// booted job's init that finds no such port raises OUT1 on JobTTY,
	// and the input comes there; a restored job's does not run (its
	// input was never sent to JobTTY).
	StdinPort bool `json:"stdin_port,omitempty"`
}

// JobOutputPort is the name of the virtio-console port (package
// virtio/console) that `vmm run` gives a job's stdout: the guest finds
// it in /sys/class/virtio-ports/*/name.
const JobOutputPort = "vmm.job-stdout"

// JobInputPort is the name of the virtio-console port that carries a
// job's stdin when Spec.StdinPort asks for it.
const JobInputPort = "vmm.job-stdin"

// Tags of the virtio-fs shares `vmm run` attaches: -share's, mounted at
// ShareDir, and -rootfs's, the job's root.
const (
	JobShareTag = "vmm-share"
	JobRootTag  = "vmm-root"
)

// Mount is one virtio-fs share as the guest mounts it:
// `mount -t virtiofs Tag Path`.
type Mount struct {
	Tag      string `json:"tag"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"ro,omitempty"`
}

// MaxTagLen is the longest virtio-fs tag: the config space's tag field is
// 36 bytes, NUL-padded, with no terminator needed when full (virtio v1.2
// §5.11.4).
const MaxTagLen = 36

// ValidTag reports what is wrong with a virtio-fs tag, or nil.
func ValidTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen || strings.ContainsAny(tag, "\x00,") {
		return fmt.Errorf("virtio-fs tag %q: want 1 to %d bytes, without NUL or comma", tag, MaxTagLen)
	}
	return nil
}

// Validate rejects what the guest could not run, and what the spec
// cannot carry: it is JSON text, so a string that is not UTF-8 (a file
// name in another encoding, say) would reach the guest with its bad
// bytes turned into U+FFFD, naming another file; it is refused instead.
func (s Spec) Validate() error {
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fmt.Errorf("no command to run")
	}
	for i, a := range s.Args {
		if !utf8.ValidString(a) {
			return fmt.Errorf("argument %d %q is not valid UTF-8, which the job's description (JSON) cannot carry", i, a)
		}
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", e)
		}
		if !utf8.ValidString(e) {
			return fmt.Errorf("environment entry %q is not valid UTF-8, which the job's description (JSON) cannot carry", e)
		}
	}
	if !utf8.ValidString(s.Dir) {
		return fmt.Errorf("working directory %q is not valid UTF-8, which the job's description (JSON) cannot carry", s.Dir)
	}
	for _, m := range s.Mounts {
		if err := ValidTag(m.Tag); err != nil {
			return err
		}
		if !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" || !utf8.ValidString(m.Path) {
			return fmt.Errorf("mount point %q: want a clean absolute UTF-8 path other than /", m.Path)
		}
	}
	if s.RootTag != "" {
		if err := ValidTag(s.RootTag); err != nil {
			return err
		}
	}
	return nil
}

// EncodeSpec returns s as the JSON object jobspec.Parse reads, written by
// hand: vmm encodes nothing else as JSON, and encoding/json would be
// 0.3 MB of every vmm's resident code (package internal/pack). Strings
// are escaped as encoding/json escapes them, invalid UTF-8 included
// (each bad byte becomes U+FFFD, as it always did). The caller has
// validated s (runjob.Layer does), and the guest's init validates it
// again (jobspec.Parse).
func EncodeSpec(s Spec) []byte {
	b := []byte(`{"args":`)
	b = appendJSONStrings(b, s.Args)
	if len(s.Env) > 0 {
		b = appendJSONStrings(append(b, `,"env":`...), s.Env)
	}
	if s.Dir != "" {
		b = appendJSONString(append(b, `,"dir":`...), s.Dir)
	}
	if s.Out {
		b = append(b, `,"out":true`...)
	}
	if len(s.Mounts) > 0 {
		b = append(b, `,"mounts":[`...)
		for i, m := range s.Mounts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(append(b, `{"tag":`...), m.Tag)
			b = appendJSONString(append(b, `,"path":`...), m.Path)
			if m.ReadOnly {
				b = append(b, `,"ro":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if s.RootTag != "" {
		b = appendJSONString(append(b, `,"root_tag":`...), s.RootTag)
	}
	if s.StdoutPort {
		b = append(b, `,"stdout_port":true`...)
	}
	if s.StderrPipe {
		b = append(b, `,"stderr_pipe":true`...)
	}
	if s.StdinPort {
		b = append(b, `,"stdin_port":true`...)
	}
	return append(b, '}')
}

// appendJSONStrings appends a JSON array of ss.
func appendJSONStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string (RFC 8259 §7) the way
// encoding/json writes one: quote, backslash and control characters
// escaped, each byte of invalid UTF-8 replaced by \ufffd. (It also
// escapes <, >, & and U+2028/9 for HTML's sake; JSON does not need it.)
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return append(b, '"')
}
