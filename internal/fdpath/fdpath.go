// Package fdpath names an open file by its descriptor's entry in /proc
// (/proc/self/fd/N). That path is the one way, without privilege, to
// open again or link into a directory a file that has no name of its
// own: an unlinked temporary file or an O_TMPFILE one. vmm makes such
// files so that nothing is left behind however it ends (a SIGKILL, the
// sandbox's end of a refused call), and hands them to code that opens by
// path (the machine's disks: vmm run's -out scratch disk) or names them
// at the last moment (the kernel cache's entries).
package fdpath

import (
	"fmt"
	"os"
	"strings"
)

// prefix starts every path Of returns.
const prefix = "/proc/self/fd/"

// Of returns f's path in /proc and whether /proc shows f there: it may
// not be mounted, or show another file system than the one f lives in.
func Of(f *os.File) (string, bool) {
	p := fmt.Sprintf("%s%d", prefix, f.Fd())
	st, err1 := f.Stat()
	via, err2 := os.Stat(p)
	return p, err1 == nil && err2 == nil && os.SameFile(st, via)
}

// Is reports whether path is one that Of returns, which names a file
// only as long as its descriptor stays open.
func Is(path string) bool { return strings.HasPrefix(path, prefix) }
