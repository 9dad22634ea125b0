//go:build cgo

package sandbox

// With cgo on, the test binary links the C runtime as a vmm built with
// cgo does (package net pulls it in), so threads are started by glibc's
// pthread_create, and the child tests check that those are allowed too.
import _ "runtime/cgo"
