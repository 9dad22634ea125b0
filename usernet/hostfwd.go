package usernet

import "github.com/vmm-dev/vmm/usernet/hostfwd"

// Forward is one host port forwarded into the guest: QEMU's hostfwd (see
// package hostfwd, which vmm checks command lines with).
type Forward = hostfwd.Forward

// ParseForward reads QEMU's hostfwd value (hostfwd.Parse).
func ParseForward(s string) (Forward, error) { return hostfwd.Parse(s) }
