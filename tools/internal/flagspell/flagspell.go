// Package flagspell lets vmm's helper commands take long flags with one
// dash (-flavor cloud, -runs 3), as Go's flag package, QEMU and the
// Makefile spell them, on top of pflag's GNU spelling. (cmd/vmm has its
// own, richer rewrite: QEMU's flags there carry values that start with a
// dash, and `vmm run` stops at the job's command.)
package flagspell

import (
	"strings"

	"github.com/spf13/pflag"
)

// SingleDashLong doubles the dash of any argument that names a long flag
// of fs. Everything after "--" is left as is.
func SingleDashLong(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && fs.Lookup(name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}
