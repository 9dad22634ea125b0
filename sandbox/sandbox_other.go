//go:build !(linux && amd64)

package sandbox

import "errors"

// Options says what the process does after Install besides running its
// machine.
type Options struct {
	Scratch bool
	Files   bool
}

// Install fails: the allow-list and the SIGSYS handler are written for
// Linux on x86-64, the only platform vmm runs on.
func Install(Options) error {
	return errors.New("sandbox: only on linux/amd64; run with -sandbox=off")
}
