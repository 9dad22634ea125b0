// Package kvm is a thin, typed mirror of the Linux /dev/kvm ABI for x86-64.
//
// Every Go type here stands for one kernel struct from
// include/uapi/linux/kvm.h or arch/x86/include/uapi/asm/kvm.h and has the
// same size and field offsets (checked by tests that need no /dev/kvm).
// Ioctl numbers are derived with the kernel's own _IOC encoding from the
// struct sizes, so a wrong mirror shows up as a wrong number in the tests.
//
// The package knows nothing about machines, devices or guests: it opens file
// descriptors, issues ioctls, retries them on EINTR (the Go runtime
// preempts threads with signals) and wraps every error with the ioctl's name.
// All unsafe pointer passing lives in files named *_unsafe.go.
package kvm
