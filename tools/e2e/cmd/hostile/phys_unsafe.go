//go:build linux && amd64

package main

import "unsafe"

// addrOf is the virtual address of b's first byte, to look its page up
// in /proc/self/pagemap. b is mmap'd memory, which the Go runtime never
// moves.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
