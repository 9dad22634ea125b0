//go:build cgo

package sandbox

// cgoBuild says this vmm may link glibc, whose thread start needs rules
// of its own (rules.go, withCgo).
const cgoBuild = true
