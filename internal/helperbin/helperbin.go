// Package helperbin finds vmm's helper programs: vmm-net, where -nic
// user's network runs, and vmm-unpack, which decompresses a kernel for
// the kernel cache. Each is a binary of its own so that vmm neither links
// nor maps code that most runs never use (Go runs every linked package's
// initializers at each start, and the kernel maps code around every page
// touched), and so that what it does with untrusted input happens in a
// process holding no guest memory and no KVM descriptor.
//
// `make vmm` builds them next to vmm, where Find looks first; an
// installed vmm may find them in $PATH instead.
package helperbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Find returns the path of the helper named name: next to the executable
// of this process, else in $PATH. purpose says what needs it, for the
// error ("-nic user runs in").
func Find(name, purpose string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		// Executable, as $PATH's lookup requires too: a file of that
		// name that is not (a copy that lost its mode) is passed over.
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s the %s helper, which is neither next to vmm nor in $PATH (make vmm builds it)", purpose, name)
}
